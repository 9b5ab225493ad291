#!/usr/bin/env python3
"""The voting-app demo: deploy v1 with dans, upgrade it under steady load, count failures.

    python scripts/demo.py [--scenario change-api|add-api|candidates]
                           [--strategy dans|rolling|isolated|delayed] [--compare] [--json] [--keep]

Each run deploys `examples/voting-app/stacks/v1.yml` as a fresh stack with `dans deploy`,
sends steady votes through the stack's LB (loopback only, bounded in time and count),
measures a steady-state window, runs `dans upgrade` to the scenario's v2 file, keeps the load
a few seconds after it returns, and prints ok / failed / mixed-version counts, the upgrade's
duration and latency during the upgrade against steady state. `--compare` does this once per
strategy and prints a table. The demo removes its stack (and the database volume) when it
ends, however it ends; `--keep` leaves it running for you to look at and prints the command
that removes it. A stack of another name that holds one of the demo's ports stops the demo
with a message naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from voting_stack import APP, SCENARIOS, Load, dans, loadgen, remove_stack, stack_env

STACK = "dans-demo"
STRATEGIES = ("dans", "rolling", "isolated", "delayed")


def env(args: argparse.Namespace) -> dict[str, str]:
    return stack_env(vote_port=args.vote_port, result_port=args.result_port,
                     endpoint_mode=args.endpoint_mode, port_mode=args.port_mode)


def check_ports(args: argparse.Namespace) -> None:
    """Stop with a clear message when a service outside the demo holds one of its ports."""
    import docker

    api = docker.APIClient()
    try:
        services = api.services()
    finally:
        api.close()
    wanted = {args.vote_port, args.result_port, args.admin_port}
    for svc in services:
        name = svc["Spec"]["Name"]
        stack = (svc["Spec"].get("Labels") or {}).get("com.docker.stack.namespace", "")
        if stack == STACK:
            continue  # the previous demo's: removed before the deploy
        for port in (svc.get("Endpoint") or {}).get("Ports") or []:
            if port.get("PublishedPort") in wanted:
                owner = f"stack {stack}" if stack else "it"
                sys.exit(f"demo: port {port['PublishedPort']} is held by service {name}; "
                         f"remove {owner} (docker stack rm {stack or name}) or choose other "
                         "ports with --vote-port/--result-port/--admin-port")


def run_once(args: argparse.Namespace, strategy: str) -> dict[str, Any]:
    """Deploy v1 afresh, measure steady state, upgrade under load; the figures."""
    lg = loadgen()
    url = f"http://127.0.0.1:{args.vote_port}"
    remove_stack(STACK, say=lambda m: print(f"demo: {m}"))
    print(f"demo: dans deploy v1 as stack {STACK}")
    dans(env(args), "deploy", "-f", str(APP / "stacks" / "v1.yml"), "--stack", STACK, "--wait",
         "--lb-admin-port", str(args.admin_port))
    for _ in range(60):  # the LB resolves its backends within a second or two
        probe = asyncio.run(lg.run_load(url, concurrency=1, duration=1, max_requests=1))
        if probe["ok"]:
            break
        time.sleep(1)
    print(f"demo: steady load for {args.steady:.0f} s ({args.concurrency} voters)")
    steady = asyncio.run(lg.run_load(url, concurrency=args.concurrency, duration=args.steady,
                                     max_requests=500_000))
    load = Load(url, args.concurrency, limit=900)
    time.sleep(2)
    print(f"demo: dans upgrade to {args.scenario} (strategy {strategy}) under load")
    seconds = dans(env(args), "upgrade", "-f", str(APP / "stacks" / f"{args.scenario}.yml"),
                   "--stack", STACK, "--strategy", strategy)
    time.sleep(3)
    during = load.finish()
    return {
        "strategy": strategy, "scenario": args.scenario, "upgrade_s": round(seconds, 1),
        "ok": during["ok"], "failed": during["failed"], "mixed": during["mixed"],
        "steady_p50_ms": steady["p50_ms"], "steady_p99_ms": steady["p99_ms"],
        "during_p50_ms": during["p50_ms"], "during_p99_ms": during["p99_ms"],
        "during_max_ms": during["max_ms"], "errors": during["errors"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="change-api", choices=SCENARIOS)
    parser.add_argument("--strategy", default="dans", choices=STRATEGIES)
    parser.add_argument("--compare", action="store_true", help="run every strategy")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--steady", type=float, default=10.0, help="seconds of steady load")
    parser.add_argument("--vote-port", type=int, default=8080)
    parser.add_argument("--result-port", type=int, default=8081)
    parser.add_argument("--admin-port", type=int, default=9900)
    parser.add_argument("--endpoint-mode", default="dnsrr", choices=["dnsrr", "vip"])
    parser.add_argument("--port-mode", default="host", choices=["host", "ingress"])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="leave the upgraded stack running instead of removing it")
    args = parser.parse_args()
    strategies = list(STRATEGIES) if args.compare else [args.strategy]
    check_ports(args)
    try:
        rows = [run_once(args, s) for s in strategies]
    finally:
        if not args.keep:
            remove_stack(STACK, say=lambda m: print(f"demo: {m}"))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print()
        head = (f"{'strategy':<9} {'upgrade s':>9} {'ok':>7} {'failed':>7} {'mixed':>6} "
                f"{'p50 steady/during ms':>21} {'p99 steady/during ms':>21}")
        print(head)
        for r in rows:
            print(f"{r['strategy']:<9} {r['upgrade_s']:>9} {r['ok']:>7} {r['failed']:>7} "
                  f"{r['mixed']:>6} {r['steady_p50_ms']:>10}/{r['during_p50_ms']:<10} "
                  f"{r['steady_p99_ms']:>10}/{r['during_p99_ms']:<10}")
    out = sys.stderr if args.json else sys.stdout
    if args.keep:
        print(f"\nThe stack is still running: vote at http://127.0.0.1:{args.vote_port}, "
              f"results at http://127.0.0.1:{args.result_port}.\nRemove it with "
              f"`docker stack rm {STACK} && docker volume rm {STACK}_db-data`.", file=out)
    else:
        print(f"\nStack {STACK} removed (run with --keep to leave it running).", file=out)
    return 0 if all(r["failed"] == 0 and r["mixed"] == 0 for r in rows
                    if r["strategy"] == "dans") else 1


if __name__ == "__main__":
    sys.exit(main())
