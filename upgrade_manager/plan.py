"""Planning an upgrade: a pure function from (running stack, desired stack) to a typed plan.

The plan for `--strategy dans` (DESIGN.md §2, §5):
- changed services (task-replacing differences) and their callers up to the entry services
  form the *chain* T: each gets a temporary copy at its new version (callers that did not
  change get a copy at their current version: a *companion*) on a fresh generation network
  N, where only those copies carry the short names. New versions therefore reach only new
  versions; old callers, which stay on the old networks, never see them.
- unchanged (or freshly added) services that the chain calls are reached through a relay:
  the LB program in TCP mode, on an old network and on N with the callee's short name as its
  alias, forwarding to the real service. Nothing outside the upgrade set restarts.
- the LB switches the entry frontends to the temporary chain, the old chain drains, the
  canonical services converge in place to the new specs while no traffic reaches them, the
  LB switches back, and the temporary services, relays and N are removed.
- a changed service that declares `x-dans: {compatible: true}` and is not needed by the
  chain rolls in place; one with a named volume (state) is updated in place, stop-first.

A plan is frozen data with a JSON form: it can be printed, saved in the durable state and
executed later by `executor`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from upgrade_manager.callgraph import CallGraph
from upgrade_manager.diff import FieldDiff, diff_specs, normalize, replaces_tasks
from upgrade_manager.errors import PlanError
from upgrade_manager.managed import ManagedStack
from upgrade_manager.mesh import is_waypoint
from upgrade_manager.model import (
    GENERATION_LABEL,
    STRATEGIES,
    Plan,
    Relay,
    RunningStack,
    ServiceChange,
    Spec,
    Step,
    StepKind,
)
from upgrade_manager.split import SPLIT_STRATEGIES, halves, replicas_of, split_steps
from upgrade_manager.steps import StepBuilder

__all__ = ["fingerprint", "make_plan"]  # its data types are `model`'s

# Well-known ports by URL scheme, for finding where a relayed service listens.
_SCHEME_PORTS = {
    "http": 80, "https": 443, "postgres": 5432, "postgresql": 5432, "mysql": 3306,
    "redis": 6379, "amqp": 5672, "mongodb": 27017, "memcached": 11211,
}

def fingerprint(desired: ManagedStack) -> str:
    """A short hash of the desired services and networks; equal files give equal prints."""
    data = json.dumps([desired.specs.services, desired.specs.networks], sort_keys=True,
                      default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def make_plan(
    running: RunningStack,
    desired: ManagedStack,
    *,
    strategy: str = "dans",
    prune: bool = False,
    generation: str = "g1",
    old_table: dict[str, Any] | None = None,
) -> Plan:
    """Plan moving `running` to `desired` with `strategy`; pure, raises PlanError.

    A plan that cannot keep dans's guarantee says why in `refusals`; the caller refuses to
    run it unless the user accepts mixing (`--allow-mixed`), and the steps are what would
    run then.
    """
    if strategy not in STRATEGIES:
        raise PlanError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    specs = desired.specs
    short_of = dict(specs.short_names)
    full_of = {v: k for k, v in short_of.items()}
    warnings = list(specs.warnings)
    d = _differences(running, desired)
    lb = desired.lb_service
    stateful, compatible = _in_place(desired, d)
    calls = CallGraph.of(desired)
    decision = _Decision()
    if strategy == "dans":
        decision = _decide_chain(desired, calls, d, stateful, compatible, full_of, short_of)
        compatible -= decision.chain
    warnings += decision.warnings
    if lb in d.replaced:
        warnings.append("the edge LB's spec changes (published ports differ): it restarts, "
                        "and requests in flight at the edge during its restart may fail")
    chain = decision.chain
    relays = _relays(desired, calls, chain, generation, full_of, short_of) if chain else ()
    levels = [[full_of[s] for s in level]
              for level in calls.levels(short_of[n] for n in chain)]
    changes = tuple(_change(full, running, desired, d, chain, compatible, stateful, relays)
                    for full in sorted(set(specs.services) | set(running.services)))
    steps = _steps(running, desired, strategy, generation, d, chain, levels, relays,
                   stateful, compatible, calls)
    steps += _cleanup(running, desired, generation, d, prune, warnings)
    return Plan(
        stack=desired.stack,
        strategy=strategy,
        generation=generation,
        changes=changes,
        edges=tuple((e.source, e.target, e.kind, e.declared) for e in specs.dependencies),
        chain=tuple(n for level in levels for n in level),
        relays=relays,
        steps=tuple(steps),
        extra_replicas=_extra(desired, d, stateful, strategy, chain, relays),
        warnings=tuple(warnings),
        old_specs={n: running.services[n] for n in sorted(running.services)},
        old_table=old_table,
        fingerprint=fingerprint(desired),
        refusals=tuple(decision.refusals),
        assumptions=tuple(decision.assumptions),
        levels=tuple(tuple(level) for level in levels),
    )


def _in_place(desired: ManagedStack, d: _Differences) -> tuple[set[str], set[str]]:
    """Changed services that are updated where they are: stateful ones (a named volume can
    be mounted by one version only) and those declared `compatible`."""
    specs = desired.specs
    stateful = {n for n in d.replaced
                if _has_volume(specs.services[n]) and n != desired.lb_service}
    # A waypoint speaks every version of its service: a new spec of it rolls start-first.
    compatible = {n for n in d.replaced - stateful
                  if specs.extensions.get(specs.short_names.get(n, ""), {}).get("compatible")
                  or is_waypoint(specs.services[n])}
    return stateful, compatible


def _cleanup(running: RunningStack, desired: ManagedStack, generation: str,
             d: _Differences, prune: bool, warnings: list[str]) -> list[Step]:
    """The last steps: services the file dropped (with --prune) and unused objects."""
    build = StepBuilder(running, desired, generation)
    steps: list[Step] = []
    if prune:
        steps += [Step(StepKind.REMOVE_SERVICE, n, note="not in the new file") for n in d.removed]
        steps += build.prune_objects()
    elif d.removed:
        warnings.append("services not in the new file are kept (use --prune to remove): "
                        + ", ".join(d.removed))
    return steps + build.unused_objects()


@dataclass(frozen=True)
class _Differences:
    """What differs between the running and the desired stack (full names)."""

    diffs: dict[str, list[FieldDiff]]
    added: list[str]
    removed: list[str]
    replaced: set[str]  # task-replacing differences
    scaled: set[str]  # other differences (replicas, update config, labels)


def _differences(running: RunningStack, desired: ManagedStack) -> _Differences:
    specs = desired.specs
    diffs: dict[str, list[FieldDiff]] = {}
    for full, spec in specs.services.items():
        if full in running.services:
            old = normalize(running.services[full], running.network_names)
            diffs[full] = diff_specs(old, normalize(spec))
    replaced = {n for n, dd in diffs.items() if replaces_tasks(dd)}
    return _Differences(
        diffs=diffs,
        added=sorted(set(specs.services) - set(running.services)),
        removed=sorted(n for n in set(running.services) - set(specs.services)
                       if not _is_dans_object(running.services[n])),
        replaced=replaced,
        scaled={n for n, dd in diffs.items() if dd and n not in replaced},
    )


@dataclass
class _Decision:
    """The chain that moves, and what dans had to assume or cannot promise."""

    chain: set[str] = dc_field(default_factory=set)
    warnings: list[str] = dc_field(default_factory=list)
    refusals: list[str] = dc_field(default_factory=list)
    assumptions: list[str] = dc_field(default_factory=list)


def _decide_chain(desired: ManagedStack, calls: CallGraph, d: _Differences,
                  stateful: set[str], compatible: set[str], full_of: Mapping[str, str],
                  short_of: Mapping[str, str]) -> _Decision:
    """The chain: the changed services and every service that may call them (DESIGN §8)."""
    out = _Decision()
    specs = desired.specs
    lb = desired.lb_service
    core = d.replaced - stateful - compatible - {lb}
    for n in sorted(stateful):
        out.refusals.append(
            f"{short_of[n]} keeps state in a named volume and changes: it can only be updated "
            "in place, stop-first, and requests that need it fail while it restarts"
        )
    # A service the file adds may call the chain too: it has no old version, so it joins the
    # new chain (a temporary copy) and its canonical service is created at converge.
    movable = {short_of[n] for n, spec in specs.services.items()
               if n != lb and not _has_volume(spec)}
    closure = calls.closure((short_of[n] for n in core), movable)
    for net, callees in sorted(closure.assumed.items()):
        undeclared = sorted(s for s in calls.members[net] if s not in calls.declared)
        if len(undeclared) > 1:
            out.assumptions.append(
                f"network {net}: {', '.join(undeclared)} declare no x-dans.calls, so each may "
                f"call any service on it (reached from {', '.join(sorted(callees))})"
            )
    for caller, callee in sorted(closure.blocked.items()):
        why = ("it keeps state in a named volume"
               + (" and is added by this file" if full_of.get(caller) in d.added else ""))
        out.refusals.append(
            f"{caller} may call {callee} but cannot be copied ({why}): while both versions "
            f"run, its calls would reach either; if {caller} calls no service, declare "
            f"`x-dans: {{calls: []}}` on it (or list what it calls)"
        )
    chain = {full_of[s] for s in closure.members if s in full_of} - {lb}
    out.refusals += _outside_callers(calls, chain, d.replaced, short_of)
    if len(chain) == 1 and not chain & desired.entry_services() and not closure.blocked:
        # One changed service that no other service may call: there is no pair to mix.
        out.warnings.append(f"{short_of[next(iter(chain))]} is called by no service of the "
                            "stack and publishes no port: it rolls in place")
        chain = set()
    elif chain and not chain & desired.entry_services():
        out.refusals.append(
            "the changed services " + ", ".join(sorted(short_of[n] for n in chain))
            + " and their callers publish no port: the LB cannot move their traffic, so they "
            "would roll in place"
        )
        chain = set()
    out.chain = chain
    return out


def _outside_callers(calls: CallGraph, chain: set[str], replaced: set[str],
                     short_of: Mapping[str, str]) -> list[str]:
    """Refusals for members of the chain on an external network (DESIGN §8: when in doubt).

    Such a network is shared with services outside the stack: they may call the member and
    dans can neither copy nor move them (the LB only moves the stack's published ports), the
    member's canonical service stops while it converges, and its temporary copy, which is
    on the generation network only, could not reach what is outside.
    """
    out = []
    for full in sorted(chain):
        short = short_of[full]
        nets = calls.external.get(short)
        if not nets:
            continue
        fix = ("declare `x-dans: {compatible: true}` on it if its new version accepts the old "
               "callers (it then rolls in place)" if full in replaced else
               "if it calls none of the changed services, declare what it calls with "
               "`x-dans: {calls: [...]}`")
        out.append(
            f"{short} is on the external network {', '.join(nets)}, shared with services "
            "outside the stack: they may call it and dans cannot move them, it stops while "
            f"it converges, and its temporary copy could not reach them; {fix}"
        )
    return out


def _steps(running: RunningStack, desired: ManagedStack, strategy: str, generation: str,
           d: _Differences, chain: set[str], levels: list[list[str]],
           relays: tuple[Relay, ...], stateful: set[str], compatible: set[str],
           calls: CallGraph) -> list[Step]:
    """The executor steps for the decisions made (without pruning and clean-up)."""
    ctx = StepBuilder(running, desired, generation)
    lb = desired.lb_service
    steps = ctx.objects()
    if strategy == "rolling":
        return steps + ctx.rolling(d.replaced | d.scaled, d.added)
    steps += [ctx.update_in_place(n, "stateful: stop-first", stop_first=True)
              for n in sorted(stateful)]
    # Added services the chain holds are created at its converge (see _decide_chain).
    deferred = set() if strategy in SPLIT_STRATEGIES else set(d.added) & chain
    steps += [ctx.create(n) for n in sorted(d.added) if n != lb and n not in deferred]
    if strategy in SPLIT_STRATEGIES:
        split = _split_order(calls, desired, d, stateful)
        steps += split_steps(ctx, strategy, split)
        steps += [ctx.update_in_place(n, "in place")
                  for n in sorted((d.replaced | d.scaled) - stateful - set(split) - {lb})]
        compatible = set()  # split like every other changed service
    elif chain:
        steps += ctx.chain_steps(levels, relays, d.replaced & chain, d.scaled - {lb},
                                 added=frozenset(deferred))
    else:
        steps += [ctx.update_in_place(n, "in place")
                  for n in sorted((d.replaced | d.scaled) - stateful - compatible - {lb})]
    steps += [ctx.update_in_place(n, "compatible: rolls in place") for n in sorted(compatible)]
    if lb in d.replaced | d.scaled or lb in d.added:
        steps.append(ctx.create(lb) if lb in d.added else ctx.update_in_place(lb, "edge LB"))
    return steps


def _split_targets(desired: ManagedStack, d: _Differences, stateful: set[str]) -> list[str]:
    """The services `isolated` and `delayed` split in halves: changed, stateless, replicated."""
    return sorted(n for n in d.replaced - stateful - {desired.lb_service}
                  if replicas_of(desired.specs.services[n]) is not None)


def _split_order(calls: CallGraph, desired: ManagedStack, d: _Differences,
                 stateful: set[str]) -> list[str]:
    """The paper's baselines move one service after the other, callees first."""
    short_of = desired.specs.short_names
    full_of = {v: k for k, v in short_of.items()}
    targets = _split_targets(desired, d, stateful)
    return [full_of[s] for level in calls.levels(short_of[n] for n in targets) for s in level]


def _extra(desired: ManagedStack, d: _Differences, stateful: set[str], strategy: str,
           chain: set[str], relays: tuple[Relay, ...]) -> int:
    """Instances beyond the stack's own: dans's temporary chain and relays; a split plan's
    new halves while the canonical services take the rest back, until they are removed."""
    services = desired.specs.services
    split = _split_targets(desired, d, stateful) if strategy in SPLIT_STRATEGIES else []
    return (sum(_replicas(services[n]) for n in chain) + len(relays)
            + sum(halves(_replicas(services[n]))[1] for n in split))


def _has_volume(spec: Spec) -> bool:
    mounts = spec["TaskTemplate"]["ContainerSpec"].get("Mounts") or []
    return any(m.get("Type", "volume") == "volume" for m in mounts)


def _replicas(spec: Spec) -> int:
    return int(spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 1))


