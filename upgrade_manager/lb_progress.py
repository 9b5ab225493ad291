"""The upgrade's progress, pushed to the stack's LB so that its /metrics shows it.

One admin call (PUT /v1/upgrade, `lb._progress`) when each step starts, one when a step fails
and one at the end: the state and the group versions go together in that call. A step's
finish is not sent on its own, since the next step's start (or the end) says it. The calls
go through the session's admin channel like the route and drain steps, a few milliseconds
each. Only plans that route through the LB (the dans strategy) push: a rolling or isolated
upgrade never needs the LB, and should not start a helper for it.

A push that fails (an LB from an older dans answers 404, the channel breaks) never fails the
upgrade: it is reported once as an info line and logged, and the pushes stop for the rest
of the run, so a broken channel costs one timeout, not one per step.

Versions: the temporary group of the generation serves the new generation; `main` serves
what the LB already counted it under (the previous upgrade's generation, or "deployed")
until the step that moves the canonical services to the new specs has finished; a rollback
gives `main` back the version it had when this run began.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from upgrade_manager.managed import MAIN_GROUP
from upgrade_manager.model import Plan, Step

__all__ = ["CANONICAL_KINDS", "LBProgress", "group_versions", "uses_lb"]

log = logging.getLogger("dans.upgrade")
# Steps after which the canonical services (the `main` group) run the new specs.
CANONICAL_KINDS = ("converge", "update_services", "update_service")
_UNSAFE = re.compile(r'["\\/\s]')
Reporter = Callable[[str, Step | None, float, str], None]


class UpgradeBoard(Protocol):
    """What the pusher needs of the admin client (`lb.client.AdminClient`)."""

    def report_upgrade(self, progress: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        ...


def uses_lb(steps: Sequence[Step]) -> bool:
    """True when a plan routes through the LB (only then is its progress pushed)."""
    return any(s.kind in ("route", "drain") for s in steps)


def _temporary_groups(steps: Sequence[Step]) -> set[str]:
    return {g for s in steps if s.kind == "route" for fe in s.args["table"]["frontends"]
            for g in fe["groups"] if g != MAIN_GROUP}


def group_versions(steps: Sequence[Step], generation: str, finished: int,
                   main_after: str | None = None) -> dict[str, str]:
    """The version each LB group serves once `steps[:finished]` have run.

    The temporary groups always serve `generation`; `main` takes `main_after` (the new
    generation for an upgrade, the old version for a rollback) once a step that gives the
    canonical services their new specs has finished, and is left out before (the LB keeps
    what it has).
    """
    out = {g: generation for g in sorted(_temporary_groups(steps))}
    if main_after is not None and any(s.kind in CANONICAL_KINDS for s in steps[:finished]):
        out[MAIN_GROUP] = main_after
    return out


def _key(step: Step) -> str:
    return _UNSAFE.sub("_", step.key)[:200]


class LBProgress:
    """Pushes one run's steps to the LB: the plan's, or with `steps` a rollback's.

    `before` (for a rollback) is the version `main` had before the upgrade, as the
    upgrade's own LBProgress learnt it from the LB's first answer.
    """

    def __init__(self, lb: Callable[[], UpgradeBoard], plan: Plan, stack: str,
                 report: Reporter, *, steps: Sequence[Step] | None = None,
                 before: str | None = None) -> None:
        self.lb = lb
        self.plan = plan
        self.stack = stack
        self.report = report  # the run's reporter: a failed push becomes an info line
        self.rollback = steps is not None  # a rollback runs its own steps, not the plan's
        self.steps: Sequence[Step] = plan.steps if steps is None else steps
        self.before = before  # main's version when the run began, once the LB told it
        self.enabled = uses_lb(plan.steps)
        self.calls = 0

    def step(self, event: str, index: int, total: int, step: Step) -> None:
        """The executor's hook: push at a step's start and failure."""
        if event == "start":
            self._push(self._phase(), index, index + 1, total, step)
        elif event == "failed":
            self._push("failed", index, index + 1, total, step)

    def finish(self, phase: str) -> None:
        """The run ended in `phase` (done, failed, rolled-back)."""
        total = len(self.steps)
        self._push(phase, total, total, total, self.steps[-1] if self.steps else None)

    def _phase(self) -> str:
        return "rolling-back" if self.rollback else "running"

    def _push(self, phase: str, finished: int, index: int, total: int,
              step: Step | None) -> None:
        if not self.enabled:
            return
        generation = self.plan.generation
        if self.rollback:
            main = self.before or f"before-{generation}"
        else:
            main = generation
        body: dict[str, Any] = {
            "stack": self.stack, "generation": generation, "strategy": self.plan.strategy,
            "phase": phase,
            "step": {"index": index, "total": total,
                     **({"kind": step.kind, "key": _key(step)} if step else {})},
            "versions": group_versions(self.steps, generation, finished, main),
        }
        try:
            answer = self.lb().report_upgrade(body)
            self.calls += 1
        except Exception as exc:  # whatever it is, metrics must never fail the upgrade
            self.enabled = False
            log.warning("upgrade progress not sent to the LB: %s", exc)
            self.report("info", None, 0.0, f"the LB's /metrics will not show this upgrade's "
                        f"progress ({exc}); the upgrade goes on")
            return
        if self.before is None and not self.rollback and MAIN_GROUP not in body["versions"]:
            # What the LB counts `main` under before this run changes it.
            self.before = str((answer.get("versions") or {}).get(MAIN_GROUP, "deployed"))
