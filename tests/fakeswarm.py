"""The data of the fake swarm (tests/fakegateway.py): objects, tasks, and their views.

The views are what the Engine's inspect and list calls answer for them, as raw dicts.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from upgrade_manager.errors import EngineError
from upgrade_manager.gateway import LIVE_TASK_STATES, STACK_LABEL

Spec = dict[str, Any]
Labels = dict[str, str]
__all__ = ["FakeClock", "Killed", "Object", "Service", "Task"]

HISTORY = 5  # the swarm's default TaskHistoryRetentionLimit


class Killed(BaseException):
    """The dans process dies here (like SIGKILL): nothing in dans may catch it."""


class FakeClock:
    """Monotonic seconds that pass only when someone sleeps (or a test advances them)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        """The current fake time."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Let `seconds` pass at once (at least a millisecond, so loops always progress)."""
        self.now += max(seconds, 0.001)


@dataclass
class Task:
    id: str
    service_id: str
    slot: int | None
    spec: Spec
    version: int  # the service's template version the task was made from
    created: float
    state: str = "starting"
    desired: str = "running"
    err: str = ""
    stop_at: float | None = None
    replaces: str | None = None  # start-first: the old task that stops when this one runs
    updated: int = 0  # sequence of the last change, for "newest first"
    node: str = "node-1"
    addresses: list[str] = field(default_factory=list)  # "NETWORK_ID ADDR/24" per network

    @property
    def image(self) -> str:
        return str(self.spec.get("ContainerSpec", {}).get("Image", ""))

    @property
    def live(self) -> bool:
        return self.state in LIVE_TASK_STATES


@dataclass
class Service:
    id: str
    spec: Spec
    version: int
    created: int
    updated: int
    template: int = 0  # the version at which the task template last changed
    previous: Spec | None = None
    update_status: dict[str, str] | None = None
    tasks: list[Task] = field(default_factory=list)


@dataclass
class Object:
    """A network, config or secret."""

    id: str
    name: str
    spec: Spec
    version: int
    created: int
    updated: int


def service_view(svc: Service) -> Spec:
    view: Spec = {
        "ID": svc.id, "Version": {"Index": svc.version},
        "CreatedAt": stamp(svc.created), "UpdatedAt": stamp(svc.updated),
        "Spec": copy.deepcopy(svc.spec),
        "Endpoint": {"Spec": copy.deepcopy(svc.spec.get("EndpointSpec") or {}),
                     "Ports": copy.deepcopy(
                         (svc.spec.get("EndpointSpec") or {}).get("Ports") or [])},
    }
    if svc.previous is not None:
        view["PreviousSpec"] = copy.deepcopy(svc.previous)
    if svc.update_status is not None:
        view["UpdateStatus"] = dict(svc.update_status)
    return view

def task_view(task: Task) -> Spec:
    status: Spec = {"State": task.state, "Message": task.state,
                    "Timestamp": stamp(task.updated)}
    if task.err:
        status["Err"] = task.err
    view: Spec = {"ID": task.id, "ServiceID": task.service_id, "NodeID": task.node,
                  "DesiredState": task.desired, "Status": status,
                  "Spec": copy.deepcopy(task.spec), "UpdatedAt": stamp(task.updated),
                  "Version": {"Index": task.updated}}
    if task.slot is not None:
        view["Slot"] = task.slot
    return view

def network_view(net: Object) -> Spec:
    return {"Id": net.id, "Name": net.name, "Created": stamp(net.created),
            "Scope": net.spec.get("Scope", "swarm"), "Driver": net.spec.get("Driver"),
            "Attachable": bool(net.spec.get("Attachable")),
            "Labels": dict(net.spec.get("Labels") or {})}

def object_view(obj: Object, with_data: bool) -> Spec:
    spec = copy.deepcopy(obj.spec)
    if not with_data:
        spec.pop("Data", None)
    return {"ID": obj.id, "Version": {"Index": obj.version},
            "CreatedAt": stamp(obj.created), "UpdatedAt": stamp(obj.updated),
            "Spec": spec}


def json_body(spec: Spec) -> Spec:
    """What the Engine receives: the JSON body (bytes or sets in a spec fail here, as there)."""
    return dict(json.loads(json.dumps(spec)))


def check_base64(data: Any, what: str) -> None:
    if data is None:
        return
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise EngineError(f"{what}: invalid JSON: illegal base64 data") from None


def labelled(have: Labels | None, stack: str | None, labels: Labels | None) -> bool:
    wanted = {**({STACK_LABEL: stack} if stack else {}), **(labels or {})}
    return all((have or {}).get(k) == v for k, v in wanted.items())


def task_key(spec: Spec) -> str:
    """What makes the Engine replace a service's tasks when it changes."""
    return json.dumps([spec.get("TaskTemplate"), spec.get("EndpointSpec")], sort_keys=True)


def network_ids(task_spec: Spec) -> set[str]:
    return {n["Target"] for n in task_spec.get("Networks") or []}


def references(spec: Spec, kind: str) -> set[str]:
    container = spec["TaskTemplate"]["ContainerSpec"]
    ids = {r.get(f"{kind.title()}ID") for r in container.get(f"{kind.title()}s") or []}
    cred = (container.get("Privileges") or {}).get("CredentialSpec") or {}
    if kind == "config" and cred.get("Config"):
        ids.add(cred["Config"])
    return {i for i in ids if i}


def retained(tasks: list[Task]) -> list[Task]:
    """Keep every live task and the newest few dead ones per slot (the swarm's history)."""
    dead: dict[int | None, list[Task]] = {}
    for t in sorted(tasks, key=lambda t: t.updated, reverse=True):
        if not t.live:
            dead.setdefault(t.slot, []).append(t)
    keep = {id(t) for ts in dead.values() for t in ts[:HISTORY]}
    return [t for t in tasks if t.live or id(t) in keep]


def stamp(seq: int) -> str:
    # Sortable like the Engine's RFC 3339 timestamps.
    return f"2024-01-01T00:00:00.{seq:09d}Z"

