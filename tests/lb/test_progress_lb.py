"""The upgrade's progress and per-version counts through a real LB process (1 and 2 workers)."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest

from lb.table import RoutingTable
from tests.lb.promtext import parse, total
from tests.lb.support import TOKEN, Backend, LBProcess, free_port, frontend, get


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_pushed_progress_and_versions_show_in_metrics(
    backend: Callable[[str], Backend], lb_process: Callable[..., LBProcess], workers: int,
) -> None:
    old, new = backend("OLD"), backend("NEW")
    port = free_port()
    lb = lb_process({"frontends": [frontend("web", port, {"main": [old.addr]}, "main")]},
                    workers=workers)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(5):
        assert get(url) == (200, "OLD")
    # As dans does: the versions come first, the temporary group is routed to after.
    answer = lb.admin.report_upgrade({
        "stack": "shop", "generation": "48213", "strategy": "dans", "phase": "running",
        "step": {"index": 4, "total": 9, "kind": "route", "key": "route:lb"},
        "versions": {"dans-48213": "48213"}})
    assert answer["upgrade"]["step_index"] == 4
    assert answer["versions"] == {"dans-48213": "48213"}
    lb.admin.set_routes(RoutingTable.from_dict({"frontends": [frontend(
        "web", port, {"main": [old.addr], "dans-48213": [new.addr]}, "dans-48213")]}))
    for _ in range(7):
        assert get(url) == (200, "NEW")
    text = lb.admin.metrics()
    parse(text)
    assert total(text, "dans_lb_requests_total", version="deployed", group="main",
                 code="200") == 5
    assert total(text, "dans_lb_requests_total", version="48213", group="dans-48213",
                 code="200") == 7
    # Gauges of the progress are the LB's, not added up over its workers.
    assert total(text, "dans_lb_upgrade_active") == 1
    assert total(text, "dans_lb_upgrade_updates_total") == 1
    assert total(text, "dans_lb_upgrade_step_index") == 4
    assert total(text, "dans_lb_upgrade_info", generation="48213", stack="shop") == 1
    lb.admin.report_upgrade({"stack": "shop", "generation": "48213", "strategy": "dans",
                             "phase": "done", "step": {"index": 9, "total": 9},
                             "versions": {"main": "48213"}})
    assert get(url) == (200, "NEW")
    text = lb.admin.metrics()
    assert total(text, "dans_lb_upgrade_active") == 0
    assert total(text, "dans_lb_upgrade_phase", phase="done") == 1
    assert total(text, "dans_lb_requests_total", version="deployed") == 5  # kept, not moved


def test_metrics_answer_in_the_prometheus_content_type(
    shared_lb: Callable[..., LBProcess],
) -> None:
    lb = shared_lb({"frontends": []})
    req = urllib.request.Request(f"http://127.0.0.1:{lb.admin_port}/metrics",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        parse(resp.read().decode())
