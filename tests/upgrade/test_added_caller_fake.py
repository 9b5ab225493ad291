"""A service the new file adds, and that may call a changed one, joins the new chain.

It has no old version to keep: a copy of it serves in the new chain, and its canonical
service is created at converge, once the old chain has stopped (created earlier, it could
call the old version of the service it may call). Run through the facade on the fake swarm,
as tests/upgrade/test_resume_rollback_fake.py does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakegateway import Killed
from tests.fakelb import FakeLB
from tests.upgrade.fakestack import deployed, images, snapshot
from tests.upgrade.stacks import doc
from tests.upgrade.test_resume_rollback_fake import Swarm, dead_owner
from upgrade_manager import state as state_module
from upgrade_manager.errors import UpgradeError

# api v2 calls a cache that the file adds; the cache declares nothing, so it may call api.
ADDED = doc(front={"environment": {"API_URL": "http://api:8000/v2"}},
            api={"image": "app/api:2", "environment": {
                "DB": "postgresql://u:p@store:5432/x", "CACHE": "cache:6379"}},
            cache={"image": "app/cache:1"})


@pytest.fixture
def swarm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Swarm]:
    monkeypatch.setattr(state_module, "HEARTBEAT_EVERY", 3600.0)
    yield Swarm(monkeypatch, new=ADDED)


def fresh_deploy() -> dict[str, Any]:
    gw = deployed(ADDED, stop_delay=0)
    return snapshot(gw, FakeLB(gw, "st"))


def test_the_added_caller_is_created_once_the_old_chain_has_stopped(
        swarm: Swarm, monkeypatch: pytest.MonkeyPatch) -> None:
    created: dict[str, list[str]] = {}
    real = type(swarm.gw).create_service

    def create_service(self: Any, spec: dict[str, Any]) -> Any:
        created[spec["Name"]] = images(swarm.gw)["api"]
        return real(self, spec)

    monkeypatch.setattr(type(swarm.gw), "create_service", create_service)
    swarm.as_process("only:1")
    swarm.upgrade()
    assert created["st_cache"] == [], "no old api task runs when the canonical cache starts"
    assert any(n.startswith("st_cache-dans-") for n in created), "a copy served the new chain"
    assert snapshot(swarm.gw, swarm.lb) == fresh_deploy()
    assert images(swarm.gw)["cache"] == ["app/cache:1"]
    assert swarm.lb.violations == []


def test_killed_in_converge_then_rolled_back_leaves_no_cache(swarm: Swarm) -> None:
    def kill_at_converge(_event: str, _message: str) -> None:
        if swarm.events[-1] == ("start", "converge:canonical"):
            raise Killed()

    swarm.as_process(dead_owner())
    with pytest.raises(Killed):
        swarm.upgrade(kill_at_converge)
    swarm.as_process("rollbacker:2")
    swarm.rollback()
    assert snapshot(swarm.gw, swarm.lb) == swarm.v1
    assert "cache" not in images(swarm.gw)


def test_killed_in_converge_then_resumed_ends_as_a_fresh_deploy(swarm: Swarm) -> None:
    writes = iter(range(1, 10_000))
    seen: list[str] = []

    def kill(name: str, mutating: bool) -> None:
        seen.append(name)
        # The second service creation after the old chain stopped: mid-converge.
        if mutating and name == "create_service" and "update_service" in seen \
                and next(writes) == 1:
            swarm.gw.hooks.remove(kill)
            raise Killed("killed in converge")

    swarm.gw.hooks.append(kill)
    swarm.as_process(dead_owner())
    with pytest.raises(Killed):
        swarm.upgrade()
    swarm.as_process("resumer:2")
    swarm.upgrade()
    assert snapshot(swarm.gw, swarm.lb) == fresh_deploy()
    with pytest.raises(UpgradeError, match="no unfinished upgrade"):
        swarm.rollback()
