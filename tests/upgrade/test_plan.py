"""The planner: which services move how, and the order of the steps. Pure, no Docker."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from compose_translator import load_project, translate
from tests.upgrade.stacks import BASE, SETTINGS, doc, managed, running
from upgrade_manager.errors import PlanError
from upgrade_manager.managed import ManagedStack, manage
from upgrade_manager.model import Plan, RunningStack
from upgrade_manager.plan import make_plan
from upgrade_manager.steps import relay_placement

V2_API = {"image": "app/api:2"}
V2_FRONT = {"environment": {"API_URL": "http://api:8000/v2"}}


def plan_for(new: dict[str, Any], old: dict[str, Any] | None = None, **kw: Any) -> Plan:
    before = managed(old or BASE)
    return make_plan(running(before), managed(new), generation="g1",
                     old_table=before.routing_table().to_dict(), **kw)


def roles(plan: Plan) -> dict[str, tuple[str, str]]:
    return {c.short: (c.kind, c.role) for c in plan.changes}


def kinds(plan: Plan) -> list[str]:
    return [s.key for s in plan.steps]


@pytest.mark.parametrize(
    ("changes", "expect"),
    [
        ({"front": V2_FRONT, "api": V2_API},
         {"front": ("changed", "chain"), "api": ("changed", "chain"),
          "store": ("unchanged", "relayed"), "dans-lb": ("unchanged", "edge-lb")}),
        ({"api": V2_API},
         {"front": ("unchanged", "companion"), "api": ("changed", "chain"),
          "store": ("unchanged", "relayed")}),
        ({"api": {**V2_API, "x-dans": {"compatible": True}}},
         {"front": ("unchanged", "none"), "api": ("changed", "compatible"),
          "store": ("unchanged", "none")}),
        ({"store": {"image": "app/store:2"}},
         {"front": ("unchanged", "none"), "api": ("unchanged", "none"),
          "store": ("changed", "stateful")}),
        ({"api": {"deploy": {"replicas": 3, "endpoint_mode": "dnsrr"}}},
         {"api": ("scaled", "in-place"), "front": ("unchanged", "none")}),
        ({}, {"front": ("unchanged", "none"), "api": ("unchanged", "none")}),
    ],
    ids=["front-and-api", "api-only-front-companion", "compatible-rolls", "stateful",
         "scale-only", "no-change"],
)
def test_roles(changes: dict[str, Any], expect: dict[str, tuple[str, str]]) -> None:
    got = roles(plan_for(doc(**changes)))
    assert {k: got[k] for k in expect} == expect


def test_chain_steps_in_order_callees_first() -> None:
    plan = plan_for(doc(front=V2_FRONT, api=V2_API))
    assert kinds(plan) == [
        "create_network:st_dans-gen-g1",
        "create_services:relays",
        "create_services:level-0",
        "create_services:level-1",
        "route:lb",
        "drain:lb",
        "converge:canonical",
        "route:lb-back",
        "drain:lb-back",
        "route:lb-final",
        "remove_services:temporary",
        "remove_network:st_dans-gen-g1",
    ]
    assert plan.chain == ("st_api", "st_front")
    assert plan.levels == (("st_api",), ("st_front",))
    assert plan.extra_replicas == 2 + 2 + 1
    assert plan.relays[0].ports == (5432,) and plan.relays[0].network == "st_default"
    converge = plan.steps[6].args
    assert sorted(converge["services"]) == ["st_api", "st_front"]
    # The old chain stops before the canonical services take the new specs, callees first.
    assert converge["stop"] == ["st_api", "st_front"]
    assert converge["levels"] == [["st_api"], ["st_front"]]
    removed = plan.steps[10].args["names"]
    assert sorted(removed) == ["st_api-dans-g1", "st_dans-relay-g1-store", "st_front-dans-g1"]


def test_temporary_copies_are_isolated_on_the_generation_network() -> None:
    plan = plan_for(doc(front=V2_FRONT, api=V2_API))
    steps = {s.key: s for s in plan.steps}
    api = steps["create_services:level-0"].args["services"]["st_api-dans-g1"]
    front = steps["create_services:level-1"].args["services"]["st_front-dans-g1"]
    relay = steps["create_services:relays"].args["services"]["st_dans-relay-g1-store"]
    # Only the generation network carries the short names; the entry copy joins the edge.
    assert api["TaskTemplate"]["Networks"] == [{"Target": "st_dans-gen-g1", "Aliases": ["api"]}]
    assert front["TaskTemplate"]["Networks"] == [
        {"Target": "st_dans-gen-g1", "Aliases": ["front"]}, {"Target": "st_dans-edge"}]
    assert api["TaskTemplate"]["ContainerSpec"]["Image"] == "app/api:2"
    assert relay["TaskTemplate"]["Networks"] == [
        {"Target": "st_default"}, {"Target": "st_dans-gen-g1", "Aliases": ["store"]}]
    # The relay is transparent: every port, no admin API, no token in its spec.
    container = relay["TaskTemplate"]["ContainerSpec"]
    assert container["Args"] == ["relay", "--target", "tasks.st_store"]
    assert container["CapabilityAdd"] == ["CAP_NET_ADMIN"]
    assert "Env" not in container and "tok" not in str(relay)
    # The LB sends new requests to the copy, and keeps the old group for what is in flight.
    table = steps["route:lb"].args["table"]["frontends"][0]
    assert table["active"] == "dans-g1"
    assert table["groups"]["dans-g1"]["backends"] == ["tasks.st_front-dans-g1:80"]
    assert table["groups"]["main"]["backends"] == ["tasks.st_front:80"]
    back = steps["route:lb-back"].args["table"]["frontends"][0]
    assert back["active"] == "main" and back["groups"]["dans-g1"]["state"] == "draining"


def test_stateful_service_is_refused_and_would_update_in_place_stop_first() -> None:
    plan = plan_for(doc(store={"image": "app/store:2"}))
    assert kinds(plan) == ["update_service:st_store"]
    assert plan.steps[0].args["via"]["Order"] == "stop-first"
    assert any("named volume" in r and "stop-first" in r for r in plan.refusals)


def test_rolling_updates_every_changed_service_at_once() -> None:
    plan = plan_for(doc(front=V2_FRONT, api=V2_API), strategy="rolling")
    assert kinds(plan) == ["update_services:stack"]
    assert sorted(plan.steps[0].args["services"]) == ["st_api", "st_front"]
    assert "via" not in plan.steps[0].args


@pytest.mark.parametrize("strategy", ["isolated", "delayed"])
def test_split_strategies_split_every_changed_service_and_route_at_the_lb(
        strategy: str) -> None:
    # tests/upgrade/test_split_strategies_fake.py runs them; here: what they touch.
    plan = plan_for(doc(front=V2_FRONT, api=V2_API, store={"image": "app/store:2"}),
                    strategy=strategy)
    halves = [n for s in plan.steps if s.kind == "create_services" for n in s.args["services"]]
    assert halves == ["st_api-dans-g1", "st_front-dans-g1"]  # one after the other, callee first
    assert kinds(plan)[0] == "update_service:st_store"  # stateful: in place, stop-first
    route = plan.steps[kinds(plan).index("route:front-lb")].args["table"]["frontends"][0]
    assert route["active"] == "split-g1"
    assert route["groups"]["split-g1"]["backends"] == ["tasks.st_front-dans-g1:80"]


def test_an_added_service_the_chain_calls_and_that_may_call_it_joins_the_new_chain() -> None:
    # api v2 calls a cache the file adds; the cache declares nothing, so it may call api too.
    # It has no old version: a copy joins the new chain, its canonical service is created at
    # converge (not before: a canonical cache could call the old api), and nothing is refused.
    new = doc(api={**V2_API, "environment": {"DB": "postgresql://u:p@store:5432/x",
                                              "CACHE": "cache:6379"}},
              cache={"image": "app/cache:1", "deploy": {"endpoint_mode": "dnsrr"}})
    plan = plan_for(new)
    keys = kinds(plan)
    assert not plan.refusals
    assert "create_service:st_cache" not in keys
    assert plan.levels == (("st_cache",), ("st_api",), ("st_front",))
    assert {r.short: r.ports for r in plan.relays} == {"store": (5432,)}
    converge = plan.steps[keys.index("converge:canonical")]
    assert converge.args["create"] == ["st_cache"]
    assert "st_cache" not in converge.args["stop"] + converge.args["companions"]
    assert "cache created" in converge.note


def test_an_added_service_that_calls_no_changed_service_is_created_first_and_relayed() -> None:
    new = doc(api={**V2_API, "environment": {"DB": "postgresql://u:p@store:5432/x",
                                              "CACHE": "cache:6379"}},
              cache={"image": "app/cache:1", "deploy": {"endpoint_mode": "dnsrr"},
                     "x-dans": {"calls": []}})
    plan = plan_for(new)
    keys = kinds(plan)
    assert keys[0] == "create_service:st_cache"
    assert "st_dans-relay-g1-cache" in plan.steps[keys.index("create_services:relays")].args[
        "services"]
    assert {r.short: r.ports for r in plan.relays} == {"cache": (6379,), "store": (5432,)}
    assert not plan.refusals


def test_an_added_service_with_a_named_volume_that_may_call_the_chain_is_refused() -> None:
    new = doc(api={**V2_API, "environment": {"DB": "postgresql://u:p@store:5432/x",
                                              "CACHE": "cache:6379"}},
              cache={"image": "app/cache:1", "volumes": ["cachedata:/data"]})
    new["volumes"] = {**new.get("volumes", {}), "cachedata": {}}
    plan = plan_for(new)
    assert any(r.startswith("cache may call api") and "added by this file" in r
               for r in plan.refusals), plan.refusals


def test_removed_service_kept_unless_prune() -> None:
    new = doc(front={"environment": {"API_URL": "http://other:1/"}}, api=None,
              other={"image": "x:1"})
    kept = plan_for(new)
    assert not [s for s in kept.steps if s.kind == "remove_service"]
    assert any("--prune" in w for w in kept.warnings)
    pruned = plan_for(new, prune=True)
    assert "remove_service:st_api" in kinds(pruned)


def test_no_port_is_needed_for_a_relay() -> None:
    # The URL of store lives in api's image: nothing in the file names a port.
    new = doc(api={**V2_API, "environment": {}})
    plan = plan_for(new, old=doc(api={"environment": {}}))
    assert [(r.short, r.ports) for r in plan.relays] == [("store", ())]
    assert not plan.refusals


@pytest.mark.parametrize(
    ("env", "store", "ports"),
    [
        ({"DB_HOST": "store"}, {"x-dans": {"ports": [5432]}}, (5432,)),
        ({"DB_HOST": "store", "DB_PORT": "6543"}, {}, (6543,)),
        ({"DB": "store:7000", "DB2": "redis://store"}, {}, (6379, 7000)),
    ],
    ids=["x-dans-ports", "host-port-pair", "host-colon-port-and-scheme"],
)
def test_relay_ports(env: dict[str, str], store: dict[str, Any],
                     ports: tuple[int, ...]) -> None:
    old = doc(api={"environment": env}, store=store)
    new = doc(api={**V2_API, "environment": env}, store=store)
    plan = plan_for(new, old=old)
    assert plan.relays[0].ports == ports


def test_services_that_call_each_other_start_together() -> None:
    new = doc(front=V2_FRONT, api={**V2_API, "x-dans": {"calls": ["front", "store"]}})
    plan = plan_for(new)
    assert plan.levels == (("st_api", "st_front"),)


def test_unknown_strategy() -> None:
    with pytest.raises(PlanError, match="unknown strategy"):
        plan_for(doc(), strategy="yolo")


def test_plan_json_round_trip() -> None:
    plan = plan_for(doc(front=V2_FRONT, api=V2_API))
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert plan_for(doc()).is_noop


def test_changed_config_content_is_a_new_object_and_the_old_one_goes(tmp_path: Path) -> None:
    def stack_with(content: str, name: str) -> ManagedStack:
        (tmp_path / f"{name}.conf").write_text(content)
        document = doc(api={"configs": [{"source": "app", "target": "/etc/app.conf"}]})
        document["configs"] = {"app": {"file": f"./{name}.conf"}}
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(document))
        return manage(translate(load_project([str(path)], environ={}), "st"), SETTINGS)

    before, after = stack_with("level=1", "v1"), stack_with("level=2", "v2")
    old_name, = before.specs.configs
    new_name, = after.specs.configs
    assert old_name.startswith("st_app-") and new_name.startswith("st_app-")
    assert old_name != new_name
    assert after.specs.configs[new_name]["Labels"]["io.dans.logical-name"] == "st_app"
    ref = after.specs.services["st_api"]["TaskTemplate"]["ContainerSpec"]["Configs"][0]
    assert ref["ConfigName"] == new_name

    run = RunningStack("st", dict(before.specs.services), {}, frozenset(before.specs.networks),
                       configs=frozenset(before.specs.configs))
    plan = make_plan(run, after, generation="g1", old_table=before.routing_table().to_dict())
    keys = [s.key for s in plan.steps]
    assert keys[0] == f"create_config:{new_name}"
    assert roles(plan)["api"] == ("changed", "chain")
    assert keys[-1] == "remove_unused:configs-secrets"
    assert plan.steps[-1].args == {"configs": [old_name], "secrets": []}


# -- the sound over-approximation (DESIGN.md §8): no x-dans key anywhere ------------------

def bare(**services: dict[str, Any]) -> dict[str, Any]:
    """A stack whose URLs live in the images: no environment, no x-dans, one network."""
    out: dict[str, Any] = {"version": "3.8", "services": {}, "volumes": {"data": {}}}
    for name, extra in services.items():
        out["services"][name] = {"image": f"app/{name}:1",
                                 "deploy": {"endpoint_mode": "dnsrr"}, **extra}
    return out


FOUR: dict[str, dict[str, Any]] = {"portal": {"ports": ["8080:80"]}, "auth": {}, "proc": {},
                                   "db": {}}


def test_unannotated_callers_move_with_the_chain() -> None:
    old = bare(**FOUR)
    new = bare(**{**FOUR, "auth": {"image": "app/auth:2"}})
    plan = plan_for(new, old=old)
    got = roles(plan)
    # Only auth changed, but portal, proc and db share its network: each may call it.
    assert got["auth"] == ("changed", "chain")
    assert {got[s] for s in ("portal", "proc", "db")} == {("unchanged", "companion")}
    assert not plan.refusals and not plan.relays
    assert any("st_default" in a and "auth" in a for a in plan.assumptions)
    # Nothing orders them (no known edge): one level, started together.
    assert plan.levels == (("st_auth", "st_db", "st_portal", "st_proc"),)


def test_a_caller_that_cannot_be_copied_is_refused_with_the_fix() -> None:
    four = {**FOUR, "db": {"volumes": ["data:/var/lib/db"]}}
    plan = plan_for(bare(**{**four, "auth": {"image": "app/auth:2"}}), old=bare(**four))
    assert len(plan.refusals) == 1
    assert plan.refusals[0].startswith("db may call auth but cannot be copied")
    assert "x-dans: {calls: []}" in plan.refusals[0]
    # With --allow-mixed, db would be reached through a relay.
    assert [r.short for r in plan.relays] == ["db"]


def test_a_declaration_narrows_the_graph() -> None:
    four = {**FOUR, "db": {"volumes": ["data:/var/lib/db"], "x-dans": {"calls": []}}}
    plan = plan_for(bare(**{**four, "auth": {"image": "app/auth:2"}}), old=bare(**four))
    assert not plan.refusals
    assert roles(plan)["db"] == ("unchanged", "relayed")
    assert roles(plan)["portal"] == ("unchanged", "companion")


def test_declared_calls_order_the_levels() -> None:
    four: dict[str, dict[str, Any]] = {
        "portal": {"ports": ["8080:80"], "x-dans": {"calls": ["auth", "proc"]}},
        "proc": {"x-dans": {"calls": ["auth", "db"]}}, "auth": {"x-dans": {"calls": []}},
        "db": {"x-dans": {"calls": []}}}
    new = bare(**{**four, "auth": {**four["auth"], "image": "app/auth:2"}})
    plan = plan_for(new, old=bare(**four))
    assert plan.levels == (("st_auth",), ("st_proc",), ("st_portal",))
    assert [r.short for r in plan.relays] == ["db"]


def test_changed_services_no_port_reaches_are_refused_not_rolled() -> None:
    two: dict[str, dict[str, Any]] = {"web": {"ports": ["8080:80"], "x-dans": {"calls": []}},
                                      "job": {}, "api": {}}
    new = bare(**{**two, "api": {"image": "app/api:2"}})
    plan = plan_for(new, old=bare(**two))
    assert any("publish no port" in r for r in plan.refusals)
    assert [s.kind for s in plan.steps] == ["update_service"]


def test_separate_networks_bound_the_assumption() -> None:
    nets: dict[str, Any] = {"networks": {"front": {}, "back": {}}}
    svcs: dict[str, dict[str, Any]] = {"web": {"ports": ["8080:80"], "networks": ["front"]},
            "api": {"networks": ["front", "back"]},
            "db": {"networks": ["back"], "volumes": ["data:/d"], "x-dans": {"calls": []}},
            "other": {"networks": ["front"], "ports": ["8081:80"]}}
    old, new = bare(**svcs), bare(**{**svcs, "web": {**svcs["web"], "image": "app/web:2"}})
    old.update(nets)
    new.update(nets)
    plan = plan_for(new, old=old)
    got = roles(plan)
    # web is on `front` only: api and other may call it; db (on `back`) is only relayed.
    assert got["web"] == ("changed", "chain")
    assert got["api"] == got["other"] == ("unchanged", "companion")
    assert got["db"] == ("unchanged", "relayed")


def test_a_lone_service_nothing_calls_rolls_in_place() -> None:
    one: dict[str, dict[str, Any]] = {"job": {}}
    plan = plan_for(bare(job={"image": "app/job:2"}), old=bare(**one))
    assert not plan.refusals
    assert [s.kind for s in plan.steps] == ["update_service"]
    assert any("called by no service" in w for w in plan.warnings)


# -- external networks: shared with what dans cannot see, so it assumes outside callers ----

EXTERNAL = {"networks": {"default": {}, "shared": {"external": True}}}


@pytest.mark.parametrize(
    ("changed", "on_shared", "refused", "fix"),
    [
        ("api", "api", "api is on the external network shared", "compatible: true"),
        ("api", "web", "web is on the external network shared", "calls: [...]"),
        ("job", "job", "job is on the external network shared", "compatible: true"),
    ],
    ids=["changed-member", "companion", "lone-service-would-roll"],
)
def test_a_member_on_an_external_network_is_refused(changed: str, on_shared: str,
                                                     refused: str, fix: str) -> None:
    svcs: dict[str, Any] = {"web": {"ports": ["8080:80"]}, "api": {},
                            "job": {"x-dans": {"calls": []}}}
    if changed == "job":  # nothing in the stack may call job: it would roll in place
        svcs = {"web": {"ports": ["8080:80"], "x-dans": {"calls": []}},
                "job": {"x-dans": {"calls": []}}}
    svcs[on_shared] = {**svcs[on_shared], "networks": ["default", "shared"]}
    old = {**bare(**svcs), **EXTERNAL}
    new = {**bare(**{**svcs, changed: {**svcs[changed], "image": f"app/{changed}:2"}}),
           **EXTERNAL}
    plan = plan_for(new, old=old)
    assert len(plan.refusals) == 1, plan.refusals
    assert plan.refusals[0].startswith(refused) and fix in plan.refusals[0]


def test_a_service_on_an_external_network_outside_the_chain_is_no_concern() -> None:
    svcs: dict[str, Any] = {"web": {"ports": ["8080:80"]}, "api": {"x-dans": {"calls": []}},
                            "cache": {"networks": ["back", "shared"],
                                      "x-dans": {"calls": []}}}
    nets = {"networks": {"default": {}, "back": {}, "shared": {"external": True}}}
    old = {**bare(**svcs), **nets}
    new = {**bare(**{**svcs, "api": {**svcs["api"], "image": "app/api:2"}}), **nets}
    plan = plan_for(new, old=old)
    assert not plan.refusals
    assert roles(plan)["cache"] == ("unchanged", "none")


PLACED = {"placement": {"constraints": ["node.labels.zone==a"],
                        "preferences": [{"spread": "node.labels.rack"}],
                        "max_replicas_per_node": 1}}
PLACEMENT = {"Constraints": ["node.labels.zone==a"],
             "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.rack"}}],
             "MaxReplicas": 1}


def placed(service: dict[str, Any]) -> dict[str, Any]:
    return {**service, "deploy": {**service.get("deploy", {}), **PLACED}}


@pytest.mark.parametrize("strategy", ["dans", "isolated"])
def test_temporary_services_and_relays_keep_the_placement_of_their_service(
        strategy: str) -> None:
    base = {"version": BASE["version"], "volumes": BASE["volumes"],
            "services": {n: placed(s) for n, s in BASE["services"].items()}}
    new = copy.deepcopy(base)
    new["services"]["api"]["image"] = "app/api:2"
    new["services"]["front"]["environment"] = V2_FRONT["environment"]
    plan = plan_for(new, base, strategy=strategy)
    created = {name: spec for s in plan.steps if s.kind.value == "create_services"
               for name, spec in s.args["services"].items()}
    created |= {s.target: s.args["spec"] for s in plan.steps
                if s.kind.value == "create_service"}
    temps = [n for n in created if "-dans-g1" in n or "dans-relay" in n]
    assert temps, created
    for name in temps:
        assert created[name]["TaskTemplate"]["Placement"] == PLACEMENT, name
    if strategy == "dans":
        assert any("dans-relay" in n for n in temps)


def test_a_relay_takes_no_placement_from_an_unplaced_service_and_never_its_platforms() -> None:
    plan = plan_for(doc(front=V2_FRONT, api=V2_API))
    relays = next(s for s in plan.steps if s.key == "create_services:relays")
    assert "Placement" not in relays.args["services"]["st_dans-relay-g1-store"]["TaskTemplate"]
    store = {"TaskTemplate": {"Placement": {"Platforms": [{"OS": "linux", "Architecture": "arm"}],
                                            "Constraints": ["node.role==worker"]}}}
    assert relay_placement(store) == {"Placement": {"Constraints": ["node.role==worker"]}}
