"""The LB's /metrics during a real `dans upgrade`: the step and generation move, and requests
are counted under the version that served them.

The test reads /metrics as dans itself reaches the admin API (its own helper channel on the
stack's edge network: the API has no published port), polling while the upgrade runs in a
process of its own under steady load.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests.lb.promtext import parse, total, values
from tests.support import wait_until
from tests.upgrade.voting import DansStack, Load
from upgrade_manager.upgrade import lb_admin

POLL_EVERY = 0.25  # seconds between two reads of /metrics
LIMIT = 400.0  # seconds the upgrade may take at most


def _upgrade_state(text: str) -> tuple[float, float, str]:
    """(active, step index, generation) as the exposition says."""
    info = values(text, "dans_lb_upgrade_info")
    generation = dict(next(iter(info))).get("generation", "") if info else ""
    return (total(text, "dans_lb_upgrade_active"), total(text, "dans_lb_upgrade_step_index"),
            generation)


def test_metrics_follow_an_upgrade_step_by_step_and_count_by_version(
        dans_stack: Callable[..., DansStack]) -> None:
    stack = dans_stack()
    stack.deploy("v1")
    client = lb_admin(stack.gateway, stack.name)
    try:
        with Load(f"http://127.0.0.1:{stack.vote_port}") as load:
            wait_until(lambda: total(client.metrics(), "dans_lb_requests_total",
                                     version="deployed", code="200") >= 20,
                       timeout=60, interval=0.5, what="votes counted under the deployed version")
            before = client.metrics()
            assert _upgrade_state(before)[0] == 0
            proc = stack.spawn("upgrade", "-f", stack.file("change-api"), "--stack", stack.name)
            seen: list[tuple[float, float, str]] = []
            deadline = time.monotonic() + LIMIT
            try:
                while proc.poll() is None and time.monotonic() < deadline:
                    text = client.metrics()
                    parse(text)
                    seen.append(_upgrade_state(text))
                    time.sleep(POLL_EVERY)
            finally:
                if proc.poll() is None:
                    proc.kill()
                out = proc.communicate(timeout=60)[0]
            assert proc.returncode == 0, out
            # Requests after the upgrade go to the new version, and are counted under it.
            generation = _upgrade_state(client.metrics())[2]
            wait_until(lambda: total(client.metrics(), "dans_lb_requests_total",
                                     group="main", version=generation) > 0,
                       timeout=60, interval=0.5, what="votes counted under the new version")
            stats = load.finish()
        final = client.metrics()
    finally:
        client.close()
    running = [s for s in seen if s[0] == 1]
    by_version: dict[str, float] = {}
    for labels, n in values(final, "dans_lb_requests_total").items():
        version = dict(labels)["version"]
        by_version[version] = by_version.get(version, 0) + n
    print(f"\n/metrics polled {len(seen)} times during the upgrade, step indices seen "
          f"{sorted({int(s[1]) for s in running})}; generation {generation}; requests by "
          f"(version) {json.dumps(by_version)}; load {stats['ok']} ok, {stats['failed']} failed")
    assert stats["failed"] == 0, stats["errors"]
    assert len({s[1] for s in running}) >= 3, seen  # the step index moved while it ran
    assert {s[2] for s in running} == {generation} and generation, seen
    assert total(final, "dans_lb_upgrade_active") == 0
    assert total(final, "dans_lb_upgrade_phase", phase="done") == 1
    assert total(final, "dans_lb_upgrade_step_index") == total(final, "dans_lb_upgrade_steps")
    # Counted per version: the old one before the switch, the new one by the temporary
    # group during the upgrade and by `main` after it; counters never went down.
    assert total(final, "dans_lb_requests_total", version="deployed") >= total(
        before, "dans_lb_requests_total", version="deployed")
    assert total(final, "dans_lb_requests_total", group=f"dans-{generation}",
                 version=generation) > 0
    assert total(final, "dans_lb_requests_total", group="main", version=generation) > 0
    errors = total(final, "dans_lb_requests_total", code="502") + total(
        final, "dans_lb_requests_total", code="503")
    assert errors == 0, final
