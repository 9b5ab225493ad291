"""The paper's baselines on the real swarm: `dans upgrade --strategy isolated|delayed` of the
voting app under bounded load through the LB.

Checked: the upgrade completes with its planned steps (worker first, then vote, the entry
service the LB switches), the end state is what a fresh `dans deploy` of v2 gives (nothing
temporary left, the db's task untouched), the new halves are health-gated (a worker that
never becomes healthy rolls the upgrade back by itself), and the weakness the paper names
shows: between worker's move and vote's switch, old votes reach the new worker and fail.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.upgrade.voting import DansStack, Load
from tests.voting_app.stacks import never_healthy_worker

# Two instances each: the new half of each is one instance, the old half one.
KEYS = {
    "isolated": ["scale_services:worker-old-half", "create_services:worker-new-half"],
    "delayed": ["create_services:worker-new-half", "scale_services:worker-instance-1"],
}


def steps(strategy: str) -> list[str]:
    def start(short: str) -> list[str]:
        return [k.replace("worker", short) for k in KEYS[strategy]]
    return [*start("worker"), "update_services:worker-rest", "remove_services:worker-temporary",
            *start("vote"), "route:vote-lb", "drain:vote-lb", "update_services:vote-rest",
            "route:vote-lb-back", "drain:vote-lb-back", "route:vote-lb-final",
            "remove_services:vote-temporary"]


def started(stdout: str) -> list[str]:
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [e["step"] for e in events if e["event"] == "step_started"]


@pytest.mark.parametrize("strategy", ["isolated", "delayed"])
def test_a_split_strategy_completes_and_ends_as_a_fresh_deploy(
        dans_stack: Callable[..., DansStack], strategy: str) -> None:
    stack = dans_stack()
    stack.deploy("v1")
    db_tasks = stack.task_ids("db")
    with Load(f"http://127.0.0.1:{stack.vote_port}", limit_s=240) as load:
        time.sleep(2)  # answers from v1 first (a measurement window, not a wait for a state)
        done = stack.upgrade("change-api", "--strategy", strategy, "--json")
        time.sleep(2)
        stats = load.finish()
    print(f"\n{strategy} change-api: ok {stats['ok']} failed {stats['failed']} "
          f"mixed {stats['mixed']} errors {stats['errors']}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert started(done.stdout) == steps(strategy)
    assert stack.differences("change-api") == {}
    assert stack.task_ids("db") == db_tasks, "the db was restarted"
    served = set(stats["chains"])
    assert "vote@1,worker@1" in served
    assert "vote@2-change-api,worker@2-change-api" in served
    # Worker moved first, vote later: old votes reached the new worker, which refused them.
    assert stats["errors"].get("HTTP 502 (worker 410)", 0) > 0, stats["errors"]
    assert stats["mixed"] > 0


def test_a_new_half_that_never_becomes_healthy_rolls_back(
        dans_stack: Callable[..., DansStack], tmp_path: Path) -> None:
    path = never_healthy_worker(tmp_path)
    stack = dans_stack()
    stack.deploy("v1")
    done = stack.upgrade(str(path), "--strategy", "delayed", "--health-timeout", "20",
                         "--json")
    assert done.returncode != 0
    assert "rolled back" in done.stderr + done.stdout, done.stderr
    # Gated: the scale step that starts the new worker never finished, nothing came after.
    assert started(done.stdout)[:2] == steps("delayed")[:2]
    assert "route:vote-lb" not in started(done.stdout)
    assert stack.differences("v1") == {}
