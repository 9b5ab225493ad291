#!/usr/bin/env python3
"""The latency one waypoint hop adds: the same calls, direct and through the waypoint.

    python scripts/bench_waypoint.py [--requests 1500] [--rate 100] [--threads 4] [--rounds 3]

Deploys front -> api (tests/upgrade/chainapp.py, api at 2 replicas, dnsrr) with
`dans deploy --mesh`, so `api` names api's waypoint while `STACK_api` still names the real
tasks. From inside front's container (a project container on the stack's own network) it
sends GETs to `http://STACK_api:8000/` (direct) and `http://api:8000/` (through the
waypoint), interleaved in rounds, at a fixed offered rate (`--rate` requests/s over
`--threads` threads: a moderate load, bounded in count and time), one new connection per call
as the app does. Prints p50 / p90 / p99 per path, the difference, and the waypoint's own count
of the calls. Removes the stack at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.mesh.waypoints import hop_requests, waypoint_metrics  # noqa: E402 - after the path set-up
from tests.support import Names, free_port, wait_until  # noqa: E402 - after the path set-up
from tests.upgrade.chainapp import Service, serves, stack_document  # noqa: E402 - after the path set-up
from upgrade_manager.gateway import Gateway  # noqa: E402 - after the path set-up
from upgrade_manager.lb_image import ensure_lb_image, source_tag  # noqa: E402 - after the path set-up

# Runs inside front's container: python3 -c CLIENT URL REQUESTS THREADS RATE
CLIENT = """
import json, sys, threading, time, urllib.request
url, total, threads, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
period, lat, lock = threads / rate, [], threading.Lock()
deadline = time.monotonic() + 120
def run():
    due = time.monotonic()
    for _ in range(total // threads):
        due = max(due + period, time.monotonic())
        time.sleep(max(0.0, due - time.monotonic()))
        if time.monotonic() > deadline:
            return
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                r.read()
            ok = True
        except OSError:
            ok = False
        with lock:
            lat.append(time.perf_counter() - t0 if ok else None)
ts = [threading.Thread(target=run) for _ in range(threads)]
[t.start() for t in ts]
[t.join() for t in ts]
print(json.dumps(lat))
"""


def dans(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=600)


def pct(values: list[float], q: float) -> float:
    return 1000 * values[min(len(values) - 1, int(q * len(values)))]


def container_of(gw: Gateway, service: str) -> str:
    for task in gw.tasks(service, desired_running=True):
        cid = task["Status"].get("ContainerStatus", {}).get("ContainerID")
        if cid and task["Status"]["State"] == "running":
            return str(cid)
    raise SystemExit(f"no running task of {service}")


def measure(cid: str, url: str, args: argparse.Namespace) -> list[float | None]:
    done = subprocess.run(["docker", "exec", cid, "python3", "-c", CLIENT, url,
                           str(args.requests // args.rounds), str(args.threads), str(args.rate)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"the client failed: {done.stderr}")
    return list(json.loads(done.stdout))


def deploy(gw: Gateway, stack: str, image: str, where: Path) -> None:
    services = {"front": Service(calls=("api",), extra={
                    "x-dans": {"calls": ["api"]}, "environment": {"API_URL": "http://api:8000/"}}),
                "api": Service(replicas=2, extra={"x-dans": {"calls": []}})}
    port = free_port()
    path = where / "stack.yml"
    path.write_text(yaml.safe_dump(stack_document(services, image, "front", port)))
    done = dans("deploy", "-f", str(path), "--stack", stack, "--lb-image", image,
                "--lb-admin-port", str(free_port()), "--mesh", "--wait")
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    wait_until(lambda: serves(f"http://127.0.0.1:{port}/"), timeout=120, what="front")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="per path, all rounds")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s while measuring")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    gw = Gateway.from_env()
    names = Names(gw, "benchwp")
    image = source_tag()
    ensure_lb_image(image, gateway=gw)
    stack = names("wp")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            deploy(gw, stack, image, Path(tmp))
        cid = container_of(gw, f"{stack}_front")
        paths = {"direct": f"http://{stack}_api:8000/", "waypoint": "http://api:8000/"}
        got: dict[str, list[float | None]] = {p: [] for p in paths}
        started = time.monotonic()
        for _ in range(args.rounds):
            for name, url in paths.items():
                got[name] += measure(cid, url, args)
        counted = hop_requests(waypoint_metrics(gw, f"{stack}_dans-wp-api"), "api")
        report(got, counted, args, time.monotonic() - started)
    finally:
        names.cleanup()
        gw.close()


def report(got: dict[str, list[float | None]], counted: float, args: argparse.Namespace,
           seconds: float) -> None:
    print(f"waypoint hop, {args.rate:.0f} req/s offered, {args.threads} threads, "
          f"{args.rounds} interleaved rounds, {seconds:.0f} s")
    print(f"{'path':<10}{'calls':>7}{'failed':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    rows = {}
    for name, values in got.items():
        ok = sorted(v for v in values if v is not None)
        rows[name] = (pct(ok, 0.5), pct(ok, 0.9), pct(ok, 0.99))
        print(f"{name:<10}{len(values):>7}{len(values) - len(ok):>8}"
              + "".join(f"{x:>9.2f}" for x in rows[name]))
    added = [w - d for w, d in zip(rows["waypoint"], rows["direct"], strict=True)]
    print(f"{'added':<10}{'':>15}" + "".join(f"{x:>9.2f}" for x in added))
    print(f"the waypoint counted {counted:.0f} calls "
          f"(sent through it: {len(got['waypoint'])})")


if __name__ == "__main__":
    main()
