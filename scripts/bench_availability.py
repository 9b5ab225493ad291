#!/usr/bin/env python3
"""The paper's evaluation, reproduced: availability of the voting app under upgrade, over
update types x instance counts x strategies x repetitions.

    python scripts/bench_availability.py --out DIR [--quick]
        [--updates change-api,add-api,candidates] [--instances 1,2,4]
        [--strategies dans,rolling,isolated,delayed] [--repetitions 2]
        [--max-load 12] [--quiet-wait 30] [--report-only]

Each run deploys `examples/voting-app/stacks/v1.yml` afresh with `dans deploy` (vote and
worker at N instances), sends steady votes and page reads through the stack's LB (loopback
only, bounded in rate, count and time), runs `dans upgrade --strategy S` to the update
type's file under that load, keeps the load a few seconds more and removes the stack. Every
request is recorded (time, kind, status, served-by chain, latency).

DIR gets `runs.jsonl` (one record per run), `requests/RUN.jsonl.gz` (every request),
`results.csv` (one row per run), `report.md` (the paper's Tables 2 and 3 with the spread
over repetitions, He et al.'s availability beside the success ratio) and PNG plots. An
existing DIR is added to: runs already in it are skipped, and the report covers all of
them, so a long matrix can run as several short invocations (`--max-runs K` stops after K
new runs; the same command again goes on). `--quick`: one repetition,
2 instances, every strategy, change-api.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from availability_report import (  # noqa: E402 - after the path set-up
    read_jsonl,
    summarize,
    write_csv,
    write_markdown,
)
from voting_stack import (  # noqa: E402 - after the path set-up
    SCENARIOS,
    STACKS,
    Load,
    dans,
    remove_stack,
    stack_env,
    wait_serving,
)

from tests.support import free_port  # noqa: E402 - after the path set-up

STACK = "dans-avail"
STRATEGIES = ("dans", "rolling", "isolated", "delayed")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="results folder (added to)")
    p.add_argument("--quick", action="store_true",
                   help="1 repetition, 2 instances, every strategy, change-api")
    p.add_argument("--updates", default=",".join(SCENARIOS))
    p.add_argument("--instances", default="1,2,4", help="comma-separated instance counts")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--repetitions", type=int, default=2)
    p.add_argument("--voters", type=int, default=4, help="concurrent voters")
    p.add_argument("--page-readers", type=int, default=2, help="concurrent page readers")
    p.add_argument("--max-load", type=float, default=12.0,
                   help="requests/s at most, voters and readers together")
    p.add_argument("--steady", type=float, default=6.0, help="seconds of load before")
    p.add_argument("--settle", type=float, default=5.0, help="seconds of load after")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="seconds at most to wait before a run for the 1-minute load average "
                   "to fall below the core count")
    p.add_argument("--max-runs", type=int, default=None,
                   help="stop after this many new runs (run again to go on: done runs are "
                   "skipped), so a long matrix holds a shared machine in short turns")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the CSV, report and plots from DIR; run nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.updates, args.instances, args.repetitions = "change-api", "2", 1
    bad = [s for s in args.strategies.split(",") if s not in STRATEGIES]
    bad += [u for u in args.updates.split(",") if u not in SCENARIOS]
    if bad:
        p.error(f"unknown strategy or update type: {', '.join(bad)}")
    return args


def matrix(args: argparse.Namespace) -> list[tuple[str, int, str, int]]:
    """Every (update, instances, strategy, repetition), repetitions outermost so that a
    stopped invocation still covers every cell once."""
    return [(u, int(n), s, r) for r in range(1, args.repetitions + 1)
            for u in args.updates.split(",") for n in args.instances.split(",")
            for s in args.strategies.split(",")]


def key(update: str, n: int, strategy: str, rep: int) -> str:
    return f"{update}-{n}-{strategy}-{rep}"


def wait_quiet(limit: float) -> None:
    """Let the machine settle (the previous run's containers stopping) before measuring."""
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] >= cores and time.monotonic() < deadline:
        time.sleep(2)


