"""Prometheus metrics of the data plane, kept in plain objects and written as text format 0.0.4.

Everything is counted per (frontend, group) in one `Series`; a group's runtime holds a
reference to its series, so the hot path of a request does a few integer additions, one dict
update keyed by the status code and one bisect, and allocates nothing.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["BUCKETS", "Metrics", "Series"]

# Seconds; fine at the low end, where the LB's own added latency lives.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0)


class Series:
    """The counters of one frontend and group: answers by status, latency, errors, in flight."""

    __slots__ = ("codes", "count", "counts", "errors", "in_flight", "retries", "sum")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0
        self.errors: dict[str, int] = {}
        self.retries = 0
        self.in_flight = 0

    def observe(self, code: int, seconds: float) -> None:
        """One finished request (or TCP connection, with code 0) that took `seconds`."""
        try:
            self.codes[code] += 1
        except KeyError:
            self.codes[code] = 1
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def error(self, kind: str) -> None:
        """A failure of kind connect, timeout, backend, no_backend, client, ..."""
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Metrics:
    """Counters, in-flight gauges and latency histograms by frontend and group."""

    def __init__(self) -> None:
        self.by_group: dict[tuple[str, str], Series] = {}

    def series(self, frontend: str, group: str) -> Series:
        """The series of a frontend and group (created on first use, kept for good)."""
        found = self.by_group.get((frontend, group))
        if found is None:
            found = self.by_group[(frontend, group)] = Series()
        return found

    def observe(self, frontend: str, group: str, code: int, seconds: float) -> None:
        """One finished request (or TCP connection, with code 0)."""
        self.series(frontend, group).observe(code, seconds)

    def error(self, frontend: str, group: str, kind: str) -> None:
        """A failure of kind connect, timeout, backend, no_backend, client, ..."""
        self.series(frontend, group).error(kind)

    def render(self, prefix: str = "dans_lb") -> str:
        """The Prometheus text exposition of everything counted so far."""
        out: list[str] = []
        series = sorted(self.by_group.items())

        def head(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {prefix}_{name} {text}")
            out.append(f"# TYPE {prefix}_{name} {kind}")

        head("requests_total", "counter", "Requests (HTTP) or connections (TCP) handled.")
        for (fe, grp), s in series:
            for code, n in sorted(s.codes.items()):
                out.append(f'{prefix}_requests_total{{frontend="{fe}",group="{grp}",'
                           f'code="{code}"}} {n}')
        head("errors_total", "counter", "Failures by kind (connect, timeout, backend, ...).")
        for (fe, grp), s in series:
            for kind, n in sorted(s.errors.items()):
                out.append(f'{prefix}_errors_total{{frontend="{fe}",group="{grp}",'
                           f'kind="{kind}"}} {n}')
        head("retries_total", "counter", "Attempts repeated on another backend.")
        for (fe, grp), s in series:
            out.append(f'{prefix}_retries_total{{frontend="{fe}",group="{grp}"}} {s.retries}')
        head("in_flight", "gauge", "Requests or connections in flight.")
        for (fe, grp), s in series:
            out.append(f'{prefix}_in_flight{{frontend="{fe}",group="{grp}"}} {s.in_flight}')
        head("request_duration_seconds", "histogram", "Time from request to end of answer.")
        for (fe, grp), s in series:
            labels = f'frontend="{fe}",group="{grp}"'
            running = 0
            for bound, n in zip(BUCKETS, s.counts, strict=False):
                running += n
                out.append(f'{prefix}_request_duration_seconds_bucket{{{labels},le="{bound}"}}'
                           f" {running}")
            out.append(f'{prefix}_request_duration_seconds_bucket{{{labels},le="+Inf"}}'
                       f" {s.count}")
            out.append(f"{prefix}_request_duration_seconds_sum{{{labels}}} {s.sum:.6f}")
            out.append(f"{prefix}_request_duration_seconds_count{{{labels}}} {s.count}")
        return "\n".join(out) + "\n"
