"""Where the edge LB's replicas may run: a host-mode port needs a node per replica.

With `ports: [{published: 8080, target: 80, mode: host}]` the LB binds 8080 on the node it
runs on, so two replicas on one node cannot both start: Swarm keeps the second pending and
every route step would wait for it. dans places one replica per node (`MaxReplicas 1`) and
refuses, before any change, more replicas than the swarm has nodes to take them. dans reaches
the replicas through an admin helper task on its own node: one that cannot start is an error
that names it, not a hang.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from tests.fakegateway import FakeClock, FakeGateway
from tests.fakelb import FakeLB
from tests.upgrade.fakestack import STACK, deployed, options
from tests.upgrade.stacks import doc
from upgrade_manager import admin_channel, upgrade
from upgrade_manager._lb import LBFault
from upgrade_manager.errors import PlanError
from upgrade_manager.managed import lb_service_name

HOST_PORT = {"ports": [{"published": 8080, "target": 80, "mode": "host"}]}


def lb_spec(gw: FakeGateway) -> dict[str, Any]:
    spec: dict[str, Any] = gw.inspect_service(lb_service_name(STACK))["Spec"]
    return spec


@pytest.mark.parametrize(("front", "replicas", "max_per_node"), [
    pytest.param(HOST_PORT, "2", 1, id="host-mode-replicated"),
    pytest.param(HOST_PORT, "global", None, id="host-mode-global"),
    pytest.param({}, "3", None, id="ingress-replicated"),
])
def test_host_mode_lb_replicas_get_a_node_each(front: dict[str, Any], replicas: str,
                                               max_per_node: int | None) -> None:
    gw = FakeGateway(FakeClock())  # three nodes
    upgrade.deploy(gw, options(doc(front=front), lb_replicas=replicas))
    placement = lb_spec(gw)["TaskTemplate"].get("Placement") or {}
    assert placement.get("MaxReplicas") == max_per_node
    mode = lb_spec(gw)["Mode"]
    assert mode == ({"Global": {}} if replicas == "global"
                    else {"Replicated": {"Replicas": int(replicas)}})


def test_deploy_refuses_more_host_mode_replicas_than_nodes_before_any_change() -> None:
    gw = FakeGateway(FakeClock())
    gw.nodes = {"node-1", "node-2"}
    with pytest.raises(PlanError, match=r"--lb-replicas 3: .*8080 in host mode.*2 node"):
        upgrade.deploy(gw, options(doc(front=HOST_PORT), lb_replicas="3"))
    assert gw.services(STACK) == [] and gw.networks(STACK) == []
    assert not [c for c in gw.calls if c.startswith("create_")]


def test_ingress_ports_take_any_number_of_replicas_on_one_node() -> None:
    gw = FakeGateway(FakeClock())
    upgrade.deploy(gw, options(doc(), lb_replicas="3"))
    assert lb_spec(gw)["Mode"] == {"Replicated": {"Replicas": 3}}


def test_upgrade_refuses_before_any_change_when_a_node_is_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gw = FakeGateway(FakeClock())
    upgrade.deploy(gw, options(doc(front=HOST_PORT), lb_replicas="3"), wait=True)
    monkeypatch.setattr(upgrade, "lb_admin", lambda _gw, _stack, _url=None: FakeLB(gw, STACK))
    gw.stop_node("node-3")  # its LB replica cannot go anywhere else
    before = {s["Spec"]["Name"]: s["Version"]["Index"] for s in gw.services(STACK)}
    v2 = doc(front=HOST_PORT, api={"image": "app/api:2"})
    with pytest.raises(PlanError, match=r"--lb-replicas 3: .* 2 node"):
        upgrade.plan_upgrade(gw, options(v2))
    assert {s["Spec"]["Name"]: s["Version"]["Index"] for s in gw.services(STACK)} == before
    gw.start_node("node-3")
    plan, _ = upgrade.plan_upgrade(gw, options(v2))
    assert plan.steps


@pytest.mark.parametrize(("behaviour", "why"), [
    pytest.param("failing", r"did not start: .*failed", id="task-fails"),
    pytest.param("starting", r"did not start within 90 s", id="never-runs"),
])
def test_an_admin_helper_that_cannot_start_is_an_error_naming_it(
        monkeypatch: pytest.MonkeyPatch, behaviour: str, why: str) -> None:
    gw = deployed(doc())
    clock = gw.clock
    monkeypatch.setattr(admin_channel, "time", SimpleNamespace(
        monotonic=clock.monotonic, sleep=clock.sleep, time=time.time))
    gw.behaviour["dans-lb:test"] = behaviour  # the helper runs the LB's image
    channel = admin_channel.AdminChannel(gw, STACK)
    with pytest.raises(LBFault, match=rf"the admin helper {channel.name} {why}"):
        channel.request("GET", "/v1/routes", None, {}, timeout=5)
