"""Kill `dans upgrade` anywhere, then resume or roll back: the stack ends consistent.

Runs the facade (`run_upgrade`, `rollback`) as the CLI does, on the fake swarm with the LB's
admin client replaced by `FakeLB` (the one seam `lb_admin` builds). A killed process is a
`Killed` exception (like SIGKILL, nothing in dans catches it) raised from the fake engine at
its n-th write, for every n of an uninterrupted run, or from the progress report before
step i, for every i; the resumer or roll-backer is another process (another owner), and the
killed one is a dead pid on this host, so it is taken over at once (DESIGN.md §4.6).
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakegateway import FakeGateway, Killed
from tests.fakelb import FakeLB
from tests.upgrade.fakestack import STACK, deployed, images, options, snapshot
from tests.upgrade.stacks import BASE, doc
from upgrade_manager import state as state_module
from upgrade_manager import upgrade
from upgrade_manager.errors import UpgradeError
from upgrade_manager.executor import NO_RETURN_STEP
from upgrade_manager.model import Step
from upgrade_manager.state import StateStore, state_name

NEW = doc(front={"environment": {"API_URL": "http://api:8000/v2"}}, api={"image": "app/api:2"})


def generic(key: str) -> str:
    """A step key without the plan's generation (made from the clock when it is planned)."""
    return re.sub(r"dans-gen-\d+", "dans-gen-G", key)


def dead_owner() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}"


