"""Shared helpers of the fault tests on the 3-node cluster (issue 20).

One small stack of the chain app (tests/upgrade/chainapp.py), deployed once per module by
`dans deploy --lb-replicas 3` (one LB per node, host-mode port): front calls api and proc,
proc calls api and store; each upgrade gives api a new version, so a transaction is mixed
when its two calls of api reach different versions. store calls nothing and runs on the
workers only (a placement constraint and a preference): the new chain reaches it through a
relay, which must keep that placement (`relay_placement`), as must the temporary api.

Load: one `chainapp.Load` per node address (the host reaches the LB's host-mode port on each
node), paced, bounded in time and count. `Faults` records, for every test, the counts and
timings it printed (the issue's note).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.multinode.conftest import Cluster
from tests.support import wait_until
from tests.upgrade.chainapp import Load, Service, serves, stack_document
from upgrade_manager.diff import diff_specs, normalize
from upgrade_manager.gateway import Gateway
from upgrade_manager.upgrade import Options, desired_stack, lb_settings, read_running

ROOT = Path(__file__).resolve().parents[2]
STORE_PLACEMENT = {"constraints": ["node.role==worker"],
                   "preferences": [{"spread": "node.id"}]}
RATE = 8.0  # requests per second through each node's LB (steady, bounded)


@dataclass
class ChainStack:
    """The fault tests' stack on the cluster, driven through the `dans` CLI."""

    cluster: Cluster
    gw: Gateway
    name: str
    port: int
    where: Path
    version: int = 1
    timings: dict[str, float] = field(default_factory=dict)

    def file(self, api_version: int) -> Path:
        services = {
            "front": Service(calls=("api", "proc")),
            "api": Service(version=str(api_version), replicas=2),
            "proc": Service(calls=("api", "store")),
            "store": Service(port=7000, extra={"x-dans": {"calls": []}}),
        }
        doc = stack_document(services, self.cluster.lb_image, "front", self.port)
        doc["services"]["store"]["deploy"] = {**doc["services"]["store"]["deploy"],
                                              "placement": STORE_PLACEMENT}
        path = self.where / f"{self.name}-api-{api_version}.yml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def env(self) -> dict[str, str]:
        return dict(os.environ, DOCKER_HOST=self.cluster.docker_host)

    def dans(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args], cwd=ROOT,
                              env=self.env(), capture_output=True, text=True, timeout=timeout)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "upgrade_manager.cli", *args], cwd=ROOT,
                                env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def deploy(self, admin_port: int) -> None:
        done = self.dans("deploy", "-f", str(self.file(self.version)), "--stack", self.name,
                         "--lb-image", self.cluster.lb_image, "--lb-admin-port",
                         str(admin_port), "--lb-replicas", "3", "--wait", "--timeout", "300")
        assert done.returncode == 0, done.stdout + done.stderr
        for url in self.urls():
            wait_until(functools.partial(serves, url), timeout=120,
                       what=f"the LB answering at {url}")

    def urls(self) -> list[str]:
        return [f"http://{node}:{self.port}/" for node in self.cluster.nodes]

    def upgrade_args(self, version: int) -> list[str]:
        return ["upgrade", "-f", str(self.file(version)), "--stack", self.name, "--json"]

    def differences(self, version: int) -> dict[str, list[str]]:
        """How the running stack differs from a fresh deploy of api `version` ({} if not)."""
        opts = Options(files=(str(self.file(version)),), stack=self.name, environ=self.env())
        running = read_running(self.gw, self.name)
        desired = desired_stack(opts, lb_settings(running, opts)).specs
        out: dict[str, list[str]] = {}
        for name in sorted(set(desired.services) | set(running.services)):
            if name not in desired.services or name not in running.services:
                out[name] = ["not in a fresh deploy" if name in running.services else "missing"]
                continue
            diffs = diff_specs(normalize(running.services[name], running.network_names),
                               normalize(desired.services[name]))
            if diffs:
                out[name] = [str(d) for d in diffs]
        for net in running.networks - set(desired.networks):
            out[f"network {net}"] = ["not in a fresh deploy"]
        return out

    def status(self) -> dict[str, Any] | None:
        done = self.dans("status", "--stack", self.name, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        upgrade: dict[str, Any] | None = json.loads(done.stdout)["upgrade"]
        return upgrade


def events_until(proc: subprocess.Popen[str], stop: Any, timeout: float = 300, *,
                 end_ok: bool = False) -> list[Any]:
    """JSON events of a spawned `dans upgrade --json` until `stop(event)` is true (the process
    keeps running), or until it ends with `end_ok` (else that is an error); a line that is not
    JSON comes as {"event": "text", "line"}."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if end_ok:
                return seen
            raise AssertionError(f"dans ended before the awaited event: {seen[-5:]}")
        try:
            event = json.loads(line)
        except ValueError:
            event = {"event": "text", "line": line.rstrip()}  # an error dans printed
        seen.append(event)
        if stop(event):
            return seen
    raise AssertionError(f"no such event in {timeout:.0f} s: {seen[-5:]}")


def finished(proc: subprocess.Popen[str], timeout: float = 600) -> list[Any]:
    """Every remaining event of a spawned dans; asserts that it finished."""
    events = events_until(proc, lambda e: e["event"] in ("finished", "failed"), timeout,
                          end_ok=True)
    proc.wait(timeout=60)
    if proc.stdout:
        proc.stdout.close()
    assert events and events[-1]["event"] == "finished", events[-5:]
    return events


def kill(proc: subprocess.Popen[str]) -> None:
    """kill -9, as a crash or an OOM kill would."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stdout:
        proc.stdout.close()


class Loads:
    """One paced load per node address, in the order of the cluster's nodes."""

    def __init__(self, urls: list[str], changed: set[str], new: str) -> None:
        self.loads = [Load(u, changed, new=new, threads=2, limit=420.0, max_requests=20_000,
                           rate=RATE) for u in urls]
        self.t0 = time.monotonic()

    def steady(self) -> None:
        for load in self.loads:
            wait_until(functools.partial(_at_least, load, "ok-old", 10), timeout=60,
                       what=f"steady load through {load.url}", describe=load.summary)

    def wait_new(self, indices: list[int], timeout: float = 90) -> None:
        """Wait until the loads through these nodes got answers wholly at the new version."""
        for i in indices:
            load = self.loads[i]
            wait_until(functools.partial(_at_least, load, "ok-new", 10), timeout=timeout,
                       what=f"new answers through {load.url}", describe=load.summary)

    def finish(self) -> list[dict[str, Any]]:
        stats = [load.finish() for load in self.loads]
        for s in stats:
            s["seconds"] = round(time.monotonic() - self.t0, 1)
        return stats


def _at_least(load: Load, kind: str, n: int) -> bool:
    return load.count(kind) >= n


def report(name: str, stats: list[dict[str, Any]], timings: dict[str, float]) -> str:
    """One line for the note: the counts through each node, the timings."""
    per_node = "; ".join(f"node{i + 1} ok={s['ok']} new={s['new']} failed={s['failed']} "
                         f"mixed={s['mixed']}" + (f" errors={s['errors']}" if s["errors"] else "")
                         for i, s in enumerate(stats))
    times = ", ".join(f"{k}={v:.1f}s" for k, v in timings.items())
    line = f"FAULT {name}: {per_node} | {times}"
    print("\n" + line)
    return line
