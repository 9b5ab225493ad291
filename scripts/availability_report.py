"""Figures of `bench_availability.py`: one summary per run, the CSV and the Markdown report.

A run's requests are measured in its *upgrade window*: from the moment `dans upgrade`
starts until the load stops (the settle seconds after the upgrade returned included), so
the steady seconds before it, which every strategy passes alike, do not dilute the figures.
Per kind of request (vote: `POST /api/vote`, through vote to worker and the database; page:
`GET /`, the ballot page, vote alone):
- availability: answered with 2xx / sent, in % (the paper's Tables 2 and 3);
- He et al.'s availability: 1 - downtime / window, where downtime counts the seconds of the
  window in which at least one request of that kind failed;
- mixed: answers whose X-Served-By chain names two versions (vote@1,worker@2-...);
- mean and p99 response time over every request of the kind, failed ones included.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from voting_stack import loadgen

is_mixed = loadgen().is_mixed  # one definition of a mixed-version answer: the load generator's

__all__ = ["CSV_COLUMNS", "is_mixed", "is_v2", "summarize", "write_csv", "write_markdown"]

CSV_COLUMNS = ("update", "instances", "strategy", "repetition", "ok", "failed", "mixed",
               "availability", "he_availability", "mean_ms", "p99_ms", "duration_s",
               "page_ok", "page_failed", "page_availability", "page_he_availability",
               "extra_replicas", "window_s", "top_error")


def versions(chain: str | None) -> set[str]:
    """The versions a served-by chain names ("vote@1,worker@2-add-api" -> {1, 2-add-api})."""
    return {p.strip().partition("@")[2] for p in (chain or "").split(",") if "@" in p}


def is_v2(chain: str | None) -> bool:
    """True when every service of the chain ran a version 2."""
    found = versions(chain)
    return bool(found) and all(v.startswith("2") for v in found)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _kind_figures(requests: Sequence[dict[str, Any]], start: float, end: float
                  ) -> dict[str, Any]:
    window = max(end - start, 1e-9)
    ok = sum(1 for r in requests if r["ok"])
    failed = len(requests) - ok
    down = {math.floor(r["t"] - start) for r in requests if not r["ok"]}
    ms = sorted(r["ms"] for r in requests)
    errors = Counter(r["error"] or f"HTTP {r['status']}" for r in requests if not r["ok"])
    return {
        "ok": ok, "failed": failed, "total": len(requests),
        "mixed": sum(1 for r in requests if is_mixed(r["chain"])),
        "availability": _pct(ok, len(requests)),
        "he_availability": round(100.0 * max(0.0, 1 - len(down) / math.ceil(window)), 2),
        "down_s": len(down),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else 0.0,
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else 0.0,
        "errors": dict(errors.most_common(4)),
    }


def summarize(run: dict[str, Any], requests: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one run (its record from `runs.jsonl` and its requests)."""
    start, end = run["upgrade_start"], run["end"]
    inside = [r for r in requests if start <= r["t"] <= end]
    votes = _kind_figures([r for r in inside if r["kind"] == "vote"], start, end)
    pages = _kind_figures([r for r in inside if r["kind"] == "page"], start, end)
    return {"update": run["update"], "instances": run["instances"],
            "strategy": run["strategy"], "repetition": run["repetition"],
            "duration_s": run["upgrade_s"], "extra_replicas": run["extra_replicas"],
            "window_s": round(end - start, 1), "vote": votes, "page": pages}