class Swarm:
    """A deployed v1 stack on the fake engine, its LB, and how to run dans against it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, new: dict[str, Any] = NEW) -> None:
        # The facade's executor uses the wall clock: tasks stop at once so nothing waits.
        self.new = new
        self.gw: FakeGateway = deployed(BASE, stop_delay=0)
        self.lb = FakeLB(self.gw, STACK, watch=True)
        self.v1 = snapshot(self.gw, self.lb)
        self.monkeypatch = monkeypatch
        monkeypatch.setattr(upgrade, "lb_admin", lambda _gw, _stack, _url=None: self.lb)
        self.events: list[tuple[str, str]] = []

    def as_process(self, owner: str) -> None:
        self.monkeypatch.setattr(state_module, "this_owner", lambda: owner)

    def report(self, before: Callable[[str, str], None] | None = None
               ) -> upgrade.Reporter:
        def report(event: str, step: Step | None, _s: float, message: str) -> None:
            self.events.append((event, generic(step.key) if step else ""))
            if before:
                before(event, message)
        return report

    def upgrade(self, before: Callable[[str, str], None] | None = None) -> None:
        upgrade.run_upgrade(self.gw, options(self.new), self.report(before))

    def rollback(self) -> None:
        upgrade.rollback(self.gw, options(self.new), self.report())

    def kill_at_write(self, n: int) -> None:
        writes = iter(range(1, 10_000))

        def kill(_name: str, mutating: bool) -> None:
            if mutating and next(writes) == n:
                self.gw.hooks.remove(kill)
                raise Killed(f"killed at write {n}")

        self.gw.hooks.append(kill)

    def recorded(self) -> int | None:
        state = StateStore(self.gw, STACK).load()
        return None if state is None else state.done


@pytest.fixture
def swarm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Swarm]:
    # A killed run's heartbeat thread must not beat on (a dead process does not).
    monkeypatch.setattr(state_module, "HEARTBEAT_EVERY", 3600.0)
    yield Swarm(monkeypatch)


def _uninterrupted() -> tuple[dict[str, Any], int, list[str]]:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(state_module, "HEARTBEAT_EVERY", 3600.0)
        s = Swarm(m)
        writes: list[str] = []
        s.gw.hooks.append(lambda name, mutating: writes.append(name) if mutating else None)
        s.upgrade()
        keys = [key for event, key in s.events if event == "done"]
        return snapshot(s.gw, s.lb), len(writes), keys


V2, WRITES, STEPS = _uninterrupted()
NO_RETURN = STEPS.index(NO_RETURN_STEP)


def assert_v2(s: Swarm) -> None:
    assert snapshot(s.gw, s.lb) == V2
    assert images(s.gw)["api"] == ["app/api:2"] * 2
    assert s.recorded() is None and s.lb.violations == []


def assert_v1(s: Swarm) -> None:
    assert snapshot(s.gw, s.lb) == s.v1
    assert images(s.gw)["api"] == ["app/api:1"] * 2
    assert s.recorded() is None and s.lb.violations == []


def test_the_uninterrupted_run_is_the_reference() -> None:
    assert len(STEPS) == 12 and WRITES > len(STEPS)
    assert V2["services"]["st_api"]["tasks"] == [("app/api:2", "running")] * 2
    assert sorted(V2["services"]) == ["st_api", "st_dans-lb", "st_front", "st_store"]
    assert V2["routes"]["frontends"][0]["groups"] == {
        "main": {"backends": ["tasks.st_front:80"], "state": "active"}}


@pytest.mark.parametrize("n", range(1, WRITES + 1), ids=lambda n: f"write-{n}")
def test_killed_at_any_engine_write_then_resumed(swarm: Swarm, n: int) -> None:
    swarm.as_process(dead_owner())
    swarm.kill_at_write(n)
    with pytest.raises(Killed):
        swarm.upgrade()
    swarm.as_process("resumer:2")
    swarm.upgrade()
    assert_v2(swarm)


def kill_before(i: int, exc: BaseException) -> Callable[[str, str], None]:
    """Raise `exc` when step `i` (0-based) is about to start: i steps are recorded."""
    def before(event: str, message: str) -> None:
        if event == "start" and message == f"{i + 1}/{len(STEPS)}":
            raise exc
    return before


@pytest.mark.parametrize("i", range(len(STEPS)), ids=lambda i: f"before-{STEPS[i]}")
def test_interrupted_before_any_step_then_resumed(swarm: Swarm, i: int) -> None:
    swarm.as_process("first:1")
    with pytest.raises(UpgradeError, match="interrupted; the upgrade is unfinished"):
        swarm.upgrade(kill_before(i, KeyboardInterrupt()))
    assert swarm.recorded() == i
    swarm.as_process("resumer:2")  # the interrupted process said it is gone: no wait
    swarm.upgrade()
    assert_v2(swarm)
    resumed = [key for event, key in swarm.events[swarm.events.index(("info", "")):]
               if event == "done"]
    assert resumed[-(len(STEPS) - i):] == STEPS[i:]


@pytest.mark.parametrize("i", range(len(STEPS)), ids=lambda i: f"after-{i}-steps")
def test_killed_after_any_step_then_rolled_back(swarm: Swarm, i: int) -> None:
    swarm.as_process(dead_owner())
    with pytest.raises(Killed):
        swarm.upgrade(kill_before(i, Killed()))
    assert swarm.recorded() == i
    swarm.as_process("rollbacker:2")
    if i > NO_RETURN:
        with pytest.raises(UpgradeError, match="point of no return"):
            swarm.rollback()
        state = StateStore(swarm.gw, STACK).load()
        assert state is not None and (state.done, state.status) == (i, "running")
        swarm.upgrade()  # what the refusal says to do
        assert_v2(swarm)
        return
    swarm.rollback()
    assert_v1(swarm)
    assert not [n for n in swarm.gw.network_names().values() if "dans-gen" in n]


@pytest.mark.parametrize(
    ("image", "behaviour", "when"),
    [("app/api:2", "starting", None), ("app/api:2", "failing", None),
     ("dans-lb:test", "starting", None), ("app/api:2", "failing", "converge:canonical")],
    ids=["new-api-never-healthy", "new-api-crash-loops", "relay-never-healthy",
         "canonical-api-fails-in-converge"],
)
def test_a_step_that_never_becomes_healthy_rolls_the_upgrade_back(
        swarm: Swarm, image: str, behaviour: str, when: str | None) -> None:
    def before(event: str, message: str) -> None:
        if when and event == "start" and message == f"{STEPS.index(when) + 1}/{len(STEPS)}":
            swarm.gw.behaviour[image] = behaviour  # the copies run; the converge fails
    if when is None:
        swarm.gw.behaviour[image] = behaviour
    swarm.as_process("only:1")
    with pytest.raises(UpgradeError, match="upgrade failed and was rolled back"):
        swarm.upgrade(before)
    failed = [key for event, key in swarm.events if event == "failed"]
    assert failed == [when or ("create_services:relays" if image == "dans-lb:test"
                               else "create_services:level-0")]
    swarm.gw.behaviour.clear()  # what is running now must be v1 and stay so
    assert_v1(swarm)
    assert state_name(STACK) not in [c["Spec"]["Name"] for c in swarm.gw.configs()]


def test_a_second_upgrade_is_refused_while_the_first_owner_lives(swarm: Swarm) -> None:
    swarm.as_process("elsewhere:7")  # another host: its liveness is its heartbeat
    with pytest.raises(Killed):
        swarm.upgrade(kill_before(3, Killed()))
    swarm.as_process("second:2")
    with pytest.raises(UpgradeError, match=r"another dans \(elsewhere:7\) is upgrading"):
        swarm.upgrade()
    with pytest.raises(UpgradeError, match="right now"):
        swarm.rollback()
    assert swarm.recorded() == 3


@pytest.mark.parametrize("key", ["drain:lb", "converge:canonical", "remove_services:temporary"])
def test_a_resume_gives_an_lb_that_restarted_on_its_spec_table_the_table_in_force(
        swarm: Swarm, key: str) -> None:
    swarm.as_process(dead_owner())
    with pytest.raises(Killed):
        swarm.upgrade(kill_before(STEPS.index(key), Killed()))
    swarm.lb.table = swarm.lb._start_up_table()  # restarted with no peer to ask
    sent = len(swarm.lb.sent)
    swarm.as_process("resumer:2")
    swarm.upgrade()
    assert_v2(swarm)  # no violation: the canonical services never lost traffic they served
    assert len(swarm.lb.sent) > sent  # the table in force went out again first
    if key != "remove_services:temporary":  # there, the final table is the spec's
        assert swarm.lb.sent[sent].to_dict() != swarm.lb._start_up_table().to_dict()
