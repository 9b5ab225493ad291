"""`dans deploy` on the 3-node cluster: the LB image comes from the registry (`--lb-image`),
nothing is built on the manager, and the LB answers through its published port on every node.

dans runs one LB replica today (issue 20, item 3 brings `--lb-replicas`/global mode): with a
host-mode port only the LB's node answers, so the test first checks that node, then scales the
LB service to one replica per node itself, as a stand-in, and checks all three addresses.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from tests.multinode.conftest import Cluster, cluster_free_port
from tests.support import Names, wait_until
from tests.upgrade.chainapp import Service, stack_document
from upgrade_manager.gateway import Gateway
from upgrade_manager.managed import lb_service_name


def answer(url: str) -> dict[str, list[str]] | None:
    """The chain app's `seen` for one request through the LB, or None when it fails."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return dict(json.loads(resp.read())["seen"])
    except OSError:
        return None


def test_dans_deploy_with_the_lb_image_from_the_registry(
        cluster: Cluster, mn_gateway: Gateway, mn_names: Names, tmp_path: Path) -> None:
    stack = mn_names()
    port = cluster_free_port(mn_gateway)
    services = {"front": Service(calls=("api",)), "api": Service(replicas=2)}
    compose = tmp_path / "stack.yml"
    # The chain app runs on the LB image's python3: one image for the whole test, pulled by
    # every node from the registry.
    compose.write_text(yaml.safe_dump(stack_document(services, cluster.lb_image, "front", port)))
    done = subprocess.run(
        [sys.executable, "-m", "upgrade_manager.cli", "deploy", "-c", str(compose),
         "--lb-image", cluster.lb_image, "--lb-admin-port", str(port + 1),
         "--wait", "--timeout", "240", stack],
        capture_output=True, text=True, timeout=400,
        env=dict(os.environ, DOCKER_HOST=cluster.docker_host))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Building the LB image" not in output, output

    lb = lb_service_name(stack)
    addr_of = {n["ID"]: n["Status"]["Addr"] for n in mn_gateway.api.nodes()}
    (task,) = mn_gateway.tasks(lb, desired_running=True)
    seen = wait_until(lambda: answer(f"http://{addr_of[task['NodeID']]}:{port}/"), timeout=60,
                      what="the LB answering on its node")
    assert seen == {"front": ["1"], "api": ["1"]}

    # Stand-in for `--lb-replicas`: one LB per node; each serves the table from its spec.
    current = mn_gateway.inspect_service(lb)
    spec = current["Spec"]
    spec["Mode"] = {"Replicated": {"Replicas": 3}}
    spec["TaskTemplate"]["Placement"] = {"MaxReplicas": 1}
    mn_gateway.update_service(lb, spec, version=current["Version"]["Index"])
    mn_gateway.wait_converged(lb, timeout=180)
    assert len({t["NodeID"] for t in mn_gateway.tasks(lb, desired_running=True)}) == 3
    for node in cluster.nodes:
        seen = wait_until(functools.partial(answer, f"http://{node}:{port}/"), timeout=60,
                          what=f"the LB answering on {node}:{port}")
        assert seen == {"front": ["1"], "api": ["1"]}, node
