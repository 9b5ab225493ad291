"""The executor's waits for things to be gone, on several nodes (upgrade_manager.task_waits):
a removed network is gone from the engine before its step is over (bounded), and the tasks of
a node that is down (they keep reporting "running") are not waited for."""

from __future__ import annotations

import pytest

from tests.fakegateway import FakeGateway
from upgrade_manager.errors import NotFound, UpgradeError
from upgrade_manager.executor import Executor, Timeouts
from upgrade_manager.model import Step, StepKind
from upgrade_manager.task_waits import wait_stopped

TIMEOUTS = Timeouts(healthy=30.0, drain=30.0, remove=20.0)


def executor(gw: FakeGateway) -> Executor:
    return Executor(gw, lambda: None, lambda *_a: None, TIMEOUTS,  # type: ignore[arg-type,return-value]
                    clock=gw.clock)


def service(gw: FakeGateway, name: str, replicas: int, network: str | None = None) -> str:
    task: dict[str, object] = {"ContainerSpec": {"Image": "app:1"}}
    if network:
        task["Networks"] = [{"Target": network}]
    sid = gw.create_service({"Name": name, "TaskTemplate": task,
                             "Mode": {"Replicated": {"Replicas": replicas}}})
    gw.wait_converged(name)
    return sid


def test_a_removed_network_is_gone_before_the_step_is_over() -> None:
    gw = FakeGateway()
    gw.network_linger = 3.0  # the engine still lists it for a while
    gw.create_network({"Name": "st_dans-gen-g1", "Driver": "overlay"})
    t0 = gw.clock.monotonic()
    executor(gw).apply(Step(StepKind.REMOVE_NETWORK, "st_dans-gen-g1"))
    with pytest.raises(NotFound):
        gw.inspect_network("st_dans-gen-g1")
    assert gw.clock.monotonic() - t0 >= 3.0
    executor(gw).apply(Step(StepKind.REMOVE_NETWORK, "st_dans-gen-g1"))  # idempotent


def test_a_network_that_never_goes_is_an_error_in_bounded_time() -> None:
    gw = FakeGateway()
    gw.network_linger = 1000.0
    gw.create_network({"Name": "st_net", "Driver": "overlay"})
    t0 = gw.clock.monotonic()
    with pytest.raises(UpgradeError, match="st_net is still there 20 s after its removal"):
        executor(gw).apply(Step(StepKind.REMOVE_NETWORK, "st_net"))
    assert 20.0 <= gw.clock.monotonic() - t0 < 22.0


def test_removing_services_does_not_wait_for_tasks_of_a_node_that_is_down() -> None:
    gw = FakeGateway()
    gw.create_network({"Name": "st_gen", "Driver": "overlay"})
    service(gw, "st_api-dans-g1", 2, "st_gen")
    gw.stop_node("node-1")  # its two tasks keep reporting running; replaced on node-2
    gw.wait_converged("st_api-dans-g1")
    t0 = gw.clock.monotonic()
    executor(gw).apply(Step(StepKind.REMOVE_SERVICES, "temporary",
                            {"names": ["st_api-dans-g1"]}))
    assert gw.clock.monotonic() - t0 < 5.0
    assert not gw.service_exists("st_api-dans-g1")


def test_tasks_of_nodes_that_are_up_are_still_waited_for_and_bounded() -> None:
    gw = FakeGateway(stop_delay=5.0)
    sid = service(gw, "st_api", 1)
    gw.remove_service("st_api")
    t0 = gw.clock.monotonic()
    wait_stopped(gw, [sid], gw.clock, 20.0, "st_api has tasks")
    assert gw.clock.monotonic() - t0 >= 4.0  # it waited for the task to stop
    gw.stop_delay = 1000.0
    sid = service(gw, "st_api", 1)
    gw.remove_service("st_api")
    with pytest.raises(UpgradeError, match="st_api has tasks after 20 s"):
        wait_stopped(gw, [sid], gw.clock, 20.0, "st_api has tasks")


def test_the_old_chain_stops_while_a_node_is_down() -> None:
    gw = FakeGateway()
    service(gw, "st_api", 2)
    gw.stop_node("node-1")
    gw.wait_converged("st_api")
    spec = gw.inspect_service("st_api")["Spec"]
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = "app:2"
    t0 = gw.clock.monotonic()
    executor(gw).apply(Step(StepKind.CONVERGE, "canonical", {
        "services": {"st_api": spec}, "stop": ["st_api"], "levels": [["st_api"]]}))
    assert gw.clock.monotonic() - t0 < 10.0
    running = gw.tasks("st_api", desired_running=True)
    assert [t["Spec"]["ContainerSpec"]["Image"] for t in running] == ["app:2", "app:2"]
    gw.start_node("node-1")  # back: its old tasks stop
    gw.clock.sleep(1.0)
    assert not any(t["Status"]["State"] == "running" and t["NodeID"] == "node-1"
                   for t in gw.tasks("st_api"))