class Recorder:
    """Collects step marks from `dans upgrade --json` and every request, in seconds since
    the load started."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.requests: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.finished: dict[str, Any] = {}

    def request(self, kind: str) -> Any:
        def on_request(r: dict[str, Any]) -> None:
            self.requests.append({**r, "kind": kind, "t": round(r["t"] - self.t0, 3)})
        return on_request

    def line(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            return
        if event.get("event") == "step_started":
            self.steps.append({"t": round(event["time"] - self.t0, 2), "step": event["step"],
                               "label": event["step"].replace("_services", "")})
        elif event.get("event") == "finished":
            self.finished = event

    def now(self) -> float:
        return round(time.time() - self.t0, 3)


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run_one(args: argparse.Namespace, update: str, n: int, strategy: str, rep: int
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Deploy v1, load, upgrade under load, settle, remove; the run record and requests."""
    remove_stack(STACK, say=say)
    wait_quiet(args.quiet_wait)
    vote_port, result_port, admin = free_port(), free_port(), free_port()
    env = stack_env(vote_port=vote_port, result_port=result_port, replicas=n)
    dans(env, "deploy", "-f", str(STACKS / "v1.yml"), "--stack", STACK, "--wait",
         "--lb-admin-port", str(admin), quiet=True)
    url = f"http://127.0.0.1:{vote_port}"
    wait_serving(url)
    rec = Recorder()
    interval = (args.voters + args.page_readers) / args.max_load
    loads = [Load(url, args.voters, 900, interval=interval, on_request=rec.request("vote")),
             Load(url, args.page_readers, 900, interval=interval, page=True,
                  on_request=rec.request("page"))]
    time.sleep(args.steady)  # the steady window before the upgrade (a measurement, no sync)
    start = rec.now()
    seconds = dans(env, "upgrade", "-f", str(STACKS / f"{update}.yml"), "--stack", STACK,
                   "--strategy", strategy, "--json", quiet=True, on_line=rec.line)
    end_upgrade = rec.now()
    time.sleep(args.settle)  # the settle window after it
    end = rec.now()
    for load in loads:
        load.finish()
    run = {"key": key(update, n, strategy, rep), "update": update, "instances": n,
           "strategy": strategy, "repetition": rep, "upgrade_start": start,
           "upgrade_end": end_upgrade, "end": end, "upgrade_s": round(seconds, 1),
           "extra_replicas": rec.finished.get("extra_replicas", 0), "steps": rec.steps,
           "load": {"vote_voters": args.voters, "page_readers": args.page_readers,
                    "interval": round(interval, 2), "steady": args.steady,
                    "settle": args.settle},
           "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec.t0))}
    return run, rec.requests


def save(out: Path, run: dict[str, Any], requests: list[dict[str, Any]]) -> None:
    (out / "requests").mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "requests" / f"{run['key']}.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in requests)
    with (out / "runs.jsonl").open("a") as fh:
        fh.write(json.dumps(run) + "\n")


def load_requests(out: Path, run_key: str) -> list[dict[str, Any]]:
    with gzip.open(out / "requests" / f"{run_key}.jsonl.gz", "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def bar(done: int, total: int, elapsed: float, per_run: float | None, now: str) -> str:
    width = 24
    filled = width * done // max(total, 1)
    eta = "?" if per_run is None else _mmss(per_run * (total - done))
    return (f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} runs, "
            f"elapsed {_mmss(elapsed)}, ETA {eta}{'  now: ' + now if now else ''}")


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def run_matrix(args: argparse.Namespace) -> None:
    """Run every cell not yet in DIR, with a progress bar and an ETA on stderr."""
    done_keys = {r["key"] for r in read_jsonl(args.out / "runs.jsonl")}
    todo = [c for c in matrix(args) if key(*c) not in done_keys]
    skipped = len(matrix(args)) - len(todo)
    if skipped:
        say(f"{skipped} runs already in {args.out}, skipped")
    if args.max_runs is not None and len(todo) > args.max_runs:
        say(f"{len(todo) - args.max_runs} runs left for the next invocation (--max-runs)")
        todo = todo[:args.max_runs]
    t0 = time.monotonic()
    try:
        for i, cell in enumerate(todo):
            per = (time.monotonic() - t0) / i if i else None
            print(bar(i, len(todo), time.monotonic() - t0, per, key(*cell)), file=sys.stderr,
                  flush=True)
            run, requests = run_one(args, *cell)
            save(args.out, run, requests)
    finally:
        remove_stack(STACK, say=say)
    print(bar(len(todo), len(todo), time.monotonic() - t0, 0.0, ""), file=sys.stderr)


def report(args: argparse.Namespace) -> None:
    """CSV, Markdown and plots from every run in DIR."""
    from availability_plots import availability_plot, timeline_grid

    runs = read_jsonl(args.out / "runs.jsonl")
    cache = {r["key"]: load_requests(args.out, r["key"]) for r in runs}
    summaries = [summarize(r, cache[r["key"]]) for r in runs]
    write_csv(args.out / "results.csv", summaries)
    plots = []
    for update in sorted({r["update"] for r in runs}):
        name = f"availability-{update}.png"
        if availability_plot(args.out / name, summaries, update):
            plots.append(name)
        for n in sorted({r["instances"] for r in runs if r["update"] == update}):
            cells = [(r, cache[r["key"]]) for s in STRATEGIES for r in runs
                     if (r["update"], r["instances"], r["strategy"], r["repetition"])
                     == (update, n, s, 1)]
            if cells:
                name = f"timeline-{update}-{n}.png"
                timeline_grid(args.out / name, cells)
                plots.append(name)
    listed = args.out / "commands.txt"
    commands = listed.read_text().splitlines() if listed.exists() else []
    if not runs:
        sys.exit(f"bench: no runs in {args.out}")
    write_markdown(args.out / "report.md", summaries, commands=commands, plots=plots,
                   settings=runs[0]["load"])
    print((args.out / "report.md").read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        command = "python scripts/bench_availability.py " + shlex.join(sys.argv[1:])
        with (args.out / "commands.txt").open("a") as fh:
            fh.write(command + "\n")
        run_matrix(args)
    report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
