"""How far services are from their desired state, read from one look at the engine.

Pure functions over raw inspect dicts (a service, its tasks): the gateway fetches, this
module judges. Kept apart so that one look can judge many services at once: an upgrade
waits for dozens of services together, and looking at each in turn costs engine calls
that grow with the number of services.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from upgrade_manager.model import Spec

__all__ = [
    "BAD_UPDATE_STATES",
    "LIVE_TASK_STATES",
    "ServiceState",
    "live_count",
    "runs_current_spec",
    "state_of",
    "task_summary",
]

# Task states in which a task may still run or start (the engine's order, up to running).
LIVE_TASK_STATES = frozenset({"new", "pending", "assigned", "accepted", "ready", "preparing",
                              "starting", "running"})
# Update states from which the engine will not finish an update by itself.
BAD_UPDATE_STATES = frozenset({"paused", "rollback_started", "rollback_paused",
                               "rollback_completed"})


@dataclass(frozen=True)
class ServiceState:
    """How far a service is from its desired state, as seen in one look at its tasks."""

    name: str
    desired: int | None  # None for global services: one task per eligible node
    running: int
    pending: int
    stale: int  # running tasks whose container spec is not the service's current one
    update_state: str | None
    update_message: str | None
    problem: str | None  # latest error of a task that failed or was rejected

    @property
    def converged(self) -> bool:
        """True when the update finished and exactly the desired tasks run (healthy)."""
        if self.update_state not in (None, "completed"):
            return False
        if self.pending or self.stale:
            return False
        if self.desired is None:
            return self.running > 0
        return self.running == self.desired

    @property
    def stuck(self) -> bool:
        """True when the engine paused or rolled back the update: waiting will not help."""
        return self.update_state in BAD_UPDATE_STATES

    def describe(self) -> str:
        """One line for error messages: tasks running of wanted, and the latest problem."""
        want = "one per node" if self.desired is None else str(self.desired)
        text = f"{self.running}/{want} tasks running"
        if self.stale:
            text += f" ({self.stale} more on the previous spec)"
        if self.stuck:
            text = f"update {self.update_state}: {self.update_message or ''}".strip()
        return text + (f"; {self.problem}" if self.problem else "")


def task_summary(task: Spec) -> str:
    """One line about a task for error messages: slot, state and its error if any."""
    status = task.get("Status", {})
    slot = task.get("Slot")
    where = f"task {task.get('ID', '?')[:12]}" + (f" (slot {slot})" if slot else "")
    err = status.get("Err") or status.get("Message") or ""
    return f"{where}: {status.get('State', '?')}" + (f": {err}" if err else "")


def state_of(service: Spec, tasks: Iterable[Spec]) -> ServiceState:
    """Judge one service (a raw inspect) from its tasks (others in `tasks` are ignored)."""
    sid = service["ID"]
    mine = sorted((t for t in tasks if t.get("ServiceID") == sid),
                  key=lambda t: t.get("UpdatedAt", ""), reverse=True)
    mode = service["Spec"].get("Mode", {})
    desired: int | None
    if "Replicated" in mode:
        desired = int(mode["Replicated"].get("Replicas", 1))
    elif "Global" in mode:
        desired = None
    else:  # jobs: converged when the job's tasks completed; treat as no running target
        desired = 0
    live = [t for t in mine if t.get("DesiredState") == "running"]
    template = service["Spec"].get("TaskTemplate") or {}
    up = [t for t in live if t["Status"]["State"] == "running"]
    stale = sum(1 for t in up if not runs_current_spec(t, template))
    problem = None
    for t in mine:
        if t["Status"]["State"] in ("failed", "rejected") or t["Status"].get("Err"):
            problem = task_summary(t)
            break
    update = service.get("UpdateStatus") or {}
    return ServiceState(
        name=service["Spec"]["Name"],
        desired=desired,
        running=len(up) - stale,
        pending=len(live) - len(up),
        stale=stale,
        update_state=update.get("State"),
        update_message=update.get("Message"),
        problem=problem,
    )


def _meaningful(value: object) -> object:
    """`value` without empty members: the engine leaves out what the API shows as empty."""
    if isinstance(value, dict):
        kept = {k: _meaningful(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, {}, [], "", False, 0)}
    if isinstance(value, list):
        return [_meaningful(v) for v in value]
    return value


def runs_current_spec(task: Spec, template: Spec) -> bool:
    """False when a task runs a container spec other than the service's current one.

    Right after an update, before the engine's updater has begun, the service has no update
    status and its old tasks still run: without this check that looks converged, and a
    service switched to then would still answer with its old version. The container spec
    (image, command, environment, configs, secrets, mounts) is what carries a version and
    the engine copies it into each task unchanged; the rest of the task spec is compared
    by the engine's own update status (placement-only changes, for one, replace no task).
    `ForceUpdate` counts too: a forced update replaces every task. A task without a spec
    (a fake engine's) cannot be judged and counts as current.
    """
    spec = task.get("Spec")
    if spec is None:
        return True
    return bool(
        _meaningful(spec.get("ContainerSpec")) == _meaningful(template.get("ContainerSpec"))
        and spec.get("ForceUpdate", 0) == template.get("ForceUpdate", 0))


def live_count(service_id: str, tasks: Iterable[Spec]) -> int:
    """How many of a service's tasks (by ID) may still run."""
    return sum(1 for t in tasks if t.get("ServiceID") == service_id
               and t["Status"]["State"] in LIVE_TASK_STATES)
