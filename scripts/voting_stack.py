"""The voting app under dans, for the demo and the benchmarks: its load generator, the dans
CLI, removing a stack, and a bounded background load.

Shared by `scripts/demo.py` and `scripts/bench_availability.py` (not a test module: it
drives the real swarm through the `dans` CLI as a user would).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "voting-app"
STACKS = APP / "stacks"
SCENARIOS = ("change-api", "add-api", "candidates")

__all__ = ["APP", "ROOT", "SCENARIOS", "STACKS", "Load", "dans", "loadgen", "remove_stack",
           "stack_env", "wait_serving"]


def loadgen() -> ModuleType:
    """`examples/voting-app/loadgen.py` (not a package: loaded from its path)."""
    if "loadgen" in sys.modules:
        return sys.modules["loadgen"]
    spec = importlib.util.spec_from_file_location("loadgen", APP / "loadgen.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["loadgen"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def stack_env(*, vote_port: int, result_port: int, endpoint_mode: str = "dnsrr",
              port_mode: str = "host", replicas: int | None = None) -> dict[str, str]:
    """The environment the voting stacks interpolate (this harness has no IPVS: dnsrr
    endpoints and host-mode ports work everywhere); `replicas` of vote and worker."""
    out = {**os.environ, "ENDPOINT_MODE": endpoint_mode, "PORT_MODE": port_mode,
           "VOTE_PORT": str(vote_port), "RESULT_PORT": str(result_port)}
    if replicas is not None:
        out |= {"VOTE_REPLICAS": str(replicas), "WORKER_REPLICAS": str(replicas)}
    return out


def dans(env: dict[str, str], *argv: str, quiet: bool = False,
         on_line: Callable[[str], None] | None = None, timeout: float = 1200) -> float:
    """Run the dans CLI (this checkout's), fail loudly; returns its duration in seconds.

    Output is streamed unless `quiet`; `on_line` gets every stdout line as it comes.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "upgrade_manager.cli", *argv], env=env,
                            cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if on_line:
            on_line(line)
        if not quiet:
            sys.stdout.write(line)
    code = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - t0)))
    if code != 0:
        if quiet:
            sys.stderr.write("".join(lines[-40:]))
        sys.exit(f"`dans {' '.join(argv)}` failed with exit code {code}")
    return time.monotonic() - t0


def _docker(*argv: str) -> list[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True).stdout.split()


def remove_stack(name: str, *, volume: bool = True, say: Callable[[str], None] = print) -> None:
    """Remove a stack (and its database volume), waiting until its tasks and networks are
    gone (at most two minutes)."""
    if name not in _docker("stack", "ls", "--format", "{{.Name}}"):
        return
    say(f"removing stack {name}")
    subprocess.run(["docker", "stack", "rm", name], check=True, capture_output=True)
    label = f"label=com.docker.stack.namespace={name}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not _docker("ps", "-aq", "--filter", label) and \
                not _docker("network", "ls", "-q", "--filter", label):
            break
        time.sleep(1)
    if volume:
        subprocess.run(["docker", "volume", "rm", f"{name}_db-data"], capture_output=True)


def wait_serving(url: str, *, timeout: float = 90.0) -> None:
    """Wait until a vote through the LB succeeds (the LB resolves its backends in a second
    or two after the deploy)."""
    lg = loadgen()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = asyncio.run(lg.run_load(url, concurrency=1, duration=1, max_requests=1))
        if probe["ok"]:
            return
        time.sleep(1)
    sys.exit(f"no vote succeeded through {url} within {timeout:.0f} s")


class Load:
    """Requests through the LB in a background thread until stopped (at most `limit` s).

    Keyword arguments go to `loadgen.run_load` (e.g. `page=True`, `interval`, `on_request`).
    """

    def __init__(self, url: str, concurrency: int, limit: float, **kw: Any) -> None:
        self.stop = threading.Event()
        self.result: dict[str, Any] = {}
        lg = loadgen()

        def run() -> None:
            self.result = asyncio.run(lg.run_load(url, concurrency=concurrency,
                                                  duration=limit, max_requests=500_000,
                                                  stop=self.stop, **kw))

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> dict[str, Any]:
        """Stop and return loadgen's report."""
        self.stop.set()
        self.thread.join(timeout=60)
        return self.result
