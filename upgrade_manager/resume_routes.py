"""A resumed upgrade first gives every LB replica the table in force.

An upgrade killed between two steps resumes at the first step not recorded as done. Its
earlier route steps are done, but an LB replica may since have restarted (its container or
its node's engine) and come back without a peer to take the table from (its node's DNS not
answering yet, every peer restarting too): it then serves the table of its spec, which routes
to the canonical services, and the resumed step may be the one that stops them. So before
resuming, dans sends again the table of the last route step done (`set_routes` waits for
every replica, starting ones included, to report it). A resume at a route step needs nothing:
that step sends its own table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from upgrade_manager.model import Step, StepKind

__all__ = ["restore_routes", "table_in_force"]


def table_in_force(steps: Sequence[Step], start: int) -> Step | None:
    """The route step to run again before resuming at `start`, or None."""
    if start <= 0 or start >= len(steps) or steps[start].kind == StepKind.ROUTE:
        return None
    return next((s for s in reversed(steps[:start]) if s.kind == StepKind.ROUTE), None)


def restore_routes(apply: Callable[[Step], Any], report: Callable[[str, Step, float, str], None],
                   steps: Sequence[Step], start: int) -> None:
    """Run the route step `table_in_force` names again (with `apply`), if any."""
    step = table_in_force(steps, start)
    if step is not None:
        report("info", step, 0.0, f"resuming: every LB replica gets the table of {step.key} again")
        apply(step)
