"""The Docker gateway against the real swarm: every operation once, plus its error mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import Names, wait_until
from upgrade_manager.convergence import ServiceState
from upgrade_manager.errors import Conflict, ConvergeTimeout, EngineError, NotFound
from upgrade_manager.gateway import STACK_LABEL, Gateway

FIXTURE = Path(__file__).parent.parent / "fixtures" / "tiny-image"
IMAGE = "dans-test/tiny:1"


@pytest.fixture(scope="module")
def tiny_image(gateway: Gateway) -> str:
    if not gateway.image_exists(IMAGE):
        gateway.build_image(str(FIXTURE), IMAGE, buildargs={"VERSION": "1"})
    return IMAGE


def service_spec(name: str, network: str, image: str, *, replicas: int = 2,
                 env: str = "1", health: str = "test -f /tmp/ready") -> dict[str, Any]:
    return {
        "Name": name,
        "Labels": {STACK_LABEL: name.split("_")[0]},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "Env": [f"GEN={env}"],
                "Healthcheck": {
                    "Test": ["CMD-SHELL", health],
                    "Interval": 500_000_000,
                    "Timeout": 2_000_000_000,
                    "Retries": 3,
                    "StartPeriod": 0,
                },
                "StopGracePeriod": 1_000_000_000,
            },
            "Networks": [{"Target": network, "Aliases": ["app"]}],
            "RestartPolicy": {"Condition": "any", "MaxAttempts": 0},
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": {"Parallelism": 1, "Order": "start-first", "FailureAction": "pause"},
        "EndpointSpec": {"Mode": "dnsrr"},
    }


def test_service_lifecycle_rolling_update(gateway: Gateway, names: Names, tiny_image: str) -> None:
    net = names("net")
    net_id = gateway.create_network({"Name": net, "Driver": "overlay", "Attachable": True,
                                     "Labels": {STACK_LABEL: names()}})
    assert gateway.inspect_network(net)["Id"] == net_id
    assert [n["Name"] for n in gateway.networks(stack=names())] == [net]

    name = names("app")
    gateway.create_service(service_spec(name, net, tiny_image))
    state = gateway.wait_converged(name, timeout=120)
    assert (state.running, state.desired) == (2, 2)
    assert [s["Spec"]["Name"] for s in gateway.services(stack=names())] == [name]
    first_tasks = {t["ID"] for t in gateway.tasks(name, desired_running=True)}
    assert len(first_tasks) == 2

    before = gateway.inspect_service(name)
    spec = before["Spec"]
    spec["TaskTemplate"]["ContainerSpec"]["Env"] = ["GEN=2"]
    gateway.update_service(name, spec, version=before["Version"]["Index"])
    waits: list[ServiceState] = []
    done = gateway.wait_converged(name, timeout=180, progress=waits.append)
    # Right after the update the old tasks still run (the engine's updater may not have begun):
    # the first look, milliseconds later, must not take that for converged.
    assert waits, "the first look after the update saw it unfinished"
    assert done.update_state == "completed"
    # Converged: two tasks run the new spec. A task the engine is still replacing (one that
    # failed on a loaded machine) may be desired-running a moment longer: wait for two.
    after_tasks = wait_until(lambda: (lambda ts: ts if len(ts) == 2 else None)(
        gateway.tasks(name, desired_running=True)), timeout=60, what="two desired tasks")
    assert not first_tasks & {t["ID"] for t in after_tasks}, "every task was replaced"
    assert all(t["Spec"]["ContainerSpec"]["Env"] == ["GEN=2"] for t in after_tasks)
    old_shut = [t for t in gateway.tasks(name) if t["ID"] in first_tasks]
    assert all(t["DesiredState"] == "shutdown" for t in old_shut)

    # A writer holding the old version index is refused instead of overwriting.
    with pytest.raises(Conflict):
        gateway.update_service(name, spec, version=before["Version"]["Index"])

    gateway.remove_service(name)
    assert not gateway.service_exists(name)
    with pytest.raises(NotFound):
        gateway.remove_service(name)
    gateway.remove_service(name, missing_ok=True)


def test_converge_timeout_names_the_failing_task(gateway: Gateway, names: Names,
                                                 tiny_image: str) -> None:
    net = names("net")
    gateway.create_network({"Name": net, "Driver": "overlay"})
    name = names("sick")
    gateway.create_service(service_spec(name, net, tiny_image, replicas=1, health="false"))
    with pytest.raises(ConvergeTimeout) as err:
        gateway.wait_converged(name, timeout=20)
    message = str(err.value)
    assert name in message and "0/1 tasks running" in message


def test_configs_and_secrets(gateway: Gateway, names: Names) -> None:
    labels = {STACK_LABEL: names()}
    cfg = names("cfg")
    sec = names("sec")
    gateway.create_config({"Name": cfg, "Labels": labels, "Data": b"hello"})
    gateway.create_secret({"Name": sec, "Labels": labels, "Data": b"s3cret"})
    import base64

    assert base64.b64decode(gateway.inspect_config(cfg)["Spec"]["Data"]) == b"hello"
    assert "Data" not in gateway.inspect_secret(sec)["Spec"]
    assert [c["Spec"]["Name"] for c in gateway.configs(stack=names())] == [cfg]
    assert [s["Spec"]["Name"] for s in gateway.secrets(stack=names())] == [sec]
    with pytest.raises(Conflict):
        gateway.create_config({"Name": cfg, "Labels": labels, "Data": b"again"})
    gateway.update_config_labels(cfg, {"Name": cfg, "Labels": {**labels, "x": "1"},
                                       "Data": gateway.inspect_config(cfg)["Spec"]["Data"]})
    assert gateway.inspect_config(cfg)["Spec"]["Labels"]["x"] == "1"
    gateway.remove_config(cfg)
    gateway.remove_secret(sec)
    wait_until(lambda: not gateway.configs(stack=names()) and not gateway.secrets(stack=names()),
               timeout=10, what="config and secret removal")
    with pytest.raises(NotFound):
        gateway.inspect_config(cfg)


def test_network_in_use_cannot_be_removed(gateway: Gateway, names: Names,
                                          tiny_image: str) -> None:
    net = names("busy")
    gateway.create_network({"Name": net, "Driver": "overlay"})
    name = names("user")
    gateway.create_service(service_spec(name, net, tiny_image, replicas=1))
    gateway.wait_converged(name, timeout=120)
    with pytest.raises(Conflict):
        gateway.create_network({"Name": net, "Driver": "overlay"})
    with pytest.raises(EngineError, match=r"in use|active endpoints"):
        gateway.remove_network(net)
    gateway.remove_service(name)
    def removed() -> bool:
        gateway.remove_network(net, missing_ok=True)
        return True

    wait_until(removed, timeout=60,
               what=f"network {net} to become removable")

    def gone() -> bool:
        try:
            gateway.inspect_network(net)
        except NotFound:
            return True
        return False

    wait_until(gone, timeout=30, what=f"network {net} to disappear")
