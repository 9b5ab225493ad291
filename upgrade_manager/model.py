"""The planner's data: what runs, what changes, and the steps of a plan (frozen, JSON-able).

Shared by `plan` (which makes a plan), `steps` (which builds its steps), `executor` (which
applies them) and `state` (which stores them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

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
    "temp_name",
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


@dataclass(frozen=True)
class Step:
    """One executor step; `args` is JSON data (specs, names, routing tables)."""

    kind: str
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
            steps=tuple(Step(**s) for s in data["steps"]),
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
