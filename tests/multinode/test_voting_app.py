"""The voting app's `change-api` upgrade on the 3-node cluster with three LB replicas (issue 20,
"done when"): `dans deploy --lb-replicas 3` of v1, then `dans upgrade` to change-api under
steady votes through the LB on every node; 0 failed, 0 mixed, the state of a fresh deploy.

The example's files name its images as the build made them (dans-voting/...); the nodes pull
them from the cluster's registry, so the test writes the files with the registry's name in
front (what a user of a registry does), and changes nothing else.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import yaml

from tests.multinode.conftest import Cluster, cluster_free_port
from tests.support import Names, wait_until
from tests.upgrade.voting import DansStack, Load
from tests.voting_app.stacks import STACKS, http
from upgrade_manager.gateway import Gateway


class ClusterVoting(DansStack):
    """The voting app on the cluster: images from the registry, three LB replicas."""

    cluster: Cluster
    where: Path

    def env(self) -> dict[str, str]:
        return {**super().env(), "DOCKER_HOST": self.cluster.docker_host}

    def file(self, version: str) -> str:
        doc = yaml.safe_load((STACKS / f"{version}.yml").read_text())
        for svc in doc["services"].values():
            svc["image"] = f"{self.cluster.registry}/{svc['image']}"
        path = self.where / f"{version}.yml"
        path.write_text(yaml.safe_dump(doc))
        return str(path)

    def deploy(self, version: str) -> None:
        done = self.dans("deploy", "-f", self.file(version), "--stack", self.name,
                         "--lb-image", self.lb_image, "--lb-admin-port", str(self.admin_port),
                         "--lb-replicas", "3", "--wait", "--timeout", "300")
        assert done.returncode == 0, done.stdout + done.stderr
        for node in self.cluster.nodes:
            wait_until(functools.partial(self.votes, node), timeout=120, interval=1.0,
                       what=f"votes through the LB on {node}")

    def votes(self, node: str) -> bool:
        try:
            return http("POST", f"http://{node}:{self.vote_port}/api/vote",
                        {"voter_id": "probe", "vote": "a"})[0] == 200
        except OSError:
            return False


def test_change_api_on_three_nodes_with_three_lb_replicas(
        cluster: Cluster, mn_gateway: Gateway, mn_names: Names, tmp_path: Path) -> None:
    port = cluster_free_port(mn_gateway)
    stack = ClusterVoting(mn_gateway, mn_names("vote"), cluster.lb_image, vote_port=port,
                          result_port=port + 1, admin_port=port + 2)
    stack.cluster, stack.where = cluster, tmp_path
    t0 = time.monotonic()
    stack.deploy("v1")
    deployed = time.monotonic() - t0
    loads = [Load(f"http://{node}:{port}", concurrency=2) for node in cluster.nodes]
    for load in loads:
        load.__enter__()
    try:
        time.sleep(3)  # votes under v1 before the upgrade starts (the load is steady)
        t1 = time.monotonic()
        done = stack.upgrade("change-api")
        upgraded = time.monotonic() - t1
        time.sleep(3)
    finally:
        stats: list[dict[str, Any]] = [load.finish() for load in loads]
    line = "; ".join(f"node{i + 1} ok={s['ok']} failed={s['failed']} mixed={s['mixed']}"
                     for i, s in enumerate(stats))
    print(f"\nvoting change-api, 3 nodes, 3 LB replicas: {line} | deploy={deployed:.1f}s "
          f"upgrade={upgraded:.1f}s chains={sorted(set().union(*(s['chains'] for s in stats)))}")
    assert done.returncode == 0, done.stdout + done.stderr
    for s in stats:
        assert (s["failed"], s["mixed"]) == (0, 0), (s["errors"], s["chains"])
        assert s["ok"] > 20
    assert stack.differences("change-api") == {}
