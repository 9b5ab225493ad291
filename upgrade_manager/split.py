"""The baselines the DANS paper measures against, as plans: isolated and delayed switch.

Both split every changed service's instances in two (the *new half*: `max(1, n // 2)` of its
n instances; the *old half*: the rest) without any extra instance, so capacity is halved
while the halves swap. In Swarm a service's tasks cannot be told apart, so the new half is a
temporary service beside the canonical one, with the new spec and the canonical networks
and aliases (as the paper's instances share the old network): the LB routes the entry
frontends by service, so an entry service's new half is *offline* until the switch, while a
service called by name (no LB in front of it) is reached by both halves at once. That is the
weakness the paper names when several dependent services change: an old caller reaches a new
callee before the switch, and a new caller an old one after it.

- `isolated` (split-half update): the old half keeps serving, the new half starts at once at
  the new version, the LB switches to it, and the rest (the canonical service, now offline at
  the LB) is updated all at once; then the LB moves back to the canonical service.
- `delayed` (delayed switch, Ouyang, Ding, Wang 2014): instances leave the old half one at a
  time and come back at the new version, offline, until half are new; the LB switches to the
  new half; the rest follow one at a time.

With one instance there is no half left to serve: the entry is down from the moment its one
instance leaves until the switch. The plans end as every plan does (DESIGN.md §4.5): the
canonical services at their new specs, the temporary halves removed.
"""

from __future__ import annotations

import copy
from typing import Any

from upgrade_manager.model import FAST_UPDATE, Spec, Step, temp_name
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


def split_steps(build: StepBuilder, strategy: str, targets: list[str]) -> list[Step]:
    """The steps that move `targets` (replicated, changed, stateless) by `strategy`."""
    specs = build.specs.services
    temps = {n: temp_name(n, build.generation) for n in targets}
    sizes = {n: replicas_of(specs[n]) or 0 for n in targets}
    entries = [n for n in targets if n in build.desired.entry_services()]
    group = f"split-{build.generation}"
    fronts = [e.frontend for e in build.desired.entries if e.service in entries]
    if strategy == "isolated":
        steps = [
            Step("scale_services", "old-half",
                 {"replicas": {n: halves(sizes[n])[0] for n in targets}},
                 note="the new half leaves: the old half serves alone"),
            Step("create_services", "new-half",
                 {"services": {temps[n]: _half(build, n, halves(sizes[n])[1]) for n in targets}},
                 note="the new half at the new version (offline at the LB)"),
        ]
    else:
        steps = [Step("create_services", "new-half",
                      {"services": {temps[n]: _half(build, n, 0) for n in targets}},
                      note="the new half, no instance yet")]
        for i in range(1, max(halves(sizes[n])[1] for n in targets) + 1):
            moved = {n: min(i, halves(sizes[n])[1]) for n in targets}
            counts = {**{n: sizes[n] - moved[n] for n in targets},
                      **{temps[n]: moved[n] for n in targets}}
            steps.append(Step("scale_services", f"instance-{i}", {"replicas": counts},
                              note=f"instance {i} leaves and comes back new, offline"))
    routes = _routes(build, group, {n: temps[n] for n in entries}, fronts)
    via = FAST_UPDATE if strategy == "isolated" else ONE_AT_A_TIME
    rest = "all at once" if strategy == "isolated" else "one at a time"
    return [
        *steps,
        routes[0],
        Step("drain", "lb", {"frontends": fronts, "group": "main"},
             note="the old half finishes its requests"),
        Step("update_services", "rest", {"services": {n: specs[n] for n in targets},
                                         "via": {**via}},
             note=f"the rest take the new version, {rest}"),
        *routes[1:],
        Step("remove_services", "temporary", {"names": [temps[n] for n in targets]},
             note="the temporary halves"),
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


def _routes(build: StepBuilder, group: str, temps: dict[str, str],
            fronts: list[str]) -> list[Step]:
    """Switch to the new halves, back to the canonical services, then the final table."""
    d = build.desired
    back: dict[str, Any] = d.routing_table({group: temps}).to_dict()
    for fe in back["frontends"]:
        if group in fe["groups"]:
            fe["groups"][group]["state"] = "draining"
    return [
        Step("route", "lb", {"table": d.routing_table({group: temps},
                                                      {f: group for f in fronts}).to_dict()},
             note="new requests go to the new halves"),
        Step("route", "lb-back", {"table": back},
             note="new requests go to the canonical services"),
        Step("drain", "lb-back", {"frontends": fronts, "group": group},
             note="the new halves finish their requests"),
        Step("route", "lb-final", {"table": d.routing_table().to_dict()}),
    ]
