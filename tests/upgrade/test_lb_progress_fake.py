"""What `dans upgrade` tells the LB about its progress (upgrade_manager.lb_progress).

The facade runs on the fake swarm with the in-memory LB, which reads every report with the
real LB's parser: one report per step start, one at the end; the versions of the groups
follow the plan; a failed report never fails the upgrade and is not retried.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby
from typing import Any

import pytest

from tests.fakelb import FakeLB
from tests.upgrade.fakestack import STACK, deployed, options
from tests.upgrade.stacks import BASE, doc
from upgrade_manager import upgrade
from upgrade_manager.errors import LBError, UpgradeError
from upgrade_manager.lb_progress import group_versions
from upgrade_manager.managed import MAIN_GROUP
from upgrade_manager.model import Step, StepKind

NEW = doc(front={"environment": {"API_URL": "http://api:8000/v2"}}, api={"image": "app/api:2"})
Events = list[tuple[str, str, str]]


@pytest.fixture
def lb(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLB]:
    from upgrade_manager import state as state_module

    monkeypatch.setattr(state_module, "HEARTBEAT_EVERY", 3600.0)
    gw = deployed(BASE, stop_delay=0)
    fake = FakeLB(gw, STACK, watch=True)
    monkeypatch.setattr(upgrade, "lb_admin", lambda _gw, _stack, _url=None: fake)
    yield fake


def run(lb: FakeLB, **kw: Any) -> tuple[Events, Exception | None]:
    events: Events = []

    def report(event: str, step: Step | None, _s: float, message: str) -> None:
        events.append((event, step.key if step else "", message))

    try:
        upgrade.run_upgrade(lb.gw, options(NEW, **kw), report)
    except UpgradeError as exc:
        return events, exc
    return events, None


def test_one_report_per_step_start_and_one_at_the_end(lb: FakeLB) -> None:
    events, failed = run(lb)
    assert failed is None
    starts = [key for event, key, _ in events if event == "start"]
    reports = lb.reports
    assert len(reports) == len(starts) + 1
    assert [r["step"]["index"] for r in reports] == [*range(1, len(starts) + 1), len(starts)]
    assert [r["step"].get("key") for r in reports[:-1]] == starts
    assert {r["phase"] for r in reports[:-1]} == {"running"} and reports[-1]["phase"] == "done"
    gen = reports[0]["generation"]
    assert {(r["stack"], r["strategy"], r["generation"]) for r in reports} == {
        (STACK, "dans", gen)}
    # The temporary group serves the new generation throughout; `main` takes it only once
    # the canonical services have converged.
    converge = starts.index("converge:canonical")
    for i, r in enumerate(reports):
        assert r["versions"][f"dans-{gen}"] == gen
        assert r["versions"].get(MAIN_GROUP) == (gen if i > converge else None), i
    assert lb.progress.status.phase == "done"
    assert lb.metrics.versions[MAIN_GROUP] == gen


def test_a_failure_after_converge_rolls_main_back_to_its_old_version(
    lb: FakeLB, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = lb.set_routes
    calls = iter(range(1, 100))

    def set_routes(table: Any) -> Any:
        if next(calls) == 2:  # route:lb-back, after the converge
            raise LBError("the LB went away")
        return real(table)

    monkeypatch.setattr(lb, "set_routes", set_routes)
    _, failed = run(lb)
    assert failed is not None and "rolled back" in str(failed)
    phases = [r["phase"] for r in lb.reports]
    assert [p for p, _ in groupby(phases)] == ["running", "failed", "rolling-back",
                                               "rolled-back"]
    failed_report = lb.reports[phases.index("failed")]
    assert failed_report["step"]["key"] == "route:lb-back"
    assert lb.metrics.versions[MAIN_GROUP] == "deployed"  # what it was before the upgrade


def test_a_failing_report_is_said_once_and_the_upgrade_goes_on(
    lb: FakeLB, monkeypatch: pytest.MonkeyPatch,
) -> None:
    tries: list[int] = []

    def broken(progress: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        tries.append(1)
        raise LBError("LB admin PUT /v1/upgrade: 404 Not Found")

    monkeypatch.setattr(lb, "report_upgrade", broken)
    events, failed = run(lb)
    assert failed is None
    said = [m for event, _, m in events if event == "info" and "/metrics" in m]
    assert len(said) == 1 and "404" in said[0] and "goes on" in said[0]
    assert tries == [1]


def test_plans_that_never_route_through_the_lb_send_no_report(lb: FakeLB) -> None:
    _, failed = run(lb, strategy="rolling")
    assert failed is None and lb.reports == []


@pytest.mark.parametrize("strategy", ["isolated", "delayed"])
def test_split_plans_route_through_the_lb_and_report_every_step(lb: FakeLB,
                                                               strategy: str) -> None:
    _, failed = run(lb, strategy=strategy)
    assert failed is None and lb.reports
    assert lb.reports[-1]["phase"] == "done"
    assert {r["strategy"] for r in lb.reports} == {strategy}


def test_group_versions_follow_the_steps() -> None:
    table: dict[str, Any] = {"frontends": [{"groups": {"main": {}, "dans-9": {}}}]}
    steps = [Step(StepKind.ROUTE, "lb", {"table": table}),
             Step(StepKind.CONVERGE, "canonical"),
             Step(StepKind.ROUTE, "lb-back", {"table": table})]
    assert group_versions(steps, "9", 0, "9") == {"dans-9": "9"}
    assert group_versions(steps, "9", 1, "9") == {"dans-9": "9"}
    assert group_versions(steps, "9", 2, "9") == {"dans-9": "9", "main": "9"}
    assert group_versions(steps, "9", 2, None) == {"dans-9": "9"}
