"""Deploying the voting app's stack files on the test swarm, and loading them with loadgen.

Stacks are deployed with the docker CLI, as a user would (`docker stack deploy`), with the
interpolation the test swarm needs: dnsrr endpoints, host-mode ports, and the edge stand-in
for the routing mesh (examples/voting-app/stacks/edge.yml) on two free host ports.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.support import free_port, wait_until
from upgrade_manager.gateway import Gateway, task_summary

APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "voting-app"
STACKS = APP_DIR / "stacks"
SERVICES = ("vote", "worker", "result", "db")


def never_healthy_worker(where: Path) -> Path:
    """The change-api file with a worker whose health probe always fails, written in `where`."""
    import yaml  # only the tests that need the file pay for it

    broken = yaml.safe_load((STACKS / "change-api.yml").read_text())
    broken["services"]["worker"]["healthcheck"] = {
        "test": ["CMD", "false"], "interval": "1s", "timeout": "1s", "retries": 1}
    path = where / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    return path


def load_loadgen() -> ModuleType:
    """examples/voting-app/loadgen.py as a module (the directory is not a package)."""
    name = "voting_app_loadgen"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, APP_DIR / "loadgen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def http(method: str, url: str, body: dict[str, Any] | None = None,
         timeout: float = 5.0) -> tuple[int, dict[str, Any], str]:
    """(status, JSON body, X-Served-By) of one request; HTTP errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), resp.headers.get(
                "X-Served-By", "")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"raw": raw.decode(errors="replace")}
        return exc.code, parsed, exc.headers.get("X-Served-By", "")


@dataclass
class VotingStack:
    """One deployed voting-app stack, reachable through its edge on 127.0.0.1."""

    gateway: Gateway
    name: str
    replicas: int = 2
    vote_port: int = field(default_factory=free_port)
    result_port: int = field(default_factory=free_port)

    @property
    def vote_url(self) -> str:
        """Where loadgen and voters go."""
        return f"http://127.0.0.1:{self.vote_port}"

    @property
    def result_url(self) -> str:
        """Where the tallies are."""
        return f"http://127.0.0.1:{self.result_port}"

    def env(self) -> dict[str, str]:
        """The interpolation the test swarm needs."""
        return {
            **os.environ,
            "ENDPOINT_MODE": "dnsrr",
            "PORT_MODE": "host",
            "VOTE_PORT": "0",
            "RESULT_PORT": "0",
            "EDGE_VOTE_PORT": str(self.vote_port),
            "EDGE_RESULT_PORT": str(self.result_port),
            "VOTE_REPLICAS": str(self.replicas),
            "WORKER_REPLICAS": str(self.replicas),
        }

    def deploy(self, version: str) -> None:
        """`docker stack deploy` of stacks/VERSION.yml (plus the edge), returning at once."""
        cmd = ["docker", "stack", "deploy", "--resolve-image", "never", "--detach=true",
               "-c", str(STACKS / f"{version}.yml"), "-c", str(STACKS / "edge.yml"), self.name]
        done = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}"

    def service(self, short: str) -> str:
        """The full name of a service of this stack."""
        return f"{self.name}_{short}"

    def image(self, short: str) -> str:
        """The image a service's spec asks for now."""
        spec = self.gateway.inspect_service(self.service(short))["Spec"]
        return str(spec["TaskTemplate"]["ContainerSpec"]["Image"])

    def wait_rolled(self, shorts: tuple[str, ...] = (*SERVICES, "edge"),
                    timeout: float = 240.0) -> None:
        """Wait until each service runs only healthy tasks of its current spec's image."""
        for short in shorts:
            name, image = self.service(short), self.image(short)

            def done(name: str = name, image: str = image) -> bool:
                live = self.gateway.tasks(name, desired_running=True)
                same = all(t["Spec"]["ContainerSpec"]["Image"] == image for t in live)
                return same and self.gateway.service_state(name).converged

            def describe(name: str = name) -> str:
                return "\n".join(task_summary(t) for t in self.gateway.tasks(name)[:6])

            wait_until(done, timeout=timeout, interval=1.0, what=f"{name} to run {image}",
                       describe=describe)

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Wait until a vote goes through the edge and the results answer."""
        def ok() -> bool:
            status, _, _ = http("POST", f"{self.vote_url}/api/vote",
                                {"voter_id": "probe", "vote": "a"})
            return status == 200 and http("GET", f"{self.result_url}/api/results")[0] == 200
        wait_until(lambda: _quietly(ok), timeout=timeout, interval=1.0,
                   what=f"stack {self.name} to serve votes")


def _quietly(check: Any) -> bool:
    try:
        return bool(check())
    except OSError:
        return False


class Load:
    """loadgen.run_load in a background thread, stopped on demand (bounded in time anyway)."""

    def __init__(self, url: str, concurrency: int = 8, max_duration: float = 240.0) -> None:
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1)
        run_load = load_loadgen().run_load
        self.started = time.monotonic()
        self._future: Future[dict[str, Any]] = self._pool.submit(
            asyncio.run, run_load(url, concurrency, max_duration, 200_000, stop=self._stop)
        )

    def stop(self) -> dict[str, Any]:
        """Stop the voters and return loadgen's report."""
        self._stop.set()
        try:
            return self._future.result(timeout=60)
        finally:
            self._pool.shutdown(wait=True)


_CALL = """
import json, sys, urllib.error, urllib.request
method, url, data = sys.argv[1], sys.argv[2], sys.argv[3].encode() or None
req = urllib.request.Request(url, data=data, method=method,
                             headers={"Content-Type": "application/json"})
try:
    resp = urllib.request.urlopen(req, timeout=5)
except urllib.error.HTTPError as exc:
    resp = exc
print(json.dumps([resp.status, resp.headers.get("X-Served-By", ""), resp.read().decode()]))
"""


def call_inside(stack: VotingStack, method: str, url: str,
                body: dict[str, Any] | str | None = None) -> tuple[int, str, str]:
    """(status, X-Served-By, body text) of a request made from inside one of the stack's vote
    containers, to reach what is published nowhere (the worker: http://worker:8080/...)."""
    tasks = stack.gateway.tasks(stack.service("vote"), desired_running=True)
    running = [t for t in tasks if t["Status"]["State"] == "running"]
    assert running, "no running vote task"
    container = running[0]["Status"]["ContainerStatus"]["ContainerID"]
    data = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
    done = subprocess.run(["docker", "exec", container, "python3", "-c", _CALL, method, url, data],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status, chain, text = json.loads(done.stdout)
    return int(status), str(chain), str(text)
