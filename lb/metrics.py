"""Prometheus metrics of the data plane, kept in plain dicts and written as text format 0.0.4.

The hot path does one dict lookup and a few integer additions per request; nothing here
allocates per request except the label tuple.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

__all__ = ["Metrics", "BUCKETS"]

# Seconds; fine at the low end, where the LB's own added latency lives.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0)


class _Histogram:
    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1


class Metrics:
    """Counters, in-flight gauges and latency histograms by frontend and group."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.errors: dict[tuple[str, str, str], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.in_flight: dict[tuple[str, str], int] = defaultdict(int)
        self.retries: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, frontend: str, group: str, code: int, seconds: float) -> None:
        """One finished request (or TCP connection, with code 0)."""
        self.requests[(frontend, group, str(code))] += 1
        hist = self.latency.get((frontend, group))
        if hist is None:
            hist = self.latency[(frontend, group)] = _Histogram()
        hist.observe(seconds)

    def error(self, frontend: str, group: str, kind: str) -> None:
        """A failure of kind connect, timeout, backend, no_backend, client, ..."""
        self.errors[(frontend, group, kind)] += 1

    def render(self, prefix: str = "dans_lb") -> str:
        """The Prometheus text exposition of everything counted so far."""
        out: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {prefix}_{name} {text}")
            out.append(f"# TYPE {prefix}_{name} {kind}")

        head("requests_total", "counter", "Requests (HTTP) or connections (TCP) handled.")
        for (fe, grp, code), n in sorted(self.requests.items()):
            out.append(f'{prefix}_requests_total{{frontend="{fe}",group="{grp}",code="{code}"}}'
                       f" {n}")
        head("errors_total", "counter", "Failures by kind (connect, timeout, backend, ...).")
        for (fe, grp, kind), n in sorted(self.errors.items()):
            out.append(f'{prefix}_errors_total{{frontend="{fe}",group="{grp}",kind="{kind}"}}'
                       f" {n}")
        head("retries_total", "counter", "Attempts repeated on another backend.")
        for (fe, grp), n in sorted(self.retries.items()):
            out.append(f'{prefix}_retries_total{{frontend="{fe}",group="{grp}"}} {n}')
        head("in_flight", "gauge", "Requests or connections in flight.")
        for (fe, grp), n in sorted(self.in_flight.items()):
            out.append(f'{prefix}_in_flight{{frontend="{fe}",group="{grp}"}} {n}')
        head("request_duration_seconds", "histogram", "Time from request to end of answer.")
        for (fe, grp), hist in sorted(self.latency.items()):
            labels = f'frontend="{fe}",group="{grp}"'
            running = 0
            for bound, n in zip(BUCKETS, hist.counts, strict=False):
                running += n
                out.append(f'{prefix}_request_duration_seconds_bucket{{{labels},le="{bound}"}}'
                           f" {running}")
            out.append(f'{prefix}_request_duration_seconds_bucket{{{labels},le="+Inf"}}'
                       f" {hist.count}")
            out.append(f"{prefix}_request_duration_seconds_sum{{{labels}}} {hist.sum:.6f}")
            out.append(f"{prefix}_request_duration_seconds_count{{{labels}}} {hist.count}")
        return "\n".join(out) + "\n"
