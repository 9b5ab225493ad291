"""The executor runs real plans on the fake swarm and ends where a fresh deploy would.

Each case deploys a small Compose document with `dans deploy`, plans the upgrade to another
with `make_plan`, runs every step with `Executor`, and checks DESIGN.md §4: the end state is
exactly a fresh `dans deploy` of the new file (services, specs, tasks, networks, configs,
the LB's table), no temporary object is left, services outside the upgrade set keep their
tasks, and (for the DANS strategy) the LB never routed new requests to a service without a
running task.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fakegateway import FakeGateway
from tests.fakelb import FakeLB
from tests.upgrade.fakestack import STACK, deployed, images, plan_of, replicas, snapshot
from tests.upgrade.stacks import BASE, doc
from upgrade_manager.errors import Conflict, UpgradeError
from upgrade_manager.executor import Executor, Timeouts
from upgrade_manager.model import Plan, Step

V2_API = {"image": "app/api:2"}
V2_FRONT = {"environment": {"API_URL": "http://api:8000/v2"}}
TIMEOUTS = Timeouts(healthy=60, drain=30, remove=30)
CHAIN_KEYS = ["create_network:st_dans-gen-g1", "create_services:relays",
              "create_services:level-0", "create_services:level-1", "route:lb", "drain:lb",
              "converge:canonical", "route:lb-back", "drain:lb-back", "route:lb-final",
              "remove_services:temporary", "remove_network:st_dans-gen-g1"]


def with_config(content: str) -> dict[str, Any]:
    out = doc(api={"configs": [{"source": "app", "target": "/etc/app.conf"}]})
    out["configs"] = {"app": {"content": content}}
    return out


@dataclass(frozen=True)
class Case:
    new: dict[str, Any]
    keys: list[str]  # the plan's steps
    images: dict[str, list[str]]  # running tasks' images at the end, by short name
    old: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(BASE))
    strategy: str = "dans"
    prune: bool = False
    untouched: tuple[str, ...] = ("store",)  # services whose tasks must never change


API2, API1 = ["app/api:2"] * 2, ["app/api:1"] * 2
FRONT1, STORE1, LB = ["app/front:1"] * 2, ["app/store:1"], ["dans-lb:test"]
CASES = {
    "chain-front-and-api": Case(
        doc(front=V2_FRONT, api=V2_API), CHAIN_KEYS,
        {"front": FRONT1, "api": API2, "store": STORE1, "dans-lb": LB}),
    "chain-api-front-companion": Case(
        doc(api=V2_API), CHAIN_KEYS,
        {"front": FRONT1, "api": API2, "store": STORE1, "dans-lb": LB}),
    "compatible-rolls-in-place": Case(
        doc(api={**V2_API, "x-dans": {"compatible": True}}), ["update_service:st_api"],
        {"front": FRONT1, "api": API2, "store": STORE1, "dans-lb": LB},
        untouched=("store", "front")),
    "stateful-stop-first": Case(
        doc(store={"image": "app/store:2"}), ["update_service:st_store"],
        {"front": FRONT1, "api": API1, "store": ["app/store:2"], "dans-lb": LB},
        untouched=("front", "api")),
    "scale-only": Case(
        doc(api={"deploy": {"replicas": 3, "endpoint_mode": "dnsrr"}}), ["update_service:st_api"],
        {"front": FRONT1, "api": ["app/api:1"] * 3, "store": STORE1, "dans-lb": LB},
        untouched=("store", "front", "api")),
    "added-service": Case(
        doc(api={**V2_API, "environment": {"DB": "postgresql://u:p@store:5432/x",
                                           "CACHE": "cache:6379"}},
            cache={"image": "app/cache:1", "deploy": {"endpoint_mode": "dnsrr"},
                   "x-dans": {"calls": []}}),
        ["create_service:st_cache", *CHAIN_KEYS],
        {"front": FRONT1, "api": API2, "store": STORE1, "cache": ["app/cache:1"],
         "dans-lb": LB}),
    "config-content-changes": Case(
        with_config("level=2"), ["create_config:CONFIG", *CHAIN_KEYS,
                                 "remove_unused:configs-secrets"],
        {"front": FRONT1, "api": API1, "store": STORE1, "dans-lb": LB},
        old=with_config("level=1")),
    "prune-removed-service": Case(
        doc(front={"environment": {"API_URL": "http://other:1/"}}, api=None,
            other={"image": "app/other:1", "deploy": {"endpoint_mode": "dnsrr"},
                   "x-dans": {"calls": []}}),
        ["create_service:st_other", *CHAIN_KEYS[:2], "create_services:level-0",
         *CHAIN_KEYS[4:], "remove_service:st_api"],
        {"front": FRONT1, "other": ["app/other:1"], "store": STORE1, "dans-lb": LB},
        prune=True),
    "rolling-strategy": Case(
        doc(front=V2_FRONT, api=V2_API), ["update_services:stack"],
        {"front": FRONT1, "api": API2, "store": STORE1, "dans-lb": LB}, strategy="rolling"),
}


def task_ids(gw: FakeGateway, short: str) -> set[str]:
    return {t["ID"] for t in gw.tasks(f"{STACK}_{short}", desired_running=True)}


def executor(gw: FakeGateway, lb: FakeLB, events: list[str]) -> Executor:
    """An executor on the fake engine and clock, logging `event step-key message`."""
    return Executor(gw, lambda: lb, lambda ev, step, _s, msg: events.append(
        f"{ev} {step.key} {msg}".strip()), TIMEOUTS, clock=gw.clock)


def run(gw: FakeGateway, lb: FakeLB, steps: tuple[Step, ...] | list[Step]) -> list[str]:
    events: list[str] = []
    executor(gw, lb, events).run(steps, 0, lambda n: events.append(f"recorded {n}"))
    return events


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_real_plan_ends_where_a_fresh_deploy_of_the_new_file_starts(case: Case) -> None:
    gw = deployed(case.old)
    lb = FakeLB(gw, STACK, watch=case.strategy == "dans")
    before = {s: task_ids(gw, s) for s in case.untouched}
    plan = plan_of(gw, lb, case.new, strategy=case.strategy, prune=case.prune)
    keys = [s.key.replace(next(iter(plan_configs(plan)), "CONFIG"), "CONFIG")
            for s in plan.steps]
    assert keys == case.keys

    events = run(gw, lb, plan.steps)

    assert events[-1] == f"recorded {len(plan.steps)}"
    assert images(gw) == case.images
    fresh = deployed(case.new)
    got, want = snapshot(gw, lb), snapshot(fresh, FakeLB(fresh, STACK))
    assert got == want
    assert not [n for n in got["services"] if "dans-" in n and not n.endswith("dans-lb")]
    assert "st_dans-gen-g1" not in got["networks"]
    # §4.4: never restarted (a scale adds tasks, but stops none)
    assert all(before[s] <= task_ids(gw, s) for s in case.untouched)
    assert lb.violations == []


def plan_configs(plan: Plan) -> list[str]:
    return [s.target for s in plan.steps if s.kind == "create_config"]


def test_the_chain_switches_the_lb_twice_and_ends_on_the_canonical_services() -> None:
    gw = deployed(BASE)
    lb = FakeLB(gw, STACK, watch=True)
    plan = plan_of(gw, lb, doc(front=V2_FRONT, api=V2_API))
    run(gw, lb, plan.steps)
    actives = [(fe.active, sorted(fe.groups)) for t in lb.sent for fe in t.frontends]
    assert actives == [("dans-g1", ["dans-g1", "main"]), ("main", ["dans-g1", "main"]),
                       ("main", ["main"])]
    final = lb.routes().to_dict()["frontends"][0]
    assert final["groups"] == {"main": {"backends": ["tasks.st_front:80"], "state": "active"}}
    assert replicas(gw, "front") == replicas(gw, "api") == 2


@pytest.mark.parametrize(
    ("image", "behaviour", "failing_step"),
    [("app/api:2", "starting", "create_services:level-0"),
     ("app/api:2", "failing", "create_services:level-0"),
     ("dans-lb:test", "starting", "create_services:relays")],
    ids=["new-api-never-healthy", "new-api-crash-loops", "relay-never-healthy"],
)
def test_a_task_that_never_becomes_healthy_fails_its_step(image: str, behaviour: str,
                                                          failing_step: str) -> None:
    gw = deployed(BASE)
    lb = FakeLB(gw, STACK, watch=True)
    plan = plan_of(gw, lb, doc(front=V2_FRONT, api=V2_API))
    gw.behaviour[image] = behaviour
    events: list[str] = []
    with pytest.raises(UpgradeError, match="did not converge within 60 s: 0/"):
        executor(gw, lb, events).run(plan.steps, 0, lambda n: None)
    assert events[-1].startswith(f"failed {failing_step} service st_")
    # Nothing reached the new version: the LB still routes to the canonical chain.
    assert lb.sent == [] and images(gw)["api"] == API1 and lb.violations == []


def test_an_update_that_pauses_fails_at_once_not_at_the_timeout() -> None:
    gw = deployed(BASE)
    lb = FakeLB(gw, STACK)
    plan = plan_of(gw, lb, doc(api={**V2_API, "x-dans": {"compatible": True}}))
    gw.behaviour["app/api:2"] = "failing"
    start = gw.clock.now
    with pytest.raises(UpgradeError, match="update paused"):
        run(gw, lb, plan.steps)
    assert gw.clock.now - start < 10  # the paused update is seen on the first failures


def test_a_concurrent_writer_makes_an_update_fail_with_conflict() -> None:
    gw = deployed(BASE)
    lb = FakeLB(gw, STACK)
    plan = plan_of(gw, lb, doc(api={**V2_API, "x-dans": {"compatible": True}}))

    def someone_else(name: str, _mutating: bool) -> None:
        if name == "update_service":  # between dans's inspect and its update
            current = gw.inspect_service("st_api")
            gw.update_service("st_api", current["Spec"],
                              version=int(current["Version"]["Index"]))

    gw.hooks.append(someone_else)
    with pytest.raises(Conflict, match="out of sequence"):
        run(gw, lb, plan.steps)
    assert images(gw)["api"] == API1


def test_removing_the_generation_network_waits_for_the_tasks_to_stop() -> None:
    gw = deployed(BASE, stop_delay=5.0)
    lb = FakeLB(gw, STACK, watch=True)
    plan = plan_of(gw, lb, doc(front=V2_FRONT, api=V2_API))
    start = gw.clock.now
    run(gw, lb, plan.steps)
    # Old chain and temporary services each took 5 s to stop: the executor waited for them.
    assert gw.clock.now - start >= 10
    assert "st_dans-gen-g1" not in [n["Name"] for n in gw.networks(STACK)]
    fresh = deployed(doc(front=V2_FRONT, api=V2_API))
    assert snapshot(gw, lb) == snapshot(fresh, FakeLB(fresh, STACK))


@pytest.mark.parametrize("stop", [1, 7, 11], ids=["after-network", "after-converge",
                                                   "before-network-removal"])
def test_an_unfinished_run_is_told_apart_from_the_end_state(stop: int) -> None:
    # The end-state comparison is not vacuous: what a partial run leaves differs from it.
    gw = deployed(BASE)
    lb = FakeLB(gw, STACK)
    plan = plan_of(gw, lb, doc(front=V2_FRONT, api=V2_API))
    run(gw, lb, plan.steps[:stop])
    fresh = deployed(doc(front=V2_FRONT, api=V2_API))
    got, want = snapshot(gw, lb), snapshot(fresh, FakeLB(fresh, STACK))
    assert got != want
    assert "st_dans-gen-g1" in got["networks"]
