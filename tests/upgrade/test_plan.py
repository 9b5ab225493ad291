"""The planner: which services move how, and the order of the steps. Pure, no Docker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from compose_translator import load_project, translate
from tests.upgrade.stacks import BASE, SETTINGS, doc, managed, running
from upgrade_manager.errors import PlanError
from upgrade_manager.managed import ManagedStack, manage
from upgrade_manager.plan import Plan, RunningStack, make_plan

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
        "create_relay:st_dans-relay-g1-store",
        "create_temp:st_api-dans-g1",
        "create_temp:st_front-dans-g1",
        "route:lb",
        "drain:lb",
        "converge:canonical",
        "route:lb-back",
        "drain:lb-back",
        "route:lb-final",
        "remove_services:temporary",
        "remove_services:relays",
        "remove_network:st_dans-gen-g1",
    ]
    assert plan.chain == ("st_api", "st_front")
    assert plan.extra_replicas == 2 + 2 + 1
    assert plan.relays[0].ports == (5432,) and plan.relays[0].network == "st_default"
    converge = plan.steps[6].args["services"]
    assert sorted(converge) == ["st_api", "st_front"]


def test_temporary_copies_are_isolated_on_the_generation_network() -> None:
    plan = plan_for(doc(front=V2_FRONT, api=V2_API))
    steps = {s.key: s for s in plan.steps}
    api = steps["create_temp:st_api-dans-g1"].args["spec"]
    front = steps["create_temp:st_front-dans-g1"].args["spec"]
    relay = steps["create_relay:st_dans-relay-g1-store"].args["spec"]
    # Only the generation network carries the short names; the entry copy joins the edge.
    assert api["TaskTemplate"]["Networks"] == [{"Target": "st_dans-gen-g1", "Aliases": ["api"]}]
    assert front["TaskTemplate"]["Networks"] == [
        {"Target": "st_dans-gen-g1", "Aliases": ["front"]}, {"Target": "st_dans-edge"}]
    assert api["TaskTemplate"]["ContainerSpec"]["Image"] == "app/api:2"
    assert relay["TaskTemplate"]["Networks"] == [
        {"Target": "st_default"}, {"Target": "st_dans-gen-g1", "Aliases": ["store"]}]
    assert any("tasks.st_store:5432" in e for e in relay["TaskTemplate"]["ContainerSpec"]["Env"])
    # The LB sends new requests to the copy, and keeps the old group for what is in flight.
    table = steps["route:lb"].args["table"]["frontends"][0]
    assert table["active"] == "dans-g1"
    assert table["groups"]["dans-g1"]["backends"] == ["tasks.st_front-dans-g1:80"]
    assert table["groups"]["main"]["backends"] == ["tasks.st_front:80"]
    back = steps["route:lb-back"].args["table"]["frontends"][0]
    assert back["active"] == "main" and back["groups"]["dans-g1"]["state"] == "draining"


def test_stateful_service_is_updated_in_place_stop_first_with_a_warning() -> None:
    plan = plan_for(doc(store={"image": "app/store:2"}))
    assert kinds(plan) == ["update_service:st_store"]
    assert plan.steps[0].args["via"]["Order"] == "stop-first"
    assert any("IN PLACE" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("strategy", "expect"),
    [("rolling", ["update_services:stack"]), ("isolated", ["update_services:stack"])],
    ids=["rolling", "isolated"],
)
def test_other_strategies(strategy: str, expect: list[str]) -> None:
    plan = plan_for(doc(front=V2_FRONT, api=V2_API), strategy=strategy)
    assert kinds(plan) == expect
    assert sorted(plan.steps[0].args["services"]) == ["st_api", "st_front"]
    assert ("via" in plan.steps[0].args) == (strategy == "isolated")


def test_added_service_is_created_first_and_relayed() -> None:
    new = doc(api={**V2_API, "environment": {"DB": "postgresql://u:p@store:5432/x",
                                              "CACHE": "cache:6379"}},
              cache={"image": "app/cache:1", "deploy": {"endpoint_mode": "dnsrr"}})
    plan = plan_for(new)
    keys = kinds(plan)
    assert keys[0] == "create_service:st_cache"
    assert "create_relay:st_dans-relay-g1-cache" in keys
    assert {r.short: r.ports for r in plan.relays} == {"cache": (6379,), "store": (5432,)}


def test_removed_service_kept_unless_prune() -> None:
    new = doc(front={"environment": {"API_URL": "http://other:1/"}}, api=None,
              other={"image": "x:1"})
    kept = plan_for(new)
    assert not [s for s in kept.steps if s.kind == "remove_service"]
    assert any("--prune" in w for w in kept.warnings)
    pruned = plan_for(new, prune=True)
    assert "remove_service:st_api" in kinds(pruned)


def test_missing_relay_port_is_a_clear_error() -> None:
    new = doc(api={**V2_API, "environment": {"DB_HOST": "store"}})
    with pytest.raises(PlanError, match=r"x-dans: \{ports: \[PORT\]\}"):
        plan_for(new, old=doc(api={"environment": {"DB_HOST": "store"}}))


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


def test_call_cycle_is_refused() -> None:
    new = doc(front=V2_FRONT, api={**V2_API, "x-dans": {"calls": ["front"]}})
    with pytest.raises(PlanError, match="cycle"):
        plan_for(new)


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
