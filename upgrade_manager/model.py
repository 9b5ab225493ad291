"""The planner's data: what runs, what changes, and the steps of a plan (frozen, JSON-able).

Shared by `plan` (which makes a plan), `steps` (which builds its steps), `executor` (which
applies them) and `state` (which stores them).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from upgrade_manager.errors import UpgradeError

__all__ = [
    "FAST_UPDATE",
    "GENERATION_LABEL",
    "ROUTED_STRATEGIES",
    "STRATEGIES",
    "Plan",
    "Relay",
    "RunningStack",
    "ServiceChange",
    "Spec",
    "Step",
    "StepKind",
    "bytes_data",
    "data_digest",
    "temp_name",
    "text_data",
]

Spec = dict[str, Any]
STRATEGIES = ("dans", "rolling", "isolated", "delayed")
# The strategies whose plans route at the LB (a rollback restores the table they found).
ROUTED_STRATEGIES = ("dans", "isolated", "delayed")
GENERATION_LABEL = "io.dans.generation"

# Updating idle canonical services: all tasks at once, no delay.
FAST_UPDATE = {"Parallelism": 0, "Delay": 0, "FailureAction": "pause", "Order": "stop-first",
               "Monitor": 1_000_000_000}


@dataclass(frozen=True)
class RunningStack:
    """What runs now: the stack's services (raw inspect `Spec`s) and its other objects."""

    stack: str
    services: dict[str, Spec]
    network_names: dict[str, str]  # network ID -> name, to read running specs
    networks: frozenset[str] = frozenset()
    configs: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ServiceChange:
    """One service's fate in the upgrade."""

    name: str
    short: str
    kind: str  # added | removed | changed | scaled | unchanged
    role: str  # chain | companion | relayed | compatible | stateful | in-place | none
    diffs: tuple[str, ...] = ()
    replicas: int = 0


@dataclass(frozen=True)
class Relay:
    """A TCP relay that answers for `short` on the generation network."""

    name: str
    short: str
    target: str  # full name of the real service
    network: str  # an old network the real service is on
    ports: tuple[int, ...]  # the ports dans could read (for the reader: the relay takes all)


class StepKind(StrEnum):
    """What a step does. The values are the durable form: a stored plan names its steps so.

    Each kind has one rule in `executor.RULES`: how the executor applies it and how a
    rollback undoes it (a unit test keeps the two complete).
    """

    CREATE_NETWORK = "create_network"
    CREATE_CONFIG = "create_config"
    CREATE_SECRET = "create_secret"
    CREATE_SERVICE = "create_service"
    CREATE_SERVICES = "create_services"  # side by side, then waited for together
    CREATE_RELAY = "create_relay"  # written by older plans; applied as create_service
    CREATE_TEMP = "create_temp"  # written by older plans; applied as create_service
    UPDATE_SERVICE = "update_service"
    UPDATE_SERVICES = "update_services"
    CONVERGE = "converge"  # stop the old chain, then the canonical services take new specs
    SCALE_SERVICES = "scale_services"  # give services replica counts, nothing else
    ROUTE = "route"  # send the LB a routing table
    DRAIN = "drain"  # wait until a group of the LB has no request in flight
    REMOVE_SERVICE = "remove_service"
    REMOVE_SERVICES = "remove_services"
    REMOVE_NETWORK = "remove_network"
    REMOVE_CONFIG = "remove_config"
    REMOVE_SECRET = "remove_secret"
    REMOVE_UNUSED = "remove_unused"  # configs and secrets no service names any more

    @classmethod
    def read(cls, value: str) -> StepKind:
        """The kind a stored plan names; UpgradeError for one this dans does not know."""
        try:
            return cls(value)
        except ValueError:
            raise UpgradeError(
                f"the recorded plan has a step of unknown kind {value!r} (written by another "
                f"version of dans?); finish or roll it back with the dans that planned it"
            ) from None


@dataclass(frozen=True)
class Step:
    """One executor step; `args` is JSON data (specs, names, routing tables)."""

    kind: StepKind
    target: str
    args: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def key(self) -> str:
        """A unique, stable name for progress records."""
        return f"{self.kind}:{self.target}"

    def describe(self) -> str:
        """One human line."""
        return f"{self.kind} {self.target}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Plan:
    """An upgrade plan: what changes, why, and the ordered steps that do it."""

    stack: str
    strategy: str
    generation: str
    changes: tuple[ServiceChange, ...]
    edges: tuple[tuple[str, str, str, bool], ...]  # (caller, callee, kind, declared)
    chain: tuple[str, ...]  # temporary copies, callees first (full names)
    relays: tuple[Relay, ...]
    steps: tuple[Step, ...]
    extra_replicas: int
    warnings: tuple[str, ...]
    old_specs: dict[str, Spec]  # canonical specs before the upgrade, for rollback
    old_table: dict[str, Any] | None  # the LB's routing table before the upgrade
    fingerprint: str  # identifies the desired state, to match a resumed upgrade
    refusals: tuple[str, ...] = ()  # why the plan cannot keep the guarantee (--allow-mixed)
    assumptions: tuple[str, ...] = ()  # call edges assumed because nothing declared them
    levels: tuple[tuple[str, ...], ...] = ()  # the chain in start order, callees first

    @property
    def is_noop(self) -> bool:
        """True when nothing would change."""
        return not self.steps

    def to_json(self) -> str:
        """The plan as JSON text (the durable form)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """Read a plan written by `to_json`."""
        data = json.loads(text)
        return cls(
            stack=data["stack"],
            strategy=data["strategy"],
            generation=data["generation"],
            changes=tuple(ServiceChange(**{**c, "diffs": tuple(c["diffs"])})
                          for c in data["changes"]),
            edges=tuple(tuple(e) for e in data["edges"]),
            chain=tuple(data["chain"]),
            relays=tuple(Relay(**{**r, "ports": tuple(r["ports"])}) for r in data["relays"]),
            steps=tuple(Step(**{**s, "kind": StepKind.read(s["kind"])}) for s in data["steps"]),
            extra_replicas=data["extra_replicas"],
            warnings=tuple(data["warnings"]),
            old_specs=data["old_specs"],
            old_table=data["old_table"],
            fingerprint=data["fingerprint"],
            refusals=tuple(data.get("refusals", ())),
            assumptions=tuple(data.get("assumptions", ())),
            levels=tuple(tuple(level) for level in data.get("levels", ())),
        )


def temp_name(full: str, generation: str) -> str:
    """The temporary copy of a service for one upgrade generation."""
    return f"{full}-dans-{generation}"


def text_data(spec: Spec) -> Spec:
    """A config or secret spec with bytes `Data` as base64 text: the Engine API's form, and
    the plan's (JSON). Anything else is returned as it is (copied)."""
    out = dict(spec)
    if isinstance(out.get("Data"), bytes):
        out["Data"] = base64.b64encode(out["Data"]).decode("ascii")
    return out


def bytes_data(spec: Spec) -> Spec:
    """The inverse of `text_data`: base64 text `Data` (from the engine or a plan) as bytes.
    A spec without `Data` (a driver-backed secret) is returned as it is (copied)."""
    out = dict(spec)
    if isinstance(out.get("Data"), str):
        out["Data"] = base64.b64decode(out["Data"])
    return out


def data_digest(data: bytes) -> str:
    """What a plan keeps of a secret's content: `sha256:HEX`, never the content."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