def _is_dans_object(spec: Spec) -> bool:
    # Temporary services and relays of an unfinished upgrade are the executor's business.
    return GENERATION_LABEL in (spec.get("Labels") or {})


def _change(full: str, running: RunningStack, desired: ManagedStack, d: _Differences,
            chain: set[str], compatible: set[str], stateful: set[str],
            relays: tuple[Relay, ...]) -> ServiceChange:
    short = desired.specs.short_names.get(full, full.removeprefix(running.stack + "_"))
    kind = ("added" if full in d.added else "removed" if full in d.removed
            else "changed" if full in d.replaced else "scaled" if full in d.scaled
            else "unchanged")
    if full in chain:
        role = "chain" if full in d.replaced else "companion"
    elif full in stateful:
        role = "stateful"
    elif full in compatible:
        role = "compatible"
    elif any(r.target == full for r in relays):
        role = "relayed"
    elif full == desired.lb_service:
        role = "edge-lb"
    elif kind in ("changed", "scaled"):
        role = "in-place"
    else:
        role = "none"
    spec = desired.specs.services.get(full) or running.services.get(full) or {}
    return ServiceChange(full, short, kind, role, tuple(str(x) for x in d.diffs.get(full, [])),
                         _replicas(spec) if spec else 0)


_HOSTPORT = r"(?:^|[/@=,;\s]){host}:(\d{{1,5}})\b"
_SCHEME = r"(?:^|[\s=,;])([a-z][a-z0-9+.-]*)://(?:[^/@\s]*@)?{host}(?:[/\s:?]|$)"


