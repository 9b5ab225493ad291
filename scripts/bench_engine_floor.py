#!/usr/bin/env python3
"""The engine's own floor for the upgrade benchmark's services, without dans.

    python scripts/bench_engine_floor.py [--services 21] [--services 4]

An upgrade by the network method has four engine phases on its critical path: start the
new copies, stop the old chain, start the canonical services at their new spec, stop the
copies. This script times each of them with the plain docker CLI for N services of the
benchmark's app (tests/upgrade/chainapp.py, same health probe), so `bench_upgrade.py`'s
step times can be read against what the engine alone needs on this machine:

- create: N services created side by side, until every task runs (healthy);
- scale to 0: until no container of them is left;
- scale to 1: until every task runs again;
- remove: until no container is left.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.upgrade.chainapp import APP, PROBE  # noqa: E402 - after the path set-up
from upgrade_manager.gateway import Gateway  # noqa: E402 - after the path set-up
from upgrade_manager.lb_image import ensure_lb_image, source_tag  # noqa: E402 - after the path set-up

LABEL = "dans.bench.floor"


def sh(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True,
                          timeout=120).stdout


def side_by_side(fn: Callable[[str], object], items: Iterable[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(fn, items))


def wait(condition: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit("bench: the engine did not get there in time")
        time.sleep(0.3)


def phases(prefix: str, count: int, image: str) -> dict[str, float]:
    names = [f"{prefix}_s{i:02d}" for i in range(count)]

    def replicas() -> list[str]:
        return sh("docker", "service", "ls", "--filter", f"label={LABEL}={prefix}",
                  "--format", "{{.Replicas}}").split()

    def containers() -> str:
        return sh("docker", "ps", "-q", "--filter", f"name={prefix}_").strip()

    def timed(action: Callable[[str], object], done: Callable[[], bool]) -> float:
        t0 = time.monotonic()
        side_by_side(action, names)
        wait(done)
        return round(time.monotonic() - t0, 1)

    probe = PROBE.replace("$$0", "8000")
    out = {"create": timed(lambda n: sh(
        "docker", "service", "create", "--detach", "--name", n, "--label", f"{LABEL}={prefix}",
        "--network", f"{prefix}_net", "--endpoint-mode", "dnsrr",
        "--health-cmd", f"bash -c '{probe}'", "--health-interval", "1s",
        "--health-retries", "3", "--health-start-period", "30s", "--entrypoint", "python3",
        image, "-c", APP, n, "1", "0", "8000"), lambda: replicas().count("1/1") == count)}
    out["scale to 0"] = timed(lambda n: sh("docker", "service", "scale", "--detach", f"{n}=0"),
                              lambda: not containers())
    out["scale to 1"] = timed(lambda n: sh("docker", "service", "scale", "--detach", f"{n}=1"),
                              lambda: replicas().count("1/1") == count)
    out["remove"] = timed(lambda n: sh("docker", "service", "rm", n), lambda: not containers())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, action="append",
                        help="how many services (repeatable; default 21 and 4)")
    args = parser.parse_args()
    gw = Gateway.from_env()
    gw.require_manager()
    image = source_tag()
    ensure_lb_image(image, gateway=gw)  # the LB image has the app's python3 and bash
    print(f"{'services':>8} {'create s':>9} {'scale to 0 s':>13} {'scale to 1 s':>13} "
          f"{'remove s':>9} {'sum s':>7}")
    for count in args.services or [21, 4]:
        prefix = f"dfloor{int(time.time() * 1000) % 100000}"
        sh("docker", "network", "create", "--driver", "overlay", "--label",
           f"{LABEL}={prefix}", f"{prefix}_net")
        try:
            p = phases(prefix, count, image)
        finally:
            for sid in sh("docker", "service", "ls", "-q", "--filter",
                          f"label={LABEL}={prefix}").split():
                subprocess.run(["docker", "service", "rm", sid], capture_output=True)
            wait(lambda: subprocess.run(["docker", "network", "rm", f"{prefix}_net"],  # noqa: B023
                                        capture_output=True).returncode == 0, timeout=120)
        print(f"{count:>8} {p['create']:>9} {p['scale to 0']:>13} {p['scale to 1']:>13} "
              f"{p['remove']:>9} {sum(p.values()):>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
