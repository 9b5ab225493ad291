#!/usr/bin/env python3
"""Upgrade speed and safety under load: `dans upgrade` against `--strategy rolling`.

    python scripts/bench_upgrade.py [--stacks chain,fanout,deep] [--strategies dans,rolling]

Three stacks of the kind strangers bring (every callee URL in the code, no `x-dans` key;
tests/upgrade/chainapp.py), each service strict about its callers' version, as an
incompatible API change is:
- chain: front -> api -> store, front and api change, store does not;
- fanout: one entry calling 20 services, all 21 change;
- deep: a 10-deep chain, every service changes.
Each (stack, strategy) is deployed afresh with `dans deploy`, loaded through its LB from 4
threads at a fixed offered rate (`--rate`, the same for every run; loopback only, bounded in
count and time), upgraded, and removed. Printed per run:
seconds from the upgrade's start until every answer is a consistent new-version one ("v2
after"), seconds until the upgrade command returned with the stack clean ("clean after"),
ok / failed / mixed answers; then the ratios dans / rolling in this one run.
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
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import Names, free_port, wait_until  # noqa: E402 - after the path set-up
from tests.upgrade.chainapp import Load, Service, serves, stack_document  # noqa: E402 - after the path set-up
from upgrade_manager.gateway import Gateway  # noqa: E402 - after the path set-up
from upgrade_manager.lb_image import ensure_lb_image, source_tag  # noqa: E402 - after the path set-up


def stacks(version: str) -> dict[str, tuple[dict[str, Service], str, set[str]]]:
    """Each benchmark stack at `version`: (services, entry, the changed services)."""
    fan = [f"s{i:02d}" for i in range(1, 21)]
    deep = [f"d{i}" for i in range(10)]
    return {
        "chain": ({"front": Service(calls=("api",), version=version, strict=True, replicas=2),
                   "api": Service(calls=("store",), version=version, strict=True, replicas=2),
                   "store": Service()}, "front", {"front", "api"}),
        "fanout": ({"entry": Service(calls=tuple(fan), version=version, strict=True),
                    **{s: Service(version=version, strict=True) for s in fan}},
                   "entry", {"entry", *fan}),
        "deep": ({d: Service(calls=(deep[i + 1],) if i + 1 < len(deep) else (),
                             version=version, strict=True) for i, d in enumerate(deep)},
                 "d0", set(deep)),
    }


def dans(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=1200)


def write(where: Path, name: str, kind: str, version: str, image: str, port: int) -> Path:
    services, entry, _ = stacks(version)[kind]
    path = where / f"{name}-{version}.yml"
    path.write_text(yaml.safe_dump(stack_document(services, image, entry, port)))
    return path


def step_times(output: str) -> dict[str, float]:
    """Seconds per step from `dans upgrade`'s progress lines ("N/M kind target", "ok (Xs)")."""
    times, current = {}, None
    for line in output.splitlines():
        words = line.split("] ", 1)[-1].split()
        if len(words) >= 3 and "/" in words[0]:
            current = f"{words[1]} {words[2]}"
        elif current and words[:1] == ["ok"]:
            times[current] = float(words[1].strip("(s)"))
            current = None
    return times


def run_one(gw: Gateway, image: str, kind: str, strategy: str, where: Path,
            rate: float) -> dict[str, Any]:
    """Deploy v1, upgrade to v2 under load with `strategy`, remove; the figures."""
    names = Names(gw, "bench")
    stack, port = names(kind[:5]), free_port()
    try:
        v1 = write(where, stack, kind, "1", image, port)
        v2 = write(where, stack, kind, "2", image, port)
        done = dans("deploy", "-f", str(v1), "--stack", stack, "--lb-image", image,
                    "--lb-admin-port", str(free_port()), "--wait")
        if done.returncode != 0:
            sys.exit(f"bench: deploy failed: {done.stderr or done.stdout}")
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: serves(url), timeout=120, what=f"{kind} through the LB")
        load = Load(url, changed=stacks("2")[kind][2], limit=900, rate=rate)
        wait_until(lambda: load.count("ok-old") >= 20, timeout=60, what="steady load")
        t0 = time.monotonic()
        done = dans("upgrade", "-f", str(v2), "--stack", stack, "--strategy", strategy)
        t_clean = time.monotonic() - t0
        if done.returncode != 0:
            load.finish()
            sys.exit(f"bench: upgrade failed: {done.stderr or done.stdout}")
        wait_until(lambda: load.count("ok-new") >= 50, timeout=120, what="v2 answers")
        time.sleep(2)  # a tail of answers after the last change
        stats = load.finish()
        since = load.all_new_since()
        return {"stack": kind, "strategy": strategy,
                "v2_after_s": round(since - t0, 1) if since is not None else None,
                "clean_after_s": round(t_clean, 1), **{k: stats[k] for k in
                                                       ("ok", "failed", "mixed")},
                "errors": stats["errors"], "steps": step_times(done.stdout)}
    finally:
        names.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", default="chain,fanout,deep")
    parser.add_argument("--strategies", default="dans,rolling")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="requests per second offered over the 4 load threads, the same "
                        "for every run (0: each thread sends its next request at once, which "
                        "on a small machine lets the load starve the engine; default 20)")
    args = parser.parse_args()
    gw = Gateway.from_env()
    gw.require_manager()
    image = source_tag()
    ensure_lb_image(image, gateway=gw)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dans-bench-") as tmp:
        for kind in args.stacks.split(","):
            for strategy in args.strategies.split(","):
                print(f"bench: {kind} with {strategy} ...", file=sys.stderr, flush=True)
                rows.append(run_one(gw, image, kind, strategy, Path(tmp), args.rate))
                print(f"bench:   {rows[-1]}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'stack':<7} {'strategy':<8} {'v2 after s':>10} {'clean after s':>13} "
          f"{'ok':>7} {'failed':>7} {'mixed':>6}")
    for r in rows:
        print(f"{r['stack']:<7} {r['strategy']:<8} {r['v2_after_s']!s:>10} "
              f"{r['clean_after_s']:>13} {r['ok']:>7} {r['failed']:>7} {r['mixed']:>6}")
    by = {(r["stack"], r["strategy"]): r for r in rows}
    for kind in args.stacks.split(","):
        d, r = by.get((kind, "dans")) or {}, by.get((kind, "rolling")) or {}
        if d and r and d["v2_after_s"] and r["v2_after_s"]:
            print(f"{kind}: dans/rolling v2 after {d['v2_after_s'] / r['v2_after_s']:.2f}x, "
                  f"clean after {d['clean_after_s'] / r['clean_after_s']:.2f}x")
    if by.get(("fanout", "dans")) and by.get(("chain", "dans")):
        ratio = by["fanout", "dans"]["clean_after_s"] / by["chain", "dans"]["clean_after_s"]
        print(f"fanout/chain (dans, clean after): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
