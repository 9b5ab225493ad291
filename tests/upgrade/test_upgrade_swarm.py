"""`dans upgrade` of the voting app on the real swarm, under steady load through the LB.

Each scenario of the paper (change-api, add-api, candidates) upgrades vote and worker (and
result) from v1 to v2. Invariants checked (DESIGN.md §4): no failed and no mixed-version
request; the db's task never replaced; the end state equal to a fresh `dans deploy` of v2,
with no temporary service, relay or network left.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import wait_until
from tests.upgrade.voting import DansStack, Load
from tests.voting_app.stacks import http, never_healthy_worker

SCENARIOS = ["change-api", "add-api", "candidates"]


def report(label: str, stats: dict[str, object], seconds: float | None = None) -> None:
    keep = {k: stats[k] for k in ("ok", "failed", "mixed", "p50_ms", "p99_ms", "max_ms")}
    print(f"\n{label}: {json.dumps(keep)}" + (f" upgrade {seconds:.1f}s" if seconds else ""))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_dans_upgrade_has_no_failed_or_mixed_request(
        dans_stack: Callable[..., DansStack], scenario: str) -> None:
    stack = dans_stack()
    stack.deploy("v1")
    db_tasks = stack.task_ids("db")
    with Load(f"http://127.0.0.1:{stack.vote_port}") as load:
        time.sleep(3)
        t0 = time.monotonic()
        done = stack.upgrade(scenario)
        seconds = time.monotonic() - t0
        time.sleep(3)
        stats = load.finish()
    report(f"dans {scenario}", stats, seconds)
    assert done.returncode == 0, done.stdout + done.stderr
    assert stats["failed"] == 0, stats["errors"]
    assert stats["mixed"] == 0, stats["chains"]
    assert stats["ok"] > 50
    served = set(stats["chains"])
    assert any("@1" in c for c in served) and any("@2" in c for c in served), served
    assert stack.differences(scenario) == {}
    assert stack.task_ids("db") == db_tasks, "the db was restarted"


def test_rolling_strategy_mixes_versions(dans_stack: Callable[..., DansStack]) -> None:
    stack = dans_stack()
    stack.deploy("v1")
    with Load(f"http://127.0.0.1:{stack.vote_port}") as load:
        time.sleep(2)
        done = stack.upgrade("change-api", "--strategy", "rolling")
        assert done.returncode == 0, done.stdout + done.stderr
        stack.wait_serving()
        wait_until(lambda: stack.differences("change-api") == {} and all(
            stack.gateway.service_state(f"{stack.name}_{s}").converged
            for s in ("vote", "worker")), timeout=240, interval=2.0,
            what="the rolling update to finish")
        time.sleep(2)
        stats = load.finish()
    report("rolling change-api", stats)
    assert stats["failed"] + stats["mixed"] > 0, "a rolling update crossed no versions"


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 300.0) -> str:
    """Lines of a spawned dans until one contains `marker` (the process keeps running)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no line with {marker!r} in:\n{''.join(seen)}")


def kill(proc: subprocess.Popen[str]) -> None:
    """kill -9, as a crash or an OOM kill would."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stdout:
        proc.stdout.close()


def test_lock_then_kill_then_resume(dans_stack: Callable[..., DansStack]) -> None:
    stack = dans_stack()
    stack.deploy("v1")
    db_tasks = stack.task_ids("db")
    with Load(f"http://127.0.0.1:{stack.vote_port}") as load:
        time.sleep(2)
        first = stack.spawn("upgrade", "-f", stack.file("change-api"), "--stack", stack.name)
        try:
            _read_until(first, "create_services level-0")
            second = stack.upgrade("change-api")
            assert second.returncode != 0
            assert "another dans" in second.stderr, second.stderr
            _read_until(first, "converge canonical")
            time.sleep(1.5)  # mid-converge
        finally:
            kill(first)
        status = stack.dans("status", "--stack", stack.name, "--json")
        state = json.loads(status.stdout)["upgrade"]
        assert state["status"] == "running" and state["stale"], status.stdout
        resumed = stack.upgrade("change-api")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resuming the unfinished upgrade" in resumed.stdout
        time.sleep(2)
        stats = load.finish()
    report("kill -9 + resume", stats)
    assert (stats["failed"], stats["mixed"]) == (0, 0), (stats["errors"], stats["chains"])
    assert stack.differences("change-api") == {}
    assert stack.task_ids("db") == db_tasks
    assert json.loads(stack.dans("status", "--stack", stack.name, "--json").stdout)[
        "upgrade"] is None


def test_kill_then_rollback(dans_stack: Callable[..., DansStack]) -> None:
    stack = dans_stack()
    stack.deploy("v1")
    with Load(f"http://127.0.0.1:{stack.vote_port}") as load:
        time.sleep(2)
        proc = stack.spawn("upgrade", "-f", stack.file("add-api"), "--stack", stack.name)
        try:
            _read_until(proc, "converge canonical")
            time.sleep(1.5)
        finally:
            kill(proc)
        back = stack.dans("rollback", "--stack", stack.name)
        assert back.returncode == 0, back.stdout + back.stderr
        time.sleep(2)
        stats = load.finish()
    report("kill -9 + rollback", stats)
    assert (stats["failed"], stats["mixed"]) == (0, 0), (stats["errors"], stats["chains"])
    assert stack.differences("v1") == {}
    status, _, chain = http("POST", f"http://127.0.0.1:{stack.vote_port}/api/vote",
                            {"voter_id": "after-rollback", "vote": "a"})
    assert (status, chain) == (200, "vote@1,worker@1")


def test_unhealthy_new_version_rolls_back_by_itself(
        dans_stack: Callable[..., DansStack], tmp_path: Path) -> None:
    path = never_healthy_worker(tmp_path)
    stack = dans_stack()
    stack.deploy("v1")
    with Load(f"http://127.0.0.1:{stack.vote_port}") as load:
        time.sleep(2)
        done = stack.upgrade(str(path), "--health-timeout", "25")
        time.sleep(2)
        stats = load.finish()
    report("unhealthy v2", stats)
    assert done.returncode != 0
    assert "rolled back" in done.stderr, done.stderr
    assert (stats["failed"], stats["mixed"]) == (0, 0), (stats["errors"], stats["chains"])
    assert stack.differences("v1") == {}
