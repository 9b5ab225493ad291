"""The durable upgrade state on the fake swarm: lock, compare-and-swap, heartbeat, takeover.

Two dans processes are two `StateStore`s with different owners (`this_owner` patched per
call), sharing one fake engine, as two managers share the swarm's Raft store.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from tests.fakegateway import FakeGateway
from tests.upgrade.stacks import BASE, doc, managed, running
from upgrade_manager import state as state_module
from upgrade_manager.errors import UpgradeLocked
from upgrade_manager.model import Plan
from upgrade_manager.plan import make_plan
from upgrade_manager.state import PREFIX, STALE_AFTER, StateStore, UpgradeState, state_name

HOST = socket.gethostname()
Owner = Callable[[str], AbstractContextManager[None]]


@pytest.fixture
def plan() -> Plan:
    before = managed(BASE)
    return make_plan(running(before), managed(doc(api={"image": "app/api:2"})),
                     generation="g1", old_table=before.routing_table().to_dict())


@pytest.fixture
def gw() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def as_owner(monkeypatch: pytest.MonkeyPatch) -> Owner:
    """`with as_owner("host:pid"):` runs the store calls inside as that dans process."""

    @contextmanager
    def owner(who: str) -> Iterator[None]:
        with monkeypatch.context() as m:
            m.setattr(state_module, "this_owner", lambda: who)
            yield

    return owner


def labels(gw: FakeGateway) -> dict[str, str]:
    return dict(gw.inspect_config(state_name("st"))["Spec"]["Labels"])


def set_heartbeat(gw: FakeGateway, value: float) -> None:
    """What a process that stopped beating long ago left behind."""
    raw = gw.inspect_config(state_name("st"))
    spec = raw["Spec"]
    spec["Labels"][PREFIX + "heartbeat"] = f"{value:.3f}"
    gw.update_config_labels(state_name("st"), spec, version=int(raw["Version"]["Index"]))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_create_records_the_plan_and_is_the_lock(gw: FakeGateway, plan: Plan) -> None:
    store = StateStore(gw, "st")
    created = store.create(plan)
    try:
        assert (created.done, created.status, created.plan) == (0, "running", plan)
        assert labels(gw)[PREFIX + "owner"] == state_module.this_owner()
        with pytest.raises(UpgradeLocked, match="already has an upgrade recorded"):
            StateStore(gw, "st").create(plan)
        store.update(done=3, message="three")
        loaded = StateStore(gw, "st").load()
        assert loaded is not None
        assert (loaded.done, loaded.message, loaded.plan) == (3, "three", plan)
        assert loaded.version > created.version
    finally:
        store.finish()
    assert StateStore(gw, "st").load() is None
    assert state_name("st") not in [c["Spec"]["Name"] for c in gw.configs()]


@pytest.mark.parametrize(
    ("owner", "age", "stale"),
    [(f"{HOST}:{1}", 0.0, False),  # pid 1 is alive on every Linux host
     ("elsewhere:42", 0.0, False),
     ("elsewhere:42", STALE_AFTER - 2, False),
     ("elsewhere:42", STALE_AFTER + 2, True),
     ("DEAD", 0.0, True),
     ("elsewhere:notapid", STALE_AFTER + 2, True)],
    ids=["live-local-pid", "other-host-beating", "other-host-almost-stale",
         "other-host-silent", "dead-local-pid", "odd-owner-silent"],
)
def test_when_an_owner_is_presumed_dead(plan: Plan, owner: str, age: float,
                                        stale: bool) -> None:
    who = f"{HOST}:{dead_pid()}" if owner == "DEAD" else owner
    state = UpgradeState(plan, 0, "running", who, time.time() - age)
    assert state.stale is stale


@pytest.mark.parametrize(
    ("owner", "silent", "taken"),
    [("elsewhere:42", False, False), ("elsewhere:42", True, True), ("DEAD", False, True)],
    ids=["live-owner-refused", "silent-owner-taken-over", "dead-local-process-taken-over"],
)
def test_take_over_only_from_a_dead_owner(gw: FakeGateway, plan: Plan, as_owner: Owner,
                                          owner: str, silent: bool, taken: bool) -> None:
    who = f"{HOST}:{dead_pid()}" if owner == "DEAD" else owner
    first = StateStore(gw, "st")
    with as_owner(who):
        first.create(plan)
        first.update(done=4)
    first.release()  # the first process is gone (or just slow): it beats no more
    if silent:
        set_heartbeat(gw, time.time() - STALE_AFTER - 1)
    second = StateStore(gw, "st")
    existing = second.load()
    assert existing is not None
    with as_owner("me:1"):
        if not taken:
            with pytest.raises(UpgradeLocked, match=r"another dans \(elsewhere:42\) is "
                                                    "upgrading stack st right now"):
                second.take_over(existing)
            assert labels(gw)[PREFIX + "owner"] == who
            return
        got = second.take_over(existing)
        second.release()
    assert (got.owner, got.done) == ("me:1", 4)
    assert labels(gw)[PREFIX + "owner"] == "me:1"


def test_the_old_owner_loses_the_compare_and_swap(gw: FakeGateway, plan: Plan,
                                                  as_owner: Owner) -> None:
    old, new = StateStore(gw, "st"), StateStore(gw, "st")
    with as_owner("old:1"):
        old.create(plan)
        old.update(done=2)
    old.abandon()  # heartbeat 0: presumed dead at once
    existing = new.load()
    assert existing is not None and existing.stale
    with as_owner("new:2"):
        new.take_over(existing)
        new.update(done=5)
    with as_owner("old:1"), pytest.raises(UpgradeLocked, match="another dans took over"):
        old.update(done=3)  # written at the version it read: stale now
    assert old.lost is not None
    with pytest.raises(UpgradeLocked):
        old.update(done=3)  # and it stays lost without asking the engine again
    stored = new.load()
    assert stored is not None and (stored.done, stored.owner) == (5, "new:2")
    new.release()


def test_the_heartbeat_beats_until_released_and_stops_when_lost(
        gw: FakeGateway, plan: Plan, monkeypatch: pytest.MonkeyPatch, as_owner: Owner) -> None:
    monkeypatch.setattr(state_module, "HEARTBEAT_EVERY", 0.01)
    store = StateStore(gw, "st")
    with as_owner("beater:1"):
        store.create(plan)
    first = float(labels(gw)[PREFIX + "heartbeat"])
    deadline = time.monotonic() + 10
    while float(labels(gw)[PREFIX + "heartbeat"]) == first:
        assert time.monotonic() < deadline, "no heartbeat within 10 s"
        time.sleep(0.02)
    assert labels(gw)[PREFIX + "owner"] == "beater:1"
    # Someone takes over (the beater looked dead to them): its next beat loses the CAS.
    other = StateStore(gw, "st")
    existing = other.load()
    assert existing is not None
    with as_owner("beater:1"):
        other.take_over(existing)  # same owner string: allowed without staleness
    deadline = time.monotonic() + 10
    while store.lost is None:
        assert time.monotonic() < deadline, "the old heartbeat never noticed the takeover"
        time.sleep(0.02)
    assert store._beat is not None
    store._beat.join(timeout=5)
    assert not store._beat.is_alive()
    other.release()
    writes = len([c for c in gw.calls if c == "update_config_labels"])
    time.sleep(0.1)
    assert len([c for c in gw.calls if c == "update_config_labels"]) == writes
