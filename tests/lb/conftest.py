"""Fixtures for LB tests on real loopback sockets: a loop thread, backends, LB processes.

An LB process costs a quarter of a second to start (most of it importing aiohttp), so tests
that only need a running LB with their table share one (`shared_lb`); a test that stops or
signals its LB, reads counters or metrics, or spends the admin API's failure budget starts
its own (`lb_process`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lb.table import RoutingTable
from tests.lb.support import Backend, LBProcess, LoopThread, wait_until


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


LBKey = tuple[tuple[str, Any], ...]


@pytest.fixture(scope="session")
def _shared_lbs() -> Iterator[dict[LBKey, LBProcess]]:
    """The LB processes `shared_lb` hands out, one per set of start options."""
    pool: dict[LBKey, LBProcess] = {}
    yield pool
    for p in pool.values():
        p.stop()


@pytest.fixture
def shared_lb(_shared_lbs: dict[LBKey, LBProcess]) -> Iterator[Callable[..., LBProcess]]:
    """`lb_process`'s signature, but the process is shared by the tests that start an LB with
    the same options: the test's table is pushed over the admin API (the path an upgrade
    uses), and afterwards, once nothing is in flight, the table is emptied. An LB that died
    or cannot be reset is replaced; the failure shows in the test that left it so."""
    taken: list[tuple[LBKey, LBProcess]] = []

    def take(table: dict[str, Any], **kw: Any) -> LBProcess:
        key = tuple(sorted(kw.items()))
        p = _shared_lbs.get(key)
        if p is None or p.proc.poll() is not None:
            if p is not None:
                p.stop()
            p = _shared_lbs[key] = LBProcess({"frontends": []}, **kw)
        p.mark_output()
        taken.append((key, p))
        p.admin._call("PUT", "/v1/routes", table)  # the dict as given, as the env passes it
        return p

    yield take
    for key, p in taken:
        try:
            _reset(p)
        except BaseException:
            _shared_lbs.pop(key, None)
            p.stop()
            raise


def _reset(p: LBProcess) -> None:
    """Once the test's requests are over, the shared LB serves nothing again."""
    wait_until(lambda: p.admin.status()["in_flight"] == 0, timeout=10,
               what="the test's requests to end before the shared LB is reset")
    p.admin.set_routes(RoutingTable())
