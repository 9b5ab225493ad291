"""Prometheus metrics of the data plane, kept in plain objects and written as text format 0.0.4.

Everything is counted per (frontend, group, version) in one `Series`; a group's runtime holds
a reference to its series, so the hot path of a request does a few integer additions, one
dict update keyed by the status code and one bisect, and allocates nothing.

The version of a group is what the upgrade manager last told the LB (`set_versions`, through
PUT /v1/upgrade): during an upgrade the temporary group serves the new generation and `main`
the previous one, until the canonical services have converged. A group never told is
`DEFAULT_VERSION`. When a group's version changes, its runtime moves to a new series (see
`lb._balancer.Balancer.set_versions`), so every series only ever counts up.

`FAMILIES` is the registry of every metric family the LB exports (this module's and
`lb._progress`'s): the renderers write their HELP and TYPE lines from it, and the tests check
the shipped Grafana dashboard against it. Label values may come from service names, so every
one is escaped; label sets are bounded by the routing table in force, plus at most
`MAX_RETIRED` series of groups that are gone.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "BUCKETS",
    "DEFAULT_VERSION",
    "FAMILIES",
    "MAX_RETIRED",
    "MAX_VERSIONS",
    "NO_GROUP",
    "Family",
    "Metrics",
    "Series",
    "escape",
    "head",
    "histogram",
    "sample",
    "series_name",
]

# Seconds; fine at the low end, where the LB's own added latency lives.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0)
DEFAULT_VERSION = "deployed"  # a group the upgrade manager has not named a version for
NO_GROUP = "-"  # the pseudo-group of requests no group took (no active group, bad requests)
NO_VERSION = "none"
MAX_RETIRED = 64  # series of groups gone from the table still exported (the oldest go first)
MAX_VERSIONS = 64  # group -> version entries remembered


@dataclass(frozen=True)
class Family:
    """One metric family: its full name, Prometheus type, help text and label names."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()


_SERIES = ("frontend", "group", "version")
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("dans_lb_requests_total", "counter",
           "Requests (HTTP) or connections (TCP) handled, by status code (0: TCP or no answer).",
           (*_SERIES, "code")),
    Family("dans_lb_errors_total", "counter",
           "Failures by kind (connect, timeout, backend, no_backend, ...).", (*_SERIES, "kind")),
    Family("dans_lb_retries_total", "counter", "Attempts repeated on another backend.",
           _SERIES),
    Family("dans_lb_in_flight", "gauge", "Requests or connections in flight.", _SERIES),
    Family("dans_lb_request_duration_seconds", "histogram",
           "Time from request to end of answer.", _SERIES),
    # Counted by lb._pinning: requests that presented a kept version's stamp.
    Family("dans_lb_pinned_requests_total", "counter",
           "Requests sent to a kept (non-active) version because they presented its stamp.",
           ("frontend", "version")),
    Family("dans_lb_pinned_last_timestamp_seconds", "gauge",
           "Unix time of the last request pinned to a kept version.", ("frontend", "version")),
    # Written by lb._progress from what the upgrade manager reports.
    Family("dans_lb_upgrade_updates_total", "counter",
           "Progress reports the upgrade manager sent to this LB."),
    Family("dans_lb_upgrade_active", "gauge",
           "1 while an upgrade or its rollback runs, else 0."),
    Family("dans_lb_upgrade_phase", "gauge",
           "1 for the phase the last upgrade is in, 0 for the others.", ("phase",)),
    Family("dans_lb_upgrade_info", "gauge",
           "The last upgrade reported: stack, generation and strategy (value 1).",
           ("stack", "generation", "strategy")),
    Family("dans_lb_upgrade_step_index", "gauge",
           "1-based index of the step running (or last run) in the plan; 0 before the first."),
    Family("dans_lb_upgrade_steps", "gauge", "Steps in the plan being run."),
    Family("dans_lb_upgrade_step_info", "gauge",
           "The step running (or last run): its kind and key (value 1).", ("kind", "step")),
    Family("dans_lb_upgrade_step_started_timestamp_seconds", "gauge",
           "Unix time at which the LB heard that the current step started."),
    # Written by a waypoint (lb._mesh): one hop, caller -> callee ("-": caller not known).
    Family("dans_mesh_requests_total", "counter",
           "Calls through the waypoint, by status code.", ("caller", "callee", "code")),
    Family("dans_mesh_errors_total", "counter",
           "Failed calls through the waypoint, by kind.", ("caller", "callee", "kind")),
    Family("dans_mesh_request_duration_seconds", "histogram",
           "Time from call to end of answer, through the waypoint.", ("caller", "callee")),
    Family("dans_mesh_untraced_total", "counter",
           "Calls that arrived without trace context (traceparent, x-b3-traceid or the "
           "stack's own header).", ("callee",)),
)}


def escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def head(name: str) -> list[str]:
    """The HELP and TYPE lines of a registered family."""
    family = FAMILIES[name]
    return [f"# HELP {name} {_escape_help(family.help)}", f"# TYPE {name} {family.kind}"]


