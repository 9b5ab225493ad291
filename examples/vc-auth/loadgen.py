"""Steady, bounded load on the example's portal: counts ok, failed and mixed transactions.

    python3 examples/vc-auth/loadgen.py --url http://127.0.0.1:8090/tx --seconds 30

A transaction (GET /tx) is "failed" when the portal did not answer 200 and "mixed" when one
service served it at two versions (auth: its token was issued by one version and checked by
the other, so such a transaction usually failed too: it is counted in both), else "ok"; its
version is auth's. It is "untraced" when its services did not all see one trace id (trace
context not propagated). Bounded by `--seconds` and `--max-requests`; `--rate` paces the
threads so the offered load is the same whatever the stack answers. Prints one JSON line.
Only the standard library: it runs anywhere python3 does.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["Loadgen", "classify"]


def classify(status: int, answer: dict[str, Any]) -> tuple[str, str, bool]:
    """(ok | failed | mixed, auth's version or "", traced) of one transaction's answer."""
    seen: dict[str, list[str]] = answer.get("seen") or {}
    traces = {t for ids in (answer.get("traces") or {}).values() for t in ids}
    traced = len(traces) == 1 and "" not in traces
    auth = sorted(set(seen.get("auth", [])))
    if any(len(set(v)) > 1 for v in seen.values()):
        return "mixed", ",".join(auth), traced
    return ("ok" if status == 200 else "failed"), ",".join(auth), traced


class Loadgen:
    """`threads` threads sending GET `url` until `finish()`, `limit` seconds or the budget."""

    def __init__(self, url: str, *, threads: int = 3, rate: float = 30.0,
                 limit: float = 300.0, max_requests: int = 100_000) -> None:
        self.url = url
        self.period = threads / rate if rate > 0 else 0.0
        self.stop = threading.Event()
        self.deadline = time.monotonic() + limit
        self.budget = max(1, max_requests // threads)
        self.lock = threading.Lock()
        # (time, kind, auth's version, traced, seconds, answered 200)
        self.records: list[tuple[float, str, str, bool, float, bool]] = []
        self.errors: dict[str, int] = {}
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _one(self) -> tuple[str, str, bool, str | None]:
        try:
            with urllib.request.urlopen(self.url, timeout=10) as answer:
                kind, auth, traced = classify(answer.status, json.loads(answer.read()))
                return kind, auth, traced, None
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                body = {}
            kind, auth, traced = classify(exc.code, body)
            return kind, auth, traced, f"HTTP {exc.code}: {str(body.get('error'))[:80]}"
        except OSError as exc:
            return "failed", "", False, type(exc).__name__

    def _run(self) -> None:
        due = time.monotonic()
        for _ in range(self.budget):
            if self.period:
                due = max(due + self.period, time.monotonic())  # pacing, not a sync point
                if self.stop.wait(max(0.0, due - time.monotonic())):
                    return
            if self.stop.is_set() or time.monotonic() > self.deadline:
                return
            t0 = time.monotonic()
            kind, auth, traced, error = self._one()
            with self.lock:
                self.records.append((t0, kind, auth, traced, time.monotonic() - t0,
                                     error is None))
                if error:
                    self.errors[error] = self.errors.get(error, 0) + 1

    def count(self, kind: str, auth: str | None = None) -> int:
        """Transactions of one kind so far (answered by auth `auth`, if given)."""
        with self.lock:
            return sum(1 for r in self.records
                       if r[1] == kind and (auth is None or r[2] == auth))

    def finish(self) -> dict[str, Any]:
        """Stop the threads and sum up (latency percentiles in milliseconds)."""
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        with self.lock:
            records = list(self.records)
        latency = sorted(r[4] for r in records)

        def pct(q: float) -> float:
            return round(1000 * latency[min(len(latency) - 1, int(q * len(latency)))], 1) \
                if latency else 0.0

        return {"total": len(records),
                "ok": sum(1 for r in records if r[1] == "ok"),
                "failed": sum(1 for r in records if not r[5]),
                "mixed": sum(1 for r in records if r[1] == "mixed"),
                "ok_v2": sum(1 for r in records if r[1] == "ok" and r[2] == "2"),
                "untraced": sum(1 for r in records if r[1] == "ok" and not r[3]),
                "p50_ms": pct(0.5), "p99_ms": pct(0.99), "errors": dict(self.errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8090/tx")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second")
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--max-requests", type=int, default=100_000)
    args = parser.parse_args()
    load = Loadgen(args.url, threads=args.threads, rate=args.rate, limit=args.seconds,
                   max_requests=args.max_requests)
    load.stop.wait(args.seconds)
    print(json.dumps(load.finish()))


if __name__ == "__main__":
    main()
