"""The baselines the DANS paper measures against, as plans: isolated and delayed switch.

Both are per-service methods: each changed service is moved on its own, one after the other
(callees first, the order dans also starts services in), splitting its instances in two (the
*new half*: `max(1, n // 2)` of its n instances; the *old half*: the rest) with no extra
instance while the halves swap, so capacity is halved meanwhile. In Swarm a service's tasks
cannot be told apart, so the new half is a temporary service beside the canonical one, with
the new spec and the canonical networks and aliases (the paper's instances share the old
network). The LB routes entry frontends by service, so an entry service's new half is
*offline* until the LB switches to it; a service called by name (no LB in front of it) is
reached by its callers as soon as a new task is healthy. That is the weakness the paper
names when several dependent services change: while one service has moved and the next has
not, an old caller reaches a new callee (or a new caller an old one), whatever each
service's own switch does.

- `isolated` (split-half update): the new half leaves the service, comes back at the new
  version (offline at the LB), the LB switches to it, and the rest (the canonical service,
  offline now) is updated all at once; the LB moves back to the canonical service.
- `delayed` (delayed switch, Ouyang, Ding, Wang 2014): instances leave one at a time and come
  back at the new version, offline, until half are new; the LB switches to the new half; the
  rest follow one at a time; the LB moves back.

With one instance there is no half left to serve: an entry service is down from the moment
its one instance leaves until the switch. The plans end as every plan does (DESIGN.md §4.5):
the canonical services at their new specs, the temporary halves removed; each new half runs
beside its service while the canonical service takes the rest back (the plan's extra
replicas).
"""

from __future__ import annotations

import copy
from typing import Any

from upgrade_manager.model import FAST_UPDATE, Spec, Step, StepKind, temp_name
from upgrade_manager.steps import StepBuilder

__all__ = ["SPLIT_STRATEGIES", "halves", "split_steps"]

SPLIT_STRATEGIES = ("isolated", "delayed")

# The rest of a delayed switch: one instance at a time (offline at the LB, so stop-first).
ONE_AT_A_TIME = {"Parallelism": 1, "Delay": 0, "FailureAction": "pause", "Order": "stop-first",
                 "Monitor": 1_000_000_000}


def halves(replicas: int) -> tuple[int, int]:
    """(old half, new half) of a service's instances: no extra instance, at least one new."""
    new = max(1, replicas // 2)
    return max(0, replicas - new), new


def replicas_of(spec: Spec) -> int | None:
    """A replicated service's replica count; None for a global one (it cannot be split)."""
    replicated = (spec.get("Mode") or {}).get("Replicated")
    return None if replicated is None else int(replicated.get("Replicas", 1))


def split_steps(build: StepBuilder, strategy: str, order: list[str]) -> list[Step]:
    """The steps that move `order` (replicated, changed, stateless; callees first) by
    `strategy`: each service's own split sequence, one service after the other."""
    steps: list[Step] = []
    for full in order:
        steps += _one_service(build, strategy, full)
    return steps


def _one_service(build: StepBuilder, strategy: str, full: str) -> list[Step]:
    """One service's split: its new half comes up (offline at the LB if it is an entry
    service), the LB switches to it, the rest takes the new version, the LB moves back."""
    spec = build.specs.services[full]
    short = build.specs.short_names[full]
    temp = temp_name(full, build.generation)
    n = replicas_of(spec) or 0
    old, new = halves(n)
    if strategy == "isolated":
        steps = [
            Step(StepKind.SCALE_SERVICES, f"{short}-old-half", {"replicas": {full: old}},
                 note="the new half leaves: the old half serves alone"),
            Step(StepKind.CREATE_SERVICES, f"{short}-new-half",
                 {"services": {temp: _half(build, full, new)}},
                 note="the new half at the new version (offline at the LB)"),
        ]
    else:
        steps = [Step(StepKind.CREATE_SERVICES, f"{short}-new-half",
                      {"services": {temp: _half(build, full, 0)}},
                      note="the new half, no instance yet")]
        steps += [Step(StepKind.SCALE_SERVICES, f"{short}-instance-{i}",
                       {"replicas": {full: n - i, temp: i}},
                       note=f"instance {i} leaves and comes back new, offline")
                  for i in range(1, new + 1)]
    fronts = [e.frontend for e in build.desired.entries if e.service == full]
    routes = _routes(build, short, {full: temp}, fronts) if fronts else []
    via = FAST_UPDATE if strategy == "isolated" else ONE_AT_A_TIME
    rest = "all at once" if strategy == "isolated" else "one at a time"
    return [
        *steps,
        *routes[:2],
        Step(StepKind.UPDATE_SERVICES, f"{short}-rest", {"services": {full: spec}, "via": {**via}},
             note=f"the rest take the new version, {rest}"),
        *routes[2:],
        Step(StepKind.REMOVE_SERVICES, f"{short}-temporary", {"names": [temp]},
             note="the temporary half"),
    ]


def _half(build: StepBuilder, full: str, replicas: int) -> Spec:
    """The new half of a service: its new spec under a temporary name, on its own networks
    with its own aliases (callers reach it by name), no published port."""
    spec: Spec = copy.deepcopy(build.specs.services[full])
    spec["Name"] = temp_name(full, build.generation)
    spec["Labels"] = {**(spec.get("Labels") or {}), **build.labels}
    spec["Mode"] = {"Replicated": {"Replicas": replicas}}
    endpoint = spec.get("EndpointSpec") or {}
    endpoint.pop("Ports", None)
    spec["EndpointSpec"] = endpoint
    return spec


def _routes(build: StepBuilder, short: str, temps: dict[str, str],
            fronts: list[str]) -> list[Step]:
    """Switch to the new half and drain the old; back to the canonical service, drain the
    half, and the final table."""
    d = build.desired
    group = f"split-{build.generation}"
    back: dict[str, Any] = d.routing_table({group: temps}).to_dict()
    for fe in back["frontends"]:
        if group in fe["groups"]:
            fe["groups"][group]["state"] = "draining"
    return [
        Step(StepKind.ROUTE, f"{short}-lb", {"table": d.routing_table(
            {group: temps}, {f: group for f in fronts}).to_dict()},
             note="new requests go to the new half"),
        Step(StepKind.DRAIN, f"{short}-lb", {"frontends": fronts, "group": "main"},
             note="the old half finishes its requests"),
        Step(StepKind.ROUTE, f"{short}-lb-back", {"table": back},
             note="new requests go to the canonical service"),
        Step(StepKind.DRAIN, f"{short}-lb-back", {"frontends": fronts, "group": group},
             note="the new half finishes its requests"),
        Step(StepKind.ROUTE, f"{short}-lb-final", {"table": d.routing_table().to_dict()}),
    ]
