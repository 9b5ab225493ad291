"""Fixtures of the multi-node tests: the 3-node cluster of scripts/multinode.sh, and a gateway
to its manager.

The `cluster` fixture runs `multinode.sh up` (quick when the cluster is up already). When it
had to bring the cluster up, it takes it down again after this package's tests, so the rest
of the suite does not share two cores with three idle engines; DANS_MN_KEEP=1 keeps it.
Without the cluster (not root, the script fails) the tests skip, or fail under CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.support import IN_CI, Names, names_for_test
from upgrade_manager.gateway import Gateway

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "multinode.sh"


@dataclass(frozen=True)
class Cluster:
    """What `multinode.sh up` printed: where the manager, the registry and the nodes are."""

    docker_host: str  # the manager's engine, unix://...
    registry: str  # host:port, the same for the host and every node
    nodes: tuple[str, ...]  # addresses where the nodes' published ports answer from here
    lb_image: str  # this code's LB image, in the registry
    tiny_image: str  # tests/fixtures/tiny-image, in the registry

    def node_sockets(self) -> dict[str, str]:
        """Every node's engine by hostname (dans-mn-1 is the manager)."""
        base = Path(self.docker_host.removeprefix("unix://")).parent.parent
        return {p.name: f"unix://{p}/docker.sock" for p in sorted(base.iterdir()) if p.is_dir()}


def _parse(stdout: str) -> Cluster:
    lines = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    return Cluster(docker_host=lines["DOCKER_HOST"], registry=lines["REGISTRY"],
                   nodes=tuple(lines["NODES"].split(",")), lb_image=lines["LB_IMAGE"],
                   tiny_image=lines["TINY_IMAGE"])


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DANS_PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *command], capture_output=True, text=True,
                          env=env, timeout=900)


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    """The 3-node cluster, brought up when needed (about a minute; seconds when up), with
    the voting app's images in its registry (built first when missing)."""
    was_up = _run("status").returncode == 0
    done = _run("up", "--examples")
    if done.returncode != 0:
        message = (f"needs the 3-node test cluster (bash scripts/multinode.sh up): "
                   f"{done.stderr.strip()[-1500:]}")
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield _parse(done.stdout)
    if not was_up and os.environ.get("DANS_MN_KEEP") != "1":
        _run("down")


@pytest.fixture(scope="package")
def mn_gateway(cluster: Cluster) -> Iterator[Gateway]:
    """A gateway to the cluster's manager (what `DOCKER_HOST=... dans` talks to)."""
    gw = Gateway(docker.APIClient(base_url=cluster.docker_host, timeout=60))
    gw.require_manager()
    yield gw
    gw.close()


@pytest.fixture
def mn_names(mn_gateway: Gateway, request: pytest.FixtureRequest) -> Iterator[Names]:
    """A unique name prefix on the cluster; everything named with it is removed afterwards."""
    n = names_for_test(mn_gateway, request)
    yield n
    n.cleanup()


def cluster_free_port(gw: Gateway) -> int:
    """A port that no service on the cluster publishes (the nodes run nothing else)."""
    held = {int(p["PublishedPort"]) for s in gw.api.services()
            for p in (s.get("Endpoint") or {}).get("Ports") or [] if p.get("PublishedPort")}
    port = 21000 + os.getpid() % 4000
    while port in held:
        port += 1
    return port
