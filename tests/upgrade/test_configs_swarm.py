"""Changed config content on the real swarm: a new content-addressed config, the old removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.gateway.test_gateway import FIXTURE, IMAGE
from tests.support import Names, wait_until
from tests.voting_app.stacks import free_port
from upgrade_manager.gateway import Gateway

ROOT = Path(__file__).resolve().parents[2]


def write_stack(where: Path, content: str) -> Path:
    (where / "app.conf").write_text(content)
    doc = {
        "version": "3.8",
        "services": {"app": {
            "image": IMAGE,
            "command": ["sh", "-c", "cp /etc/app.conf /tmp/ready; exec sleep infinity"],
            "configs": [{"source": "app", "target": "/etc/app.conf"}],
            "healthcheck": {"test": ["CMD", "test", "-f", "/tmp/ready"], "interval": "1s"},
            "deploy": {"endpoint_mode": "dnsrr"},
        }},
        "configs": {"app": {"file": "./app.conf"}},
    }
    path = where / "stack.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def dans(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=600)


def served_content(gw: Gateway, service: str) -> str | None:
    """The config content in a running task of `service`, or None while none runs.

    Mid-update a service can have no running task, or one whose container is just going:
    both mean "not yet", never a failure, so the caller waits.
    """
    for task in gw.tasks(service, desired_running=True):
        if task["Status"]["State"] != "running":
            continue
        cid = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
        if not cid:
            continue
        out = subprocess.run(["docker", "exec", cid, "cat", "/etc/app.conf"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout
    return None


def test_config_content_change(gateway: Gateway, names: Names, lb_image: str,
                               tmp_path: Path) -> None:
    if not gateway.image_exists(IMAGE):
        gateway.build_image(str(FIXTURE), IMAGE)
    stack, service = names("cfg"), names("cfg") + "_app"
    v1 = tmp_path / "v1"
    v2 = tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    deployed = dans("deploy", "-f", str(write_stack(v1, "level=1\n")), "--stack", stack,
                    "--lb-image", lb_image, "--lb-admin-port", str(free_port()), "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    (old,) = [c["Spec"]["Name"] for c in gateway.configs(stack)]
    first = wait_until(lambda: served_content(gateway, service), timeout=60,
                       what="a running task of the first version")
    assert first == "level=1\n"

    upgraded = dans("upgrade", "-f", str(write_stack(v2, "level=2\n")), "--stack", stack)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "create_config" in upgraded.stdout and "remove_unused" in upgraded.stdout
    (new,) = [c["Spec"]["Name"] for c in gateway.configs(stack)]
    assert new != old and new.startswith(f"{stack}_app-")
    wait_until(lambda: served_content(gateway, service) == "level=2\n", timeout=60,
               what="the new config content in the running task")
    refs = gateway.inspect_service(service)["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"]
    assert [r["ConfigName"] for r in refs] == [new]
