"""The fake gateway keeps the real one's contract: the same calls give the same errors.

Every case runs on the fake (fast, in `make unit`) and on the real swarm (marked `swarm`), so
the fake cannot drift from the Engine on what the upgrade code relies on: version conflicts,
name conflicts, immutability of configs, refusal to remove what is in use. Task lifecycles
(which need images and health checks) are checked on the fake only, in the second part.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fakegateway import FakeClock, FakeGateway
from upgrade_manager.errors import Conflict, ConvergeTimeout, EngineError, NotFound
from upgrade_manager.gateway import STACK_LABEL, Gateway


@dataclass
class Engine:
    gw: Gateway
    name: Callable[[str], str]


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.swarm)])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "fake":
        yield Engine(FakeGateway(), lambda n: f"ct_{n}")
        return
    gw = request.getfixturevalue("gateway")
    names = request.getfixturevalue("names")
    yield Engine(gw, names)


def service(name: str, network: str | None = None, replicas: int = 0,
            configs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"Image": "debian:bookworm-slim", "Args": ["sleep", "600"]}
    if configs:
        container["Configs"] = configs
    task: dict[str, Any] = {"ContainerSpec": container}
    if network:
        task["Networks"] = [{"Target": network}]
    return {"Name": name, "Labels": {STACK_LABEL: name.split("_")[0]}, "TaskTemplate": task,
            "Mode": {"Replicated": {"Replicas": replicas}}}


def network(name: str) -> dict[str, Any]:
    return {"Name": name, "Driver": "overlay", "Labels": {STACK_LABEL: name.split("_")[0]}}


def config(name: str, data: bytes = b"level=1") -> dict[str, Any]:
    return {"Name": name, "Labels": {"a": "1"}, "Data": data}


def test_a_stale_version_index_is_a_conflict(engine: Engine) -> None:
    gw, name = engine.gw, engine.name("svc")
    gw.create_service(service(name))
    first = gw.inspect_service(name)
    spec = first["Spec"]
    spec["Labels"]["x"] = "1"
    gw.update_service(name, spec, version=int(first["Version"]["Index"]))
    again = gw.inspect_service(name)
    assert int(again["Version"]["Index"]) > int(first["Version"]["Index"])
    assert again["Spec"]["Labels"]["x"] == "1"
    assert again["PreviousSpec"]["Labels"].get("x") is None
    spec["Labels"]["x"] = "2"
    with pytest.raises(Conflict, match="out of sequence"):
        gw.update_service(name, spec, version=int(first["Version"]["Index"]))
    assert gw.inspect_service(name)["Spec"]["Labels"]["x"] == "1"


@pytest.mark.parametrize("kind", ["service", "network", "config", "secret"])
def test_a_taken_name_is_a_conflict(engine: Engine, kind: str) -> None:
    gw, name = engine.gw, engine.name(kind)
    create: dict[str, Callable[[], str]] = {
        "service": lambda: gw.create_service(service(name)),
        "network": lambda: gw.create_network(network(name)),
        "config": lambda: gw.create_config(config(name)),
        "secret": lambda: gw.create_secret(config(name)),
    }
    create[kind]()
    with pytest.raises(Conflict):
        create[kind]()


def test_a_network_in_use_is_refused_and_a_missing_one_is_not_found(engine: Engine) -> None:
    gw = engine.gw
    net, name = engine.name("net"), engine.name("svc")
    net_id = gw.create_network(network(net))
    gw.create_service(service(name, network=net))
    assert [n["Target"] for n in gw.inspect_service(name)["Spec"]["TaskTemplate"]["Networks"]] \
        == [net_id]  # the Engine keeps network IDs in specs
    assert gw.network_names()[net_id] == net
    with pytest.raises(EngineError) as refused:
        gw.remove_network(net)
    assert not isinstance(refused.value, NotFound | Conflict)
    gw.remove_service(name)
    with pytest.raises(NotFound):
        gw.inspect_service(name)
    gw.remove_network(net)
    gw.remove_network(net, missing_ok=True)
    with pytest.raises(NotFound):
        gw.remove_network(net)


def test_a_config_is_immutable_but_for_labels_at_its_version(engine: Engine) -> None:
    gw, name = engine.gw, engine.name("conf")
    gw.create_config(config(name))
    first = gw.inspect_config(name)
    assert base64.b64decode(first["Spec"]["Data"]) == b"level=1"
    spec = {**first["Spec"], "Labels": {"a": "2"}}
    gw.update_config_labels(name, spec, version=int(first["Version"]["Index"]))
    second = gw.inspect_config(name)
    assert second["Spec"]["Labels"] == {"a": "2"}
    assert int(second["Version"]["Index"]) > int(first["Version"]["Index"])
    with pytest.raises(Conflict):  # the compare-and-swap the upgrade state relies on
        gw.update_config_labels(name, {**spec, "Labels": {"a": "3"}},
                                version=int(first["Version"]["Index"]))
    changed = {**second["Spec"], "Data": base64.b64encode(b"level=2").decode()}
    with pytest.raises(EngineError):
        gw.update_config_labels(name, changed)
    assert gw.inspect_config(name)["Spec"]["Labels"] == {"a": "2"}


def test_a_config_in_use_is_refused(engine: Engine) -> None:
    gw, name, svc = engine.gw, engine.name("conf"), engine.name("svc")
    config_id = gw.create_config(config(name))
    gw.create_service(service(svc, configs=[{
        "ConfigName": name, "ConfigID": config_id,
        "File": {"Name": "/etc/app.conf", "UID": "0", "GID": "0", "Mode": 0o444}}]))
    with pytest.raises(Conflict, match="in use"):
        gw.remove_config(name)
    gw.remove_service(svc)
    gw.remove_config(name)
    with pytest.raises(NotFound):
        gw.inspect_config(name)


def test_a_secret_never_shows_its_data(engine: Engine) -> None:
    gw, name = engine.gw, engine.name("sec")
    gw.create_secret(config(name, b"s3cret"))
    assert "Data" not in gw.inspect_secret(name)["Spec"]
    assert all("Data" not in s["Spec"] for s in gw.secrets(labels={"a": "1"})
               if s["Spec"]["Name"] == name)


# -- tasks, on the fake only --------------------------------------------------------------


def replicated(image: str, replicas: int = 2, order: str = "stop-first") -> dict[str, Any]:
    spec = service("ct_app", replicas=replicas)
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = image
    spec["UpdateConfig"] = {"Order": order, "FailureAction": "pause"}
    return spec


@pytest.mark.parametrize(
    ("behaviour", "converges", "state"),
    [("healthy", True, "running"), ("starting", False, "starting"),
     ("failing", False, "failed")],
    ids=["healthy", "never-healthy", "crash-looping"],
)
def test_new_tasks_run_only_when_healthy(behaviour: str, converges: bool, state: str) -> None:
    gw = FakeGateway(FakeClock(), start_delay=2.0)
    gw.behaviour["app:1"] = behaviour
    gw.create_service(replicated("app:1"))
    assert {t["Status"]["State"] for t in gw.tasks("ct_app")} == {"starting"}
    if converges:
        assert gw.wait_converged("ct_app", timeout=10).running == 2
        assert gw.clock.now == pytest.approx(1002.0, abs=0.6)  # fake time, not wall time
        return
    with pytest.raises(ConvergeTimeout, match=r"within 10 s: 0/2 tasks running"):
        gw.wait_converged("ct_app", timeout=10)
    assert state in {t["Status"]["State"] for t in gw.tasks("ct_app")}


@pytest.mark.parametrize("order", ["stop-first", "start-first"])
def test_an_update_replaces_tasks_and_a_failing_one_pauses(order: str) -> None:
    gw = FakeGateway(FakeClock())
    gw.create_service(replicated("app:1", order=order))
    gw.wait_converged("ct_app")
    old = {t["ID"] for t in gw.tasks("ct_app")}
    gw.behaviour["app:2"] = "failing"
    gw.update_service("ct_app", replicated("app:2", order=order))
    running = [t for t in gw.tasks("ct_app", desired_running=True)
               if t["Status"]["State"] == "running"]
    # Start-first keeps the old tasks serving until their replacements run; stop-first
    # tells them to stop at once.
    assert {t["ID"] for t in running} == (old if order == "start-first" else set())
    with pytest.raises(ConvergeTimeout, match="update paused"):
        gw.wait_converged("ct_app")
    assert gw.inspect_service("ct_app")["UpdateStatus"]["State"] == "paused"
    gw.update_service("ct_app", replicated("app:1", order=order))  # the way back
    state = gw.wait_converged("ct_app")
    assert (state.running, state.update_state) == (2, "completed")
    live = [t for t in gw.tasks("ct_app", desired_running=True)]
    assert {t["Spec"]["ContainerSpec"]["Image"] for t in live} == {"app:1"}
    assert not {t["ID"] for t in live} & old  # new tasks, even for the old image


def test_a_scale_keeps_tasks_and_removed_services_stop_later() -> None:
    gw = FakeGateway(FakeClock(), stop_delay=1.0)
    sid = gw.create_service(replicated("app:1", replicas=3))
    gw.wait_converged("ct_app")
    before = {t["Slot"]: t["ID"] for t in gw.tasks("ct_app", desired_running=True)}
    current = gw.inspect_service("ct_app")
    spec = current["Spec"]
    spec["Mode"]["Replicated"]["Replicas"] = 1
    gw.update_service("ct_app", spec, version=int(current["Version"]["Index"]))
    after = {t["Slot"]: t["ID"] for t in gw.tasks("ct_app", desired_running=True)}
    assert after == {1: before[1]}  # scaling replaces nothing
    assert "UpdateStatus" not in gw.inspect_service("ct_app")
    assert gw.live_tasks(sid) == 3  # slots 2 and 3 are stopping
    gw.clock.sleep(1.0)
    assert gw.live_tasks(sid) == 1
    gw.remove_service("ct_app")
    assert gw.live_tasks(sid) == 1  # stopping, not yet stopped
    gw.clock.sleep(1.0)
    assert gw.live_tasks(sid) == 0


def test_this_swarm_has_a_node_that_takes_tasks(engine: Engine) -> None:
    assert engine.gw.schedulable_nodes() >= 1
