"""Waypoints (`upgrade_manager.mesh`): which services get one, what the specs look like, and
an upgrade of a meshed stack on the fake swarm (it ends where a fresh meshed deploy starts,
and never restarts a waypoint)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import yaml

from compose_translator import ComposeError, load_project, translate
from tests.fakegateway import FakeClock, FakeGateway
from tests.fakelb import FakeLB
from tests.upgrade.fakestack import STACK, images, options, snapshot
from tests.upgrade.stacks import BASE, SETTINGS, doc
from tests.upgrade.test_executor_fake import run, task_ids
from upgrade_manager.managed import MESH_LABEL, ManagedStack, lb_service_name, manage
from upgrade_manager.mesh import ALIASES_LABEL, is_waypoint, moved_aliases, waypoint_name
from upgrade_manager.plan import make_plan
from upgrade_manager.upgrade import deploy, desired_stack, lb_settings, read_running

# front -> api, api calls nothing: only api is called by another service.
PAIR: dict[str, Any] = {
    "services": {
        "front": {"image": "app/front:1", "ports": ["8080:80"],
                  "environment": {"API_URL": "http://api:8000/v1"},
                  "x-dans": {"calls": ["api"]}},
        "api": {"image": "app/api:1", "x-dans": {"calls": []},
                "networks": {"default": {"aliases": ["api-v1", "backend"]}}},
    },
}


def meshed(document: dict[str, Any], mesh: bool = True) -> ManagedStack:
    project = load_project(["-"], stdin_text=yaml.safe_dump(document), environ={})
    return manage(translate(project, STACK), replace(SETTINGS, mesh=mesh))


def waypoints(m: ManagedStack) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in m.specs.services.items() if is_waypoint(s)}


def test_only_called_services_get_a_waypoint_holding_their_names() -> None:
    m = meshed(PAIR)
    assert list(waypoints(m)) == [waypoint_name(STACK, "api")]
    wp = waypoints(m)["st_dans-wp-api"]
    assert wp["TaskTemplate"]["Networks"] == [
        {"Target": "st_default", "Aliases": ["api", "api-v1", "backend"]}]
    args = wp["TaskTemplate"]["ContainerSpec"]["Args"]
    assert args == ["waypoint", "--target", "st_api", "--callee", "api", "--http", "8000"]
    api = m.specs.services["st_api"]
    assert all(not n.get("Aliases") for n in api["TaskTemplate"]["Networks"])
    assert moved_aliases(api) == {"st_default": ["api", "api-v1", "backend"]}
    # Nothing else of the application changes.
    plain = meshed(PAIR, mesh=False).specs.services
    assert plain["st_front"] == m.specs.services["st_front"]
    assert plain["st_api"]["TaskTemplate"]["ContainerSpec"] == api["TaskTemplate"]["ContainerSpec"]
    assert m.specs.services[lb_service_name(STACK)]["Labels"][MESH_LABEL] == "all"


def test_the_sound_graph_meshes_every_service_an_undeclared_neighbour_may_call() -> None:
    m = meshed(BASE)  # front and api declare nothing: each may call the others
    assert sorted(waypoints(m)) == ["st_dans-wp-api", "st_dans-wp-front", "st_dans-wp-store"]
    args = {n: s["TaskTemplate"]["ContainerSpec"]["Args"] for n, s in waypoints(m).items()}
    assert args["st_dans-wp-front"][-2:] == ["--http", "80"]  # its published target
    assert "--http" not in args["st_dans-wp-store"]  # postgresql: relayed, never parsed
    # The real service's endpoint mode is the waypoint's.
    assert {s["EndpointSpec"]["Mode"] for s in waypoints(m).values()} == {"dnsrr"}


@pytest.mark.parametrize("ext, want", [
    ({"mesh": True}, ["st_dans-wp-api"]),
    ({"mesh": True, "protocol": "tcp"}, ["st_dans-wp-api"]),
], ids=["service-level", "tcp"])
def test_service_level_mesh_without_the_flag(ext: dict[str, Any], want: list[str]) -> None:
    document = doc(api={"x-dans": ext})
    m = meshed(document, mesh=False)
    assert sorted(waypoints(m)) == want
    args = waypoints(m)["st_dans-wp-api"]["TaskTemplate"]["ContainerSpec"]["Args"]
    assert ("--http" in args) is (ext.get("protocol") != "tcp")


def test_opting_out_and_the_trace_header() -> None:
    m = meshed(doc(store={"x-dans": {"calls": [], "mesh": False}},
                   api={"x-dans": {"trace_header": "X-Request-Id"}}))
    assert "st_dans-wp-store" not in waypoints(m)
    args = waypoints(m)["st_dans-wp-api"]["TaskTemplate"]["ContainerSpec"]["Args"]
    assert args[-2:] == ["--trace-header", "X-Request-Id"]
    with pytest.raises(ComposeError, match="trace_header"):
        meshed(doc(api={"x-dans": {"trace_header": "Bad Header"}}))


def _deployed(document: dict[str, Any]) -> FakeGateway:
    gw = FakeGateway(FakeClock(), stop_delay=0.5)
    deploy(gw, options(document, mesh=True), wait=True)
    return gw


def test_upgrading_a_meshed_stack_keeps_the_mesh_and_its_waypoints() -> None:
    gw = _deployed(PAIR)
    lb = FakeLB(gw, STACK, watch=True)
    wp_tasks = task_ids(gw, "dans-wp-api")
    new = json.loads(json.dumps(PAIR))
    new["services"]["api"]["image"] = "app/api:2"
    opts = options(new)  # no --mesh: the running LB says the stack is meshed
    running = read_running(gw, STACK)
    desired = desired_stack(opts, lb_settings(running, opts))
    plan = make_plan(running, desired, generation="g1", old_table=lb.routes().to_dict())
    assert {c.short: c.role for c in plan.changes}["dans-wp-api"] == "none"
    assert "st_dans-wp-api" not in plan.chain
    run(gw, lb, plan.steps)
    assert images(gw)["api"] == ["app/api:2"]
    assert task_ids(gw, "dans-wp-api") == wp_tasks  # never restarted
    fresh = _deployed(new)
    assert snapshot(gw, lb) == snapshot(fresh, FakeLB(fresh, STACK))
    assert lb.violations == []
    # The temporary copy answered to every name the real service had.
    temp = [s for s in plan.steps if s.kind == "create_services" and "level" in s.key]
    specs = [spec for s in temp for spec in s.args["services"].values()
             if spec["Name"].startswith("st_api")]
    assert specs and specs[0]["TaskTemplate"]["Networks"][0]["Aliases"] == [
        "api", "api-v1", "backend"]
    assert ALIASES_LABEL in specs[0]["Labels"]
