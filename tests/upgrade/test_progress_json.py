"""`dans upgrade --json`: one JSON event per line, with what a dashboard keys on."""

from __future__ import annotations

import json

import pytest

from upgrade_manager._cli_upgrade import Progress
from upgrade_manager.model import Step, StepKind


def test_events_are_one_json_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    step = Step(StepKind.ROUTE, "lb", {}, "new requests go to the new chain")
    progress = Progress(as_json=True)
    progress("start", step, 0.0, "4/11")
    progress("done", step, 0.25, "")
    progress("failed", step, 1.5, "the LB refused")
    progress("info", None, 0.0, "resuming")
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["step_started", "step_finished", "step_failed",
                                            "info"]
    assert events[0]["index"] == 4 and events[0]["total"] == 11
    assert events[0]["kind"] == "route" and events[0]["target"] == "lb"
    assert events[0]["step"] == "route:lb"
    assert events[1]["seconds"] == 0.25 and events[2]["message"] == "the LB refused"
    assert events[3]["message"] == "resuming" and "step" not in events[3]
    assert all(e["time"] > 1.7e9 and e["elapsed_s"] >= 0 for e in events)


def test_text_progress_is_one_line_per_event(capsys: pytest.CaptureFixture[str]) -> None:
    step = Step(StepKind.DRAIN, "lb", {}, "")
    progress = Progress(as_json=False)
    progress("start", step, 0.0, "5/11")
    progress("done", step, 0.1, "")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "5/11 drain lb ..." in out[0] and "ok (0.1s)" in out[1]
