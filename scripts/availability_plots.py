"""Plots of `bench_availability.py` (matplotlib, the `bench` extra): availability by instance
count per strategy, and timelines of runs (requests/s, failures, share of v2, step marks).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from availability_report import STRATEGY_ORDER, is_v2
from matplotlib.axes import Axes
from matplotlib.patches import Patch

__all__ = ["availability_plot", "timeline_grid"]

COLORS = {"dans": "tab:green", "rolling": "tab:orange", "isolated": "tab:red",
          "delayed": "tab:purple"}
DPI = 72


def availability_plot(path: Path, summaries: Sequence[dict[str, Any]], update: str) -> bool:
    """Vote availability (%) against instance count, one line per strategy, with the range
    over repetitions; False (no file) when the update type has a single instance count."""
    runs = [s for s in summaries if s["update"] == update]
    counts = sorted({s["instances"] for s in runs})
    if len(counts) < 2:
        return False
    fig, ax = plt.subplots(figsize=(7.4, 4.0))
    for strategy in [s for s in STRATEGY_ORDER if any(r["strategy"] == s for r in runs)]:
        xs, ys, lo, hi = [], [], [], []
        for n in counts:
            vals = [r["vote"]["availability"] for r in runs
                    if r["strategy"] == strategy and r["instances"] == n]
            if vals:
                mean = statistics.fmean(vals)
                xs.append(n)
                ys.append(mean)
                lo.append(mean - min(vals))
                hi.append(max(vals) - mean)
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, label=strategy,
                    color=COLORS.get(strategy))
    ax.set_xlabel("instances of vote and of worker")
    ax.set_ylabel("vote availability during the upgrade (%)")
    ax.set_title(f"Availability by instance count ({update})")
    ax.set_xticks(counts)
    ax.set_ylim(min(40.0, ax.get_ylim()[0]), 101)
    ax.grid(alpha=0.3)
    ax.legend(title="strategy", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def _bins(requests: Sequence[dict[str, Any]], end: float) -> dict[str, list[float]]:
    """Per second: vote ok/s, vote failed/s, page failed/s, share of v2 among vote answers."""
    size = max(1, math.floor(end))  # whole seconds only: a last partial one reads as a drop
    ok, failed, page_failed = [0.0] * size, [0.0] * size, [0.0] * size
    v2, answered = [0] * size, [0] * size
    for r in requests:
        i = int(r["t"])
        if not 0 <= i < size:
            continue
        if r["kind"] == "page":
            page_failed[i] += 0 if r["ok"] else 1
            continue
        (ok if r["ok"] else failed)[i] += 1
        if r["chain"]:
            answered[i] += 1
            v2[i] += 1 if is_v2(r["chain"]) else 0
    share = [100.0 * v / a if a else math.nan for v, a in zip(v2, answered, strict=True)]
    return {"ok": ok, "failed": failed, "page_failed": page_failed, "v2": share}


def _timeline(ax: Axes, run: dict[str, Any], requests: Sequence[dict[str, Any]]
              ) -> tuple[list[Any], list[str]]:
    b = _bins(requests, run["end"])
    xs = list(range(len(b["ok"])))
    ax.plot(xs, b["ok"], color="tab:blue", lw=1.2, label="votes ok/s")
    ax.plot(xs, b["failed"], color="tab:red", lw=1.2, label="votes failed/s")
    ax.plot(xs, b["page_failed"], color="tab:brown", lw=1, ls="--", label="pages failed/s")
    ax.axvspan(run["upgrade_start"], run["upgrade_end"], color="0.9", zorder=0)
    for mark in run["steps"]:
        kind, _, target = mark["step"].partition(":")
        switch = kind == "route" and not target.endswith("final")
        ax.axvline(mark["t"], color="0.3" if switch else "0.6", lw=0.8 if switch else 0.5,
                   ls="-" if switch else ":")
        if switch or (kind == "update_services" and target == "stack"):
            text = ("LB back: " + target.removesuffix("-back") if target.endswith("back")
                    else "LB to new: " + target if switch else "update all")
            ax.text(mark["t"], 0.97, text, rotation=90, fontsize=7, va="top", ha="right",
                    transform=ax.get_xaxis_transform(), color="0.2")
    ax.set_xlabel("time since the load started (s)")
    ax.set_ylabel("requests/s")
    ax.set_title(f"{run['strategy']}, {run['instances']} instances, run {run['repetition']} "
                 f"({run['update']})", fontsize=9)
    twin = ax.twinx()
    twin.plot(xs, b["v2"], color="tab:green", lw=1.5, label="v2 share of answered votes")
    twin.set_ylim(-5, 105)
    twin.set_ylabel("v2 share of answered votes (%)")
    lines, more = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    return lines[0] + more[0], lines[1] + more[1]


def timeline_grid(path: Path, cells: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]]
                  ) -> None:
    """One timeline panel per run (run record, its requests), two panels a row; the grey
    band is the `dans upgrade` command, dotted lines its steps' starts, solid lines the LB
    switches."""
    cols = min(2, len(cells))
    rows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.0 * cols, 3.6 * rows), squeeze=False)
    handles: tuple[list[Any], list[str]] = ([], [])
    for i, (run, requests) in enumerate(cells):
        handles = _timeline(axes[i // cols][i % cols], run, requests)
    for j in range(len(cells), rows * cols):
        axes[j // cols][j % cols].axis("off")
    handles[0].append(Patch(color="0.9", label="dans upgrade running"))
    handles[1].append("dans upgrade running")
    fig.legend(*handles, loc="lower center", ncol=len(handles[1]), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 / rows, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
