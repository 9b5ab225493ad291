#!/usr/bin/env python3
"""Benchmark: load and translate a generated 500-service Compose file; print the time.

Usage: .venv/bin/python scripts/bench_translate.py [SERVICES] [--limit SECONDS]
Exits non-zero when the best of three runs is slower than the limit (default 1 s).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from compose_translator import load_project, translate


def generate(count: int) -> dict:
    """A Compose file with `count` services using the common keys, each calling the next."""
    services = {}
    for i in range(count):
        services[f"svc{i}"] = {
            "image": f"registry.example.com/team/svc{i}:1.{i}",
            "command": ["serve", "--port", "8080"],
            "environment": {"NEXT_URL": f"http://svc{(i + 1) % count}:8080", "LEVEL": "info",
                            "REPLICA": "${REPLICA:-1}"},
            "labels": {"com.example.team": f"team{i % 7}"},
            "ports": [f"{20000 + i}:8080"] if i % 10 == 0 else [],
            "networks": ["front", "back"] if i % 2 else ["back"],
            "volumes": [f"data{i % 5}:/data", "/etc/localtime:/etc/localtime:ro"],
            "secrets": ["token"],
            "healthcheck": {"test": ["CMD", "true"], "interval": "10s", "retries": 3},
            "deploy": {
                "replicas": 2,
                "update_config": {"parallelism": 1, "delay": "5s", "order": "start-first"},
                "restart_policy": {"condition": "on-failure"},
                "resources": {"limits": {"cpus": "0.5", "memory": "128M"}},
                "placement": {"constraints": ["node.role == worker"]},
            },
        }
    return {
        "services": services,
        "networks": {"front": {"driver": "overlay"}, "back": {"driver": "overlay"}},
        "volumes": {f"data{i}": {} for i in range(5)},
        "secrets": {"token": {"file": "./token.txt"}},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="?", type=int, default=500)
    parser.add_argument("--limit", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "docker-compose.yml")
        with open(path, "w") as fh:
            yaml.safe_dump(generate(args.services), fh, sort_keys=False)
        with open(os.path.join(tmp, "token.txt"), "w") as fh:
            fh.write("t0ken")
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            specs = translate(load_project([path], environ={}), "bench")
            timings.append(time.perf_counter() - start)
    best = min(timings)
    print(f"translated {len(specs.services)} services "
          f"({len(specs.dependencies)} dependencies) in {best:.3f} s "
          f"(best of 3; runs: {', '.join(f'{t:.3f}' for t in timings)}; limit {args.limit} s)")
    return 0 if best < args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
