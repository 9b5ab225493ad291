"""Reading a waypoint on the real swarm: its metrics, from inside its own container."""

from __future__ import annotations

import subprocess

from upgrade_manager.gateway import Gateway

READ = ("import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:15090/metrics', timeout=5).read().decode())")


def samples(text: str) -> dict[str, float]:
    """Prometheus text as {series: value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def waypoint_metrics(gw: Gateway, service: str) -> dict[str, float]:
    """The /metrics of every running task of a waypoint service, added up."""
    total: dict[str, float] = {}
    for task in gw.tasks(service, desired_running=True):
        cid = task["Status"].get("ContainerStatus", {}).get("ContainerID")
        if not cid or task["Status"]["State"] != "running":
            continue
        done = subprocess.run(["docker", "exec", cid, "python3", "-c", READ],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        for key, value in samples(done.stdout).items():
            total[key] = total.get(key, 0.0) + value
    return total


def hop_requests(metrics: dict[str, float], callee: str, code: int = 200) -> float:
    """Calls of `callee` through its waypoint answered with `code`."""
    return metrics.get(f'dans_mesh_requests_total{{caller="-",callee="{callee}",code="{code}"}}',
                       0.0)
