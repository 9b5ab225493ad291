"""The voting app deployed and upgraded with the `dans` command, under load through its LB."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import wait_until
from tests.voting_app.stacks import STACKS, free_port, http, load_loadgen
from upgrade_manager.diff import diff_specs, normalize
from upgrade_manager.gateway import Gateway
from upgrade_manager.managed import ManagedStack
from upgrade_manager.upgrade import Options, desired_stack, lb_settings, read_running

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DansStack:
    """One voting-app stack managed by dans on the test swarm."""

    gateway: Gateway
    name: str
    lb_image: str
    replicas: int = 2
    vote_port: int = field(default_factory=free_port)
    result_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)

    def env(self) -> dict[str, str]:
        """The interpolation the test swarm needs (dnsrr, host ports), for every command."""
        return {
            **os.environ,
            "ENDPOINT_MODE": "dnsrr",
            "PORT_MODE": "host",
            "VOTE_PORT": str(self.vote_port),
            "RESULT_PORT": str(self.result_port),
            "VOTE_REPLICAS": str(self.replicas),
            "WORKER_REPLICAS": str(self.replicas),
        }

    def file(self, version: str) -> str:
        """The stack file of a version, or a path given as is."""
        path = Path(version)
        return str(path if path.is_absolute() else STACKS / f"{version}.yml")

    def dans(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the `dans` CLI as a user would, in a process of its own."""
        return subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args],
                              env=self.env(), cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """Start the `dans` CLI without waiting for it."""
        return subprocess.Popen([sys.executable, "-m", "upgrade_manager.cli", *args],
                                env=self.env(), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def deploy(self, version: str) -> None:
        """`dans deploy` of a version, waiting until it serves through the LB."""
        done = self.dans("deploy", "-f", self.file(version), "--stack", self.name,
                         "--lb-image", self.lb_image, "--lb-admin-port", str(self.admin_port),
                         "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        self.wait_serving()

    def upgrade(self, version: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """`dans upgrade` to a version."""
        return self.dans("upgrade", "-f", self.file(version), "--stack", self.name, *extra)

    def wait_serving(self, timeout: float = 90.0) -> None:
        """Wait until a vote and the results go through the LB."""
        def ok() -> bool:
            try:
                vote = http("POST", f"http://127.0.0.1:{self.vote_port}/api/vote",
                            {"voter_id": "probe", "vote": "a"})[0]
                result = http("GET", f"http://127.0.0.1:{self.result_port}/api/results")[0]
            except OSError:
                return False
            return vote == 200 and result == 200
        wait_until(ok, timeout=timeout, interval=1.0, what=f"stack {self.name} to serve")

    def desired(self, version: str) -> ManagedStack:
        """What a fresh `dans deploy` of `version` would create for this stack."""
        opts = Options(files=(self.file(version),), stack=self.name, environ=self.env())
        return desired_stack(opts, lb_settings(read_running(self.gateway, self.name), opts))

    def differences(self, version: str) -> dict[str, list[str]]:
        """Per service, how the running stack differs from a fresh deploy of `version`.

        Temporary services, relays and generation networks carry the stack label, so any
        left behind shows up as "not in a fresh deploy".
        """
        desired = self.desired(version).specs
        running = read_running(self.gateway, self.name)
        out: dict[str, list[str]] = {}
        for name in sorted(set(desired.services) | set(running.services)):
            if name not in desired.services:
                out[name] = ["not in a fresh deploy"]
                continue
            if name not in running.services:
                out[name] = ["missing"]
                continue
            diffs = diff_specs(normalize(running.services[name], running.network_names),
                               normalize(desired.services[name]))
            if diffs:
                out[name] = [str(d) for d in diffs]
        for net in running.networks - set(desired.networks):
            out[f"network {net}"] = ["not in a fresh deploy"]
        return out

    def task_ids(self, short: str) -> set[str]:
        """IDs of the tasks meant to run for a service now."""
        return {t["ID"] for t in self.gateway.tasks(f"{self.name}_{short}",
                                                    desired_running=True)}


class Load:
    """Steady votes through the LB in a background thread, bounded in time and count."""

    def __init__(self, url: str, concurrency: int = 4, limit_s: float = 420.0) -> None:
        self.stop = threading.Event()
        self.result: dict[str, Any] = {}
        loadgen = load_loadgen()

        def run() -> None:
            self.result = asyncio.run(loadgen.run_load(
                url, concurrency=concurrency, duration=limit_s, max_requests=200_000,
                stop=self.stop))

        self.thread = threading.Thread(target=run, name="load", daemon=True)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def finish(self) -> dict[str, Any]:
        """Stop the load and return loadgen's report."""
        self.__exit__()
        assert self.result, "the load generator produced no report"
        return self.result
