#!/usr/bin/env python3
"""A bounded load generator for the voting app: N concurrent voters for D seconds.

    python3 examples/voting-app/loadgen.py --url http://127.0.0.1:18080 \
        --concurrency 8 --duration 30 [--max-requests 5000]

Each voter posts `{voter_id, vote}` to URL/api/vote in a loop, one request at a time, on a new
connection each time (so every request is balanced anew and none is lost to a closed
keep-alive connection). A request is ok on a 2xx answer, failed otherwise (HTTP error,
connection error, timeout), and mixed when its `X-Served-By` chain names more than one
version (e.g. `vote@1,worker@2-change-api`), whatever its status. The run stops at the first
of: the duration, the request count, or `stop` being set. Prints JSON:
{ok, failed, mixed, mixed_failed, total, duration_s, rps, p50_ms, p99_ms, max_ms,
errors: {"HTTP 502 (worker 410)": n, "ServerDisconnectedError": n, ...},
chains: {"vote@1,worker@1": {ok, failed}, ...}, timeline: [{t, ok, failed, mixed}, ...]}.

Importable: `run_load(...)` is the core (stdlib and aiohttp only, works with aiohttp 3.8+).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["is_mixed", "main", "run_load"]

SERVED_BY = "X-Served-By"


def is_mixed(chain: str | None) -> bool:
    """True when a served-by chain ("vote@1,worker@2") names more than one version."""
    if not chain:
        return False
    versions = {part.strip().partition("@")[2] for part in chain.split(",") if part.strip()}
    return len(versions) > 1


@dataclass
class _Stats:
    started: float
    ok: int = 0
    failed: int = 0
    mixed: int = 0
    mixed_failed: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    chains: dict[str, Counter[str]] = field(default_factory=dict)
    timeline: dict[int, list[int]] = field(default_factory=dict)

    def record(self, ok: bool, chain: str | None, latency: float, error: str | None) -> None:
        second = int(time.monotonic() - self.started)
        slot = self.timeline.setdefault(second, [0, 0, 0])
        mixed = is_mixed(chain)
        self.latencies.append(latency)
        self.chains.setdefault(chain or "-", Counter())["ok" if ok else "failed"] += 1
        if ok:
            self.ok += 1
            slot[0] += 1
        else:
            self.failed += 1
            slot[1] += 1
            self.errors[error or "unknown"] += 1
        if mixed:
            self.mixed += 1
            slot[2] += 1
            self.mixed_failed += 0 if ok else 1

    def report(self, elapsed: float) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else 0.0

        last = max(self.timeline, default=-1)
        return {
            "ok": self.ok,
            "failed": self.failed,
            "mixed": self.mixed,
            "mixed_failed": self.mixed_failed,
            "total": self.ok + self.failed,
            "duration_s": round(elapsed, 2),
            "rps": round((self.ok + self.failed) / elapsed, 1) if elapsed > 0 else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 1) if lat else 0.0,
            "errors": dict(self.errors.most_common()),
            "chains": {c: {"ok": n["ok"], "failed": n["failed"]}
                       for c, n in sorted(self.chains.items(), key=lambda i: -i[1].total())},
            "timeline": [
                {"t": t, "ok": s[0], "failed": s[1], "mixed": s[2]}
                for t in range(last + 1)
                for s in [self.timeline.get(t, [0, 0, 0])]
            ],
        }


def _error_name(status: int, body: bytes) -> str:
    # "HTTP 502 (worker 404)" says which side refused a crossing request.
    try:
        inner = json.loads(body).get("worker_status")
    except (ValueError, AttributeError):
        inner = None
    return f"HTTP {status}" + (f" (worker {inner})" if inner else "")


async def run_load(
    url: str,
    concurrency: int = 8,
    duration: float = 10.0,
    max_requests: int | None = None,
    *,
    stop: threading.Event | None = None,
    timeout: float = 10.0,
    options: tuple[str, ...] = ("a", "b"),
    voters: int = 1000,
    path: str = "/api/vote",
    page: bool = False,
    interval: float = 0.0,
    on_request: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run `concurrency` voters against `url` until `duration` s passed, `max_requests` were
    sent or `stop` is set (whichever comes first) and return the report dict.

    Every request has its own `timeout`, so the run ends at most that long after its bound.
    Voter ids come from a pool of `voters` per run, so later votes update earlier ones.
    With `page`, each request reads the ballot page (`GET /`) instead of voting. `interval`
    is the least time between the starts of one voter's requests (bounding the load);
    `on_request`, when given, gets one record per request: wall time `t` (its start),
    `status` (0 for no answer), `ok`, `chain` (X-Served-By), `ms` and `error`.
    """
    if concurrency < 1 or duration <= 0:
        raise ValueError("concurrency must be >= 1 and duration > 0")
    target = url.rstrip("/") + ("/" if page else path)
    run_id = uuid.uuid4().hex[:6]
    stats = _Stats(started=time.monotonic())
    deadline = stats.started + duration
    sent = 0

    def more() -> bool:
        nonlocal sent
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return False
        if max_requests is not None and sent >= max_requests:
            return False
        sent += 1
        return True

    async def voter(session: aiohttp.ClientSession) -> None:
        while more():
            body = {"voter_id": f"lg-{run_id}-{random.randrange(voters)}",
                    "vote": random.choice(options)}
            begin, wall, status = time.monotonic(), time.time(), 0
            try:
                async with (session.get(target) if page
                            else session.post(target, json=body)) as resp:
                    raw = await resp.read()
                    chain, status = resp.headers.get(SERVED_BY), resp.status
                    ok = 200 <= resp.status < 300
                    error = None if ok else _error_name(resp.status, raw)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                ok, chain, error = False, None, type(exc).__name__
            took = time.monotonic() - begin
            stats.record(ok, chain, took, error)
            if on_request is not None:
                on_request({"t": round(wall, 4), "status": status, "ok": ok, "chain": chain,
                            "ms": round(took * 1000, 1), "error": error})
            pause = max(interval - took, 0.05 if not ok and chain is None else 0.0)
            if pause:
                await asyncio.sleep(pause)  # bounded load; a target that is down: no spin

    connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        await asyncio.gather(*(voter(session) for _ in range(concurrency)))
    return stats.report(time.monotonic() - stats.started)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the load and print its JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the vote service, e.g. http://127.0.0.1:8080")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--max-requests", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--options", default="a,b", help="option keys to vote for")
    parser.add_argument("--no-timeline", action="store_true", help="leave out the timeline")
    args = parser.parse_args(argv)
    report = asyncio.run(run_load(
        args.url, args.concurrency, args.duration, args.max_requests,
        timeout=args.timeout, options=tuple(args.options.split(",")),
    ))
    if args.no_timeline:
        del report["timeline"]
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
