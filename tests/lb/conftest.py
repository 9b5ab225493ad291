"""Fixtures for LB tests on real loopback sockets: a loop thread, backends, LB processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.lb.support import Backend, LBProcess, LoopThread


@pytest.fixture(scope="module")
def loops() -> Iterator[LoopThread]:
    """One event loop thread for the module's backends and load loops."""
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def backend(loops: LoopThread) -> Iterator[Callable[[str], Backend]]:
    """Start named backends; all are stopped after the test."""
    started: list[Backend] = []

    def start(name: str) -> Backend:
        b = Backend(loops, name)
        started.append(b)
        return b

    yield start
    for b in started:
        b.release()
        b.stop()


@pytest.fixture
def lb_process() -> Iterator[Callable[..., LBProcess]]:
    """Start LB processes from a table; all are stopped after the test."""
    started: list[LBProcess] = []

    def start(table: dict[str, Any], **kw: Any) -> LBProcess:
        p = LBProcess(table, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
