"""What the upgrade manager tells the LB about the upgrade in progress, for /metrics.

dans pushes its state with PUT /v1/upgrade at the start of every step and once at the end
(`upgrade_manager.lb_progress`); a Prometheus scraping the LB then sees which upgrade runs,
which step of how many, in which phase, and (through the versions of the groups,
`lb._metrics.Metrics.set_versions`) which version served each request. Body, every key
optional:

    {"stack": "shop", "generation": "48213", "strategy": "dans", "phase": "running",
     "step": {"index": 3, "total": 12, "kind": "route", "key": "route:lb"},
     "versions": {"main": "deployed", "dans-48213": "48213"}}

Everything is checked before anything is kept: names as the routing table checks them,
versions, generations, strategies and step kinds as short tokens, so that what ends up in
label values stays small, printable and bounded in number.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from lb._metrics import MAX_VERSIONS, head, sample
from lb.errors import LBError
from lb.table import check_name

__all__ = ["ACTIVE_PHASES", "PHASES", "Progress", "UpgradeStatus", "parse_update"]

PHASES = ("idle", "running", "done", "failed", "rolling-back", "rolled-back")
ACTIVE_PHASES = ("running", "rolling-back")
MAX_STEPS = 10_000
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclass(frozen=True)
class UpgradeStatus:
    """The last state the upgrade manager reported (the defaults: none reported)."""

    stack: str = ""
    generation: str = ""
    strategy: str = ""
    phase: str = "idle"
    step_index: int = 0
    steps: int = 0
    step_kind: str = ""
    step_key: str = ""


def _token(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise LBError(f"{what} must be 1-64 letters, digits or . _ : - (starting with a letter "
                       f"or digit), not {str(value)[:80]!r}")
    return value


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_STEPS:
        raise LBError(f"{what} must be a whole number from 0 to {MAX_STEPS}")
    return value


def _status(body: dict[str, Any]) -> UpgradeStatus:
    step = body.get("step") or {}
    if not isinstance(step, dict):
        raise LBError("step must be an object")
    phase = body.get("phase", "idle")
    if phase not in PHASES:
        raise LBError(f"phase must be one of {', '.join(PHASES)}")
    status = UpgradeStatus(
        stack=check_name(body["stack"], "stack") if "stack" in body else "",
        generation=_token(body["generation"], "generation") if "generation" in body else "",
        strategy=_token(body["strategy"], "strategy") if "strategy" in body else "",
        phase=phase,
        step_index=_count(step.get("index", 0), "step.index"),
        steps=_count(step.get("total", 0), "step.total"),
        step_kind=_token(step["kind"], "step.kind") if "kind" in step else "",
        step_key=check_name(step["key"], "step.key") if "key" in step else "",
    )
    if status.step_index > status.steps:
        raise LBError("step.index must not exceed step.total")
    return status


def parse_update(body: Any) -> tuple[UpgradeStatus, dict[str, str]]:
    """The status and the group versions of a PUT /v1/upgrade body; LBError (400) if bad."""
    if not isinstance(body, dict):
        raise LBError("expected a JSON object")
    versions = body.get("versions") or {}
    if not isinstance(versions, dict) or len(versions) > MAX_VERSIONS:
        raise LBError(f"versions must be an object of at most {MAX_VERSIONS} groups")
    checked = {check_name(g, "group"): _token(v, f"version of group {g}")
               for g, v in versions.items()}
    return _status(body), checked


class Progress:
    """The upgrade state one LB exports (kept by the process that serves the public API)."""

    def __init__(self) -> None:
        self.status = UpgradeStatus()
        self.updates = 0
        self.step_started = 0.0

    def update(self, status: UpgradeStatus) -> dict[str, Any]:
        """Take a new status; the step's start time is the LB's clock when the step changed."""
        old = self.status
        if (status.generation, status.phase, status.step_index, status.step_key) != (
                old.generation, old.phase, old.step_index, old.step_key):
            self.step_started = time.time()
        self.status = status
        self.updates += 1
        return asdict(self.status)

    def render(self) -> str:
        """The upgrade families in the Prometheus text format."""
        s = self.status
        out = head("dans_lb_upgrade_updates_total")
        out.append(sample("dans_lb_upgrade_updates_total", self.updates))
        out += head("dans_lb_upgrade_active")
        out.append(sample("dans_lb_upgrade_active", int(s.phase in ACTIVE_PHASES)))
        out += head("dans_lb_upgrade_phase")
        out += [sample("dans_lb_upgrade_phase", int(p == s.phase), [("phase", p)])
                for p in PHASES]
        out += head("dans_lb_upgrade_info")
        if s.stack or s.generation:
            out.append(sample("dans_lb_upgrade_info", 1, [
                ("stack", s.stack), ("generation", s.generation), ("strategy", s.strategy)]))
        out += head("dans_lb_upgrade_step_index")
        out.append(sample("dans_lb_upgrade_step_index", s.step_index))
        out += head("dans_lb_upgrade_steps")
        out.append(sample("dans_lb_upgrade_steps", s.steps))
        out += head("dans_lb_upgrade_step_info")
        if s.step_kind or s.step_key:
            out.append(sample("dans_lb_upgrade_step_info", 1,
                              [("kind", s.step_kind), ("step", s.step_key)]))
        out += head("dans_lb_upgrade_step_started_timestamp_seconds")
        out.append(f"dans_lb_upgrade_step_started_timestamp_seconds {self.step_started:.3f}")
        return "\n".join(out) + "\n"