def _ports_called(desired: ManagedStack, callers: set[str], callee: str) -> set[int]:
    """Ports at which `callers` reach `callee`, read from their environment and from x-dans."""
    ports = {int(p) for p in desired.specs.extensions.get(callee, {}).get("ports", [])}
    hostport = re.compile(_HOSTPORT.format(host=re.escape(callee)))
    scheme = re.compile(_SCHEME.format(host=re.escape(callee)))
    for full, spec in desired.specs.services.items():
        if desired.specs.short_names.get(full) not in callers:
            continue
        env = dict(e.split("=", 1) for e in spec["TaskTemplate"]["ContainerSpec"].get("Env")
                   or [] if "=" in e)
        for key, value in env.items():
            ports |= {int(m) for m in hostport.findall(value)}
            ports |= {_SCHEME_PORTS[s] for s in scheme.findall(value) if s in _SCHEME_PORTS}
            # The common pair FOO_HOST=callee with FOO_PORT=5432.
            if value == callee and key.endswith("_HOST"):
                port = env.get(key[: -len("_HOST")] + "_PORT", "")
                if port.isdigit():
                    ports.add(int(port))
    return {p for p in ports if 0 < p < 65536}


def _relays(desired: ManagedStack, calls: CallGraph, chain: set[str], generation: str,
            full_of: Mapping[str, str], short_of: Mapping[str, str]) -> tuple[Relay, ...]:
    """A relay for every service outside the chain that a chain member may call.

    Relays are transparent (every TCP port), so no port has to be known; the ports dans can
    read are kept in the plan for the reader only.
    """
    chain_short = {short_of[n] for n in chain}
    callees: dict[str, set[str]] = {}
    for s in chain_short:
        for c in calls.known.successors(s):
            callees.setdefault(c, set()).add(s)
        if s in calls.declared:
            continue
        for net in calls.networks.get(s, ()):
            for c in calls.members[net]:
                callees.setdefault(c, set()).add(s)
    relays = []
    for callee in sorted(set(callees) - chain_short):
        full = full_of.get(callee)
        if full is None or full == desired.lb_service:
            continue  # a name outside the stack (external service): nothing to relay
        nets = [n["Target"] for n in
                desired.specs.services[full]["TaskTemplate"].get("Networks") or []
                if n["Target"] != desired.edge_network]
        if not nets:
            raise PlanError(f"service {callee} is on no network the relay could share")
        relays.append(Relay(
            name=f"{desired.stack}_dans-relay-{generation}-{callee}",
            short=callee, target=full, network=nets[0],
            ports=tuple(sorted(_ports_called(desired, callees[callee], callee))),
        ))
    return tuple(relays)