def series_name(name: str, labels: Iterable[tuple[str, str]] = ()) -> str:
    """A series as the text format names it: `name{k="v",...}`, label values escaped."""
    text = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
    return f"{name}{{{text}}}" if text else name


def sample(name: str, value: float, labels: Iterable[tuple[str, str]] = ()) -> str:
    """One sample line, label values escaped; integral values without a fraction."""
    number = str(int(value)) if float(value).is_integer() else repr(float(value))
    return f"{series_name(name, labels)} {number}"


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


Key = tuple[str, str, str]  # frontend, group, version


class Metrics:
    """Counters, in-flight gauges and latency histograms by frontend, group and version."""

    def __init__(self) -> None:
        self.by_group: dict[Key, Series] = {}
        self.versions: OrderedDict[str, str] = OrderedDict()  # group -> version
        self._retired: OrderedDict[Key, None] = OrderedDict()
        # (frontend, version) -> [pinned requests, unix time of the last]; versions come
        # from the routing table (lb._pinning counts known ones only), bounded like them.
        self.pins: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self.untraced: dict[str, int] = {}  # callee -> calls without trace context (mesh)

    def version_of(self, group: str) -> str:
        """The version the requests of `group` are counted under."""
        if group == NO_GROUP:
            return NO_VERSION
        return self.versions.get(group, DEFAULT_VERSION)

    def series(self, frontend: str, group: str) -> Series:
        """The series of a frontend and group at its version (created on first use)."""
        key = (frontend, group, self.version_of(group))
        found = self.by_group.get(key)
        if found is None:
            found = self.by_group[key] = Series()
        self._retired.pop(key, None)
        return found

    def set_versions(self, versions: dict[str, str]) -> None:
        """Remember the version of each group (at most MAX_VERSIONS groups, newest kept)."""
        for group, version in versions.items():
            self.versions.pop(group, None)
            self.versions[group] = version
        while len(self.versions) > MAX_VERSIONS:
            self.versions.popitem(last=False)

    def retire(self, series: Series) -> None:
        """`series` no longer belongs to a group in force: keep it among the last retired."""
        for key, found in self.by_group.items():
            if found is series:
                self._retired.pop(key, None)
                self._retired[key] = None
                break
        while len(self._retired) > MAX_RETIRED:
            old, _ = self._retired.popitem(last=False)
            self.by_group.pop(old, None)

    def pinned(self, frontend: str, version: str, now: float) -> None:
        """A request went to kept `version` because it presented its stamp."""
        entry = self.pins.get((frontend, version))
        if entry is None:
            entry = self.pins[(frontend, version)] = [0, now]
            while len(self.pins) > MAX_VERSIONS:
                self.pins.popitem(last=False)
        entry[0] += 1
        entry[1] = now

    def observe(self, frontend: str, group: str, code: int, seconds: float) -> None:
        """One finished request (or TCP connection, with code 0)."""
        self.series(frontend, group).observe(code, seconds)

    def error(self, frontend: str, group: str, kind: str) -> None:
        """A failure of kind connect, timeout, backend, no_backend, client, ..."""
        self.series(frontend, group).error(kind)

    def render(self) -> str:
        """The Prometheus text exposition of everything counted so far."""
        out: list[str] = []
        series = sorted(self.by_group.items())

        def labels(key: Key) -> list[tuple[str, str]]:
            return list(zip(_SERIES, key, strict=True))

        out += head("dans_lb_requests_total")
        for key, s in series:
            out += [sample("dans_lb_requests_total", n, [*labels(key), ("code", str(code))])
                    for code, n in sorted(s.codes.items())]
        out += head("dans_lb_errors_total")
        for key, s in series:
            out += [sample("dans_lb_errors_total", n, [*labels(key), ("kind", kind)])
                    for kind, n in sorted(s.errors.items())]
        out += head("dans_lb_retries_total")
        out += [sample("dans_lb_retries_total", s.retries, labels(key)) for key, s in series]
        out += head("dans_lb_in_flight")
        out += [sample("dans_lb_in_flight", s.in_flight, labels(key)) for key, s in series]
        out += head("dans_lb_request_duration_seconds")
        for key, s in series:
            out += histogram("dans_lb_request_duration_seconds", s, labels(key))
        pins = sorted(self.pins.items())
        for name, index in (("dans_lb_pinned_requests_total", 0),
                            ("dans_lb_pinned_last_timestamp_seconds", 1)):
            out += head(name)
            out += [sample(name, entry[index], [("frontend", fe), ("version", v)])
                    for (fe, v), entry in pins]
        return "\n".join(out) + "\n"


def histogram(name: str, s: Series, labels: list[tuple[str, str]]) -> list[str]:
    """The Prometheus lines of one latency histogram series."""
    out = []
    running = 0
    for bound, n in zip(BUCKETS, s.counts, strict=False):
        running += n
        out.append(sample(f"{name}_bucket", running, [*labels, ("le", str(bound))]))
    out.append(sample(f"{name}_bucket", s.count, [*labels, ("le", "+Inf")]))
    out.append(f"{series_name(f'{name}_sum', labels)} {s.sum:.6f}")
    out.append(sample(f"{name}_count", s.count, labels))
    return out
