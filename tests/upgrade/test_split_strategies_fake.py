"""The paper's baselines, `isolated` (split-half) and `delayed` (delayed switch), on the fake
swarm: real plans for 1, 2 and 4 instances end where a fresh deploy of the new file starts,
never run an extra instance, keep the old half serving while there is one (and say when
there is none), and resume or roll back from a kill before any step, like `dans`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fakegateway import FakeGateway, Killed
from tests.fakelb import FakeLB
from tests.upgrade.fakestack import STACK, deployed, images, options, plan_of, snapshot
from tests.upgrade.stacks import doc
from tests.upgrade.test_executor_fake import run
from tests.upgrade.test_resume_rollback_fake import dead_owner
from upgrade_manager import state as state_module
from upgrade_manager import upgrade
from upgrade_manager.errors import UpgradeError
from upgrade_manager.executor import NO_RETURN_STEP
from upgrade_manager.plan import Step
from upgrade_manager.split import halves
from upgrade_manager.state import StateStore

STRATEGIES = ("isolated", "delayed")
SIZES = (1, 2, 4)


def stack(n: int, version: int) -> dict[str, Any]:
    """front -> api -> store with n instances of front and api, at v1 or v2 (both change)."""
    scale = {"replicas": n, "endpoint_mode": "dnsrr"}
    if version == 1:
        return doc(front={"deploy": scale}, api={"deploy": scale})
    return doc(front={"deploy": scale, "environment": {"API_URL": "http://api:8000/v2"}},
               api={"deploy": scale, "image": "app/api:2"})


def expected_keys(strategy: str, n: int) -> list[str]:
    """api first (front calls it), then front, the entry service the LB switches."""
    def start(short: str) -> list[str]:
        if strategy == "isolated":
            return [f"scale_services:{short}-old-half", f"create_services:{short}-new-half"]
        return [f"create_services:{short}-new-half",
                *(f"scale_services:{short}-instance-{i}" for i in range(1, halves(n)[1] + 1))]
    return [*start("api"), "update_services:api-rest", "remove_services:api-temporary",
            *start("front"), "route:front-lb", "drain:front-lb", "update_services:front-rest",
            "route:front-lb-back", "drain:front-lb-back", "route:front-lb-final",
            "remove_services:front-temporary"]


def running_instances(gw: FakeGateway, short: str) -> int:
    """Running tasks of a service and of its temporary half together."""
    return sum(1 for svc in gw.services(STACK)
               if svc["Spec"]["Name"].startswith(f"{STACK}_{short}")
               for t in gw.tasks(svc["Spec"]["Name"], desired_running=True)
               if t["Status"]["State"] == "running")


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n}-instances")
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_split_plan_ends_where_a_fresh_deploy_starts(strategy: str, n: int) -> None:
    gw = deployed(stack(n, 1))
    lb = FakeLB(gw, STACK, watch=True)
    store = {t["ID"] for t in gw.tasks(f"{STACK}_store", desired_running=True)}
    plan = plan_of(gw, lb, stack(n, 2), strategy=strategy)
    assert [s.key for s in plan.steps] == expected_keys(strategy, n)
    assert plan.extra_replicas == 2 * halves(n)[1] and plan.chain == ()
    most = {"front": 0, "api": 0}

    def count(_name: str, _mutating: bool) -> None:
        for short in most:
            most[short] = max(most[short], running_instances(gw, short))

    gw.hooks.append(count)
    swapping = {}
    for step in plan.steps:
        for short in most:
            if step.key == f"update_services:{short}-rest":
                swapping[short] = most[short]
        run(gw, lb, [step])
    assert swapping == {"front": n, "api": n}  # no extra instance while the halves swap

    fresh = deployed(stack(n, 2))
    assert snapshot(gw, lb) == snapshot(fresh, FakeLB(fresh, STACK))
    assert images(gw)["api"] == ["app/api:2"] * n
    assert {t["ID"] for t in gw.tasks(f"{STACK}_store", desired_running=True)} == store
    # The new halves serve until the canonical services have taken the rest back.
    assert most == {"front": n + halves(n)[1], "api": n + halves(n)[1]}
    actives = [fe.active for t in lb.sent for fe in t.frontends]
    assert actives == ["split-g1", "main", "main"]
    if n == 1:
        # No half is left to serve: the LB's only backend has no task until the switch.
        assert lb.violations and all("st_front" in v for v in lb.violations)
    else:
        assert lb.violations == []


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n}-instances")
def test_the_delayed_switch_moves_one_instance_per_step(n: int) -> None:
    gw = deployed(stack(n, 1))
    plan = plan_of(gw, FakeLB(gw, STACK), stack(n, 2), strategy="delayed")
    old, new = halves(n)
    for short in ("api", "front"):
        moves = [s.args["replicas"] for s in plan.steps
                 if s.target.startswith(f"{short}-instance-")]
        assert [m[f"{STACK}_{short}"] for m in moves] == list(range(n - 1, old - 1, -1))
        assert [m[f"{STACK}_{short}-dans-g1"] for m in moves] == list(range(1, new + 1))
        rest = next(s for s in plan.steps if s.key == f"update_services:{short}-rest")
        assert rest.args["via"]["Parallelism"] == 1


def test_the_isolated_update_halves_each_service_then_updates_its_rest_at_once() -> None:
    gw = deployed(stack(4, 1))
    plan = plan_of(gw, FakeLB(gw, STACK), stack(4, 2), strategy="isolated")
    by = {s.key: s for s in plan.steps}
    assert by["scale_services:api-old-half"].args["replicas"] == {"st_api": 2}
    assert by["scale_services:front-old-half"].args["replicas"] == {"st_front": 2}
    half = by["create_services:front-new-half"].args["services"]["st_front-dans-g1"]
    assert half["Mode"] == {"Replicated": {"Replicas": 2}}
    # Called by name like the canonical service: both halves answer `api` (the weakness).
    api_half = by["create_services:api-new-half"].args["services"]["st_api-dans-g1"]
    assert any("api" in (net.get("Aliases") or []) for net in api_half["TaskTemplate"]["Networks"])
    assert by["update_services:front-rest"].args["via"]["Parallelism"] == 0


class Split:
    """A deployed v1 stack on the fake engine, upgraded through the facade as the CLI does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, strategy: str, n: int) -> None:
        self.gw = deployed(stack(n, 1), stop_delay=0)
        self.lb = FakeLB(self.gw, STACK)
        self.v1 = snapshot(self.gw, self.lb)
        fresh = deployed(stack(n, 2))
        self.v2 = snapshot(fresh, FakeLB(fresh, STACK))
        self.opts = options(stack(n, 2), strategy=strategy)
        self.steps = expected_keys(strategy, n)
        self.monkeypatch = monkeypatch
        self.failed: list[str] = []
        monkeypatch.setattr(upgrade, "lb_admin", lambda _gw, _stack, _url=None: self.lb)

    def as_process(self, owner: str) -> None:
        self.monkeypatch.setattr(state_module, "this_owner", lambda: owner)

    def report(self, before: Callable[[str, str], None] | None) -> upgrade.Reporter:
        def report(event: str, step: Step | None, _s: float, message: str) -> None:
            if event == "failed" and step:
                self.failed.append(step.key)
            if before:
                before(event, message)
        return report

    def upgrade(self, before: Callable[[str, str], None] | None = None) -> None:
        upgrade.run_upgrade(self.gw, self.opts, self.report(before))

    def rollback(self) -> None:
        upgrade.rollback(self.gw, self.opts, self.report(None))

    def kill_before(self, i: int) -> Callable[[str, str], None]:
        def before(event: str, message: str) -> None:
            if event == "start" and message == f"{i + 1}/{len(self.steps)}":
                raise Killed(f"killed before step {i + 1}")
        return before

    def recorded(self) -> int | None:
        state = StateStore(self.gw, STACK).load()
        return None if state is None else state.done