def write_csv(path: Path, summaries: Sequence[dict[str, Any]]) -> None:
    """One row per run, in CSV_COLUMNS order."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(CSV_COLUMNS)
        for s in summaries:
            v, p = s["vote"], s["page"]
            top = next(iter(v["errors"]), "")
            out.writerow([s["update"], s["instances"], s["strategy"], s["repetition"],
                          v["ok"], v["failed"], v["mixed"], v["availability"],
                          v["he_availability"], v["mean_ms"], v["p99_ms"], s["duration_s"],
                          p["ok"], p["failed"], p["availability"], p["he_availability"],
                          s["extra_replicas"], s["window_s"], top])


def _cell(values: Sequence[float], digits: int = 1) -> str:
    """Mean, with the range over repetitions when there are several."""
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1 or min(values) == max(values):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _group(summaries: Sequence[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [s for s in summaries if all(s[k] == v for k, v in match.items())]


def table2(summaries: Sequence[dict[str, Any]], strategy: str) -> list[str]:
    """Availability of vote and page per update type (the paper's Table 2), one strategy."""
    rows = ["| update type | instances | runs | vote availability % | page availability % "
            "| vote He % | mixed |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for update in _ordered(s["update"] for s in summaries):
        for n in sorted({s["instances"] for s in _group(summaries, update=update)}):
            runs = _group(summaries, update=update, instances=n, strategy=strategy)
            if runs:
                rows.append(f"| {update} | {n} | {len(runs)} | {_avail(runs, 'vote')} "
                            f"| {_avail(runs, 'page')} "
                            f"| {_cell([r['vote']['he_availability'] for r in runs], 2)} "
                            f"| {_cell([r['vote']['mixed'] for r in runs], 0)} |")
    return rows


def _avail(runs: Sequence[dict[str, Any]], kind: str) -> str:
    return _cell([r[kind]["availability"] for r in runs], 2)


def table3(summaries: Sequence[dict[str, Any]], update: str) -> list[str]:
    """Strategies x instance counts for one update type (the paper's Table 3)."""
    rows = ["| strategy | instances | runs | vote availability % | vote He % "
            "| page availability % | mean ms | p99 ms | upgrade s | mixed | extra replicas "
            "| failed: top cause (all runs) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for strategy in _ordered((s["strategy"] for s in summaries), STRATEGY_ORDER):
        for n in sorted({s["instances"] for s in summaries}):
            runs = _group(summaries, update=update, instances=n, strategy=strategy)
            if not runs:
                continue
            causes: Counter[str] = Counter()
            for r in runs:
                causes.update(r["vote"]["errors"])
            cause = next(iter(causes.most_common(1)), ("", 0))
            rows.append(
                f"| {strategy} | {n} | {len(runs)} | {_avail(runs, 'vote')} "
                f"| {_cell([r['vote']['he_availability'] for r in runs], 2)} "
                f"| {_avail(runs, 'page')} "
                f"| {_cell([r['vote']['mean_ms'] for r in runs])} "
                f"| {_cell([r['vote']['p99_ms'] for r in runs])} "
                f"| {_cell([r['duration_s'] for r in runs])} "
                f"| {_cell([r['vote']['mixed'] for r in runs], 0)} "
                f"| {_cell([r['extra_replicas'] for r in runs], 0)} "
                f"| {cause[0] + f' ({cause[1]})' if cause[1] else '-'} |")
    return rows


STRATEGY_ORDER = ("dans", "rolling", "isolated", "delayed")
UPDATE_ORDER = ("change-api", "add-api", "candidates")


def _ordered(items: Iterable[str], order: Sequence[str] = UPDATE_ORDER) -> list[str]:
    found = set(items)
    return [x for x in order if x in found] + sorted(found - set(order))


def write_markdown(path: Path, summaries: Sequence[dict[str, Any]], *, commands: Sequence[str],
                   plots: Sequence[str], settings: dict[str, Any]) -> None:
    """The report: how it was made, Table 2, Table 3 per update type, the plots."""
    updates = _ordered(s["update"] for s in summaries)
    lines = ["# Availability under upgrade: dans against the paper's baselines", "",
             "Made by `scripts/bench_availability.py` on this repository's test swarm "
             "(one node, 2 cores). Commands, in order (each merged its runs into this "
             "folder):", "", "```", *commands, "```", "",
             "Each run: fresh `dans deploy` of `examples/voting-app/stacks/v1.yml` with "
             f"vote and worker at N instances, {settings['vote_voters']} voters "
             f"(`POST /api/vote`) and {settings['page_readers']} page readers (`GET /`), each "
             f"at most one request every {settings['interval']} s, "
             f"{settings['steady']} s of steady load, `dans upgrade --strategy S` to the update "
             f"type's file, {settings['settle']} s more, then the stack is removed. Figures "
             "are over the upgrade window (start of `dans upgrade` to the end of the load). "
             "Several runs of a cell: mean (min-max).", "",
             "- availability: 2xx answers / requests sent (the paper's measure);",
             "- He: He et al.'s availability, 1 - downtime / window, downtime = seconds of "
             "the window with at least one failed request of the kind;",
             "- mixed: answers whose `X-Served-By` chain names two versions;",
             "- extra replicas: instances the plan runs beyond the stack's own (dans: the "
             "temporary chain; isolated/delayed: the new halves while the canonical services "
             "take the rest back);",
             "- upgrade s: wall time of the `dans upgrade` command.", "",
             "## Table 2: availability of vote and page per update type, dans", "",
             *table2(summaries, "dans"), ""]
    for strategy in STRATEGY_ORDER[1:]:
        if any(s["strategy"] == strategy and s["update"] != "change-api" for s in summaries):
            lines += [f"Table 2 under {strategy}:", "", *table2(summaries, strategy), ""]
    for update in updates:
        if len({s["strategy"] for s in _group(summaries, update=update)}) > 1:
            lines += [f"## Table 3: strategies and instance counts, {update}", "",
                      *table3(summaries, update), ""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path.write_text("\n".join(lines))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON object of a JSON-lines file (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