CASES = [(s, n, i) for s in STRATEGIES for n in SIZES for i in range(len(expected_keys(s, n)))]


def _ids(case: tuple[str, int, int]) -> str:
    strategy, n, i = case
    return f"{strategy}-{n}-before-{expected_keys(strategy, n)[i]}"


def _killed_before(monkeypatch: pytest.MonkeyPatch, case: tuple[str, int, int]) -> Split:
    """An upgrade of `case` whose process was killed before step `case[2]`."""
    strategy, n, i = case
    monkeypatch.setattr(state_module, "HEARTBEAT_EVERY", 3600.0)
    s = Split(monkeypatch, strategy, n)
    s.as_process(dead_owner())
    with pytest.raises(Killed):
        s.upgrade(s.kill_before(i))
    return s


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_killed_before_any_step_then_resumed(monkeypatch: pytest.MonkeyPatch,
                                             case: tuple[str, int, int]) -> None:
    s = _killed_before(monkeypatch, case)
    assert s.recorded() == case[2]
    s.as_process("resumer:2")
    s.upgrade()
    assert snapshot(s.gw, s.lb) == s.v2 and s.recorded() is None


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_killed_before_any_step_then_rolled_back(monkeypatch: pytest.MonkeyPatch,
                                                 case: tuple[str, int, int]) -> None:
    s = _killed_before(monkeypatch, case)
    s.as_process("rollbacker:2")
    # No point of no return: a split plan's canonical services can always take their
    # previous specs again (the old version was never routed away for good).
    assert NO_RETURN_STEP not in s.steps
    s.rollback()
    assert snapshot(s.gw, s.lb) == s.v1 and s.recorded() is None
    assert images(s.gw)["api"] == ["app/api:1"] * case[1]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_new_half_that_never_becomes_healthy_rolls_back(monkeypatch: pytest.MonkeyPatch,
                                                         strategy: str) -> None:
    monkeypatch.setattr(state_module, "HEARTBEAT_EVERY", 3600.0)
    s = Split(monkeypatch, strategy, 2)
    s.gw.behaviour["app/api:2"] = "failing"
    s.as_process("only:1")
    with pytest.raises(UpgradeError, match="upgrade failed and was rolled back"):
        s.upgrade()
    assert s.failed == [expected_keys(strategy, 2)[1]]
    s.gw.behaviour.clear()
    assert snapshot(s.gw, s.lb) == s.v1 and s.recorded() is None
