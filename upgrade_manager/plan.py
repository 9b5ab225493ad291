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
from typing import Any

import networkx as nx

from upgrade_manager.diff import FieldDiff, diff_specs, normalize, replaces_tasks
from upgrade_manager.errors import PlanError
from upgrade_manager.managed import ManagedStack
from upgrade_manager.model import (
    FAST_UPDATE,
    GENERATION_LABEL,
    STRATEGIES,
    Plan,
    Relay,
    RunningStack,
    ServiceChange,
    Spec,
    Step,
    temp_name,
)
from upgrade_manager.steps import StepBuilder

__all__ = [
    "RunningStack",
    "ServiceChange",
    "Relay",
    "Step",
    "Plan",
    "make_plan",
    "STRATEGIES",
    "temp_name",
    "fingerprint",
    "FAST_UPDATE",
    "GENERATION_LABEL",
]

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
    """Plan moving `running` to `desired` with `strategy`; pure, raises PlanError."""
    if strategy not in STRATEGIES:
        raise PlanError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    specs = desired.specs
    short_of = dict(specs.short_names)
    full_of = {v: k for k, v in short_of.items()}
    graph = _graph(desired)
    warnings = list(specs.warnings)

    diffs: dict[str, list[FieldDiff]] = {}
    for full, spec in specs.services.items():
        if full in running.services:
            old = normalize(running.services[full], running.network_names)
            diffs[full] = diff_specs(old, normalize(spec))
    added = sorted(set(specs.services) - set(running.services))
    removed = sorted(n for n in set(running.services) - set(specs.services)
                     if not _is_dans_object(running.services[n]))
    replaced = {n for n, d in diffs.items() if replaces_tasks(d)}
    scaled = {n for n, d in diffs.items() if d and n not in replaced}
    lb = desired.lb_service

    stateful = {n for n in replaced if _has_volume(specs.services[n]) and n != lb}
    compatible = {n for n in replaced - stateful
                  if specs.extensions.get(short_of.get(n, ""), {}).get("compatible")}
    chain: set[str] = set()
    if strategy == "dans":
        core = replaced - stateful - compatible - {lb}
        chain = set(core)
        for n in core:
            chain |= {full_of[a] for a in nx.ancestors(graph, short_of[n]) if a in full_of}
        chain -= stateful | {lb} | set(added)
        # A compatible service that no changed service needs rolls in place; one that
        # calls into the chain must move with it.
        compatible -= chain
        entries = desired.entry_services()
        if chain and not chain & entries:
            warnings.append(
                "changed services " + ", ".join(sorted(short_of[n] for n in chain))
                + " are not reached from any published port: dans cannot move their traffic,"
                " so they roll in place"
            )
            chain = set()
    for n in sorted(stateful):
        warnings.append(
            f"{short_of[n]} keeps state in a named volume: it is updated IN PLACE, stop-first; "
            "requests that need it fail while it restarts"
        )
    if lb in replaced:
        warnings.append("the edge LB's spec changes (published ports differ): it restarts, "
                        "and requests in flight at the edge during its restart may fail")

    relays = _relays(desired, graph, chain, generation, full_of, short_of) \
        if chain else ()
    order = _callees_first(graph, [short_of[n] for n in chain])
    chain_order = tuple(full_of[s] for s in order)

    changes = []
    for full in sorted(set(specs.services) | set(running.services)):
        changes.append(_change(full, short_of, running, specs.services, diffs, added, removed,
                               replaced, scaled, chain, compatible, stateful, relays, lb))
    extra = sum(_replicas(specs.services[n]) for n in chain) + len(relays)

    steps: list[Step] = []
    ctx = StepBuilder(running, desired, generation)
    steps += ctx.objects()
    if strategy == "rolling":
        steps += ctx.rolling(replaced | scaled, added)
    elif strategy == "isolated":
        steps += ctx.isolated(replaced, scaled, added)
    else:
        steps += [ctx.update_in_place(n, "stateful: stop-first", stop_first=True)
                  for n in sorted(stateful)]
        steps += [ctx.create(n) for n in added if n != lb]
        if chain:
            steps += ctx.chain_steps(chain_order, relays, replaced & chain,
                                     scaled - {lb})
        else:
            steps += [ctx.update_in_place(n, "in place") for n in sorted((replaced | scaled)
                                                                        - stateful - {lb})]
        steps += [ctx.update_in_place(n, "compatible: rolls in place")
                  for n in sorted(compatible)]
        if lb in replaced | scaled or lb in added:
            steps.append(ctx.create(lb) if lb in added else ctx.update_in_place(lb, "edge LB"))
    if prune:
        steps += [Step("remove_service", n, note="not in the new file") for n in removed]
        steps += ctx.prune_objects()
    elif removed:
        warnings.append("services not in the new file are kept (use --prune to remove): "
                        + ", ".join(removed))
    steps += ctx.unused_objects()

    return Plan(
        stack=desired.stack,
        strategy=strategy,
        generation=generation,
        changes=tuple(changes),
        edges=tuple((d.source, d.target, d.kind, d.declared) for d in specs.dependencies),
        chain=chain_order,
        relays=relays,
        steps=tuple(steps),
        extra_replicas=extra,
        warnings=tuple(warnings),
        old_specs={n: running.services[n] for n in sorted(running.services)},
        old_table=old_table,
        fingerprint=fingerprint(desired),
    )


def _graph(desired: ManagedStack) -> nx.DiGraph:
    """Caller -> callee graph over short names, from declared and inferred dependencies."""
    graph = nx.DiGraph()
    graph.add_nodes_from(desired.specs.short_names.values())
    for dep in desired.specs.dependencies:
        if dep.source != dep.target:
            graph.add_edge(dep.source, dep.target, kind=dep.kind, declared=dep.declared)
    return graph


def _callees_first(graph: nx.DiGraph, members: list[str]) -> list[str]:
    sub = graph.subgraph(members)
    try:
        return list(reversed(list(nx.lexicographical_topological_sort(sub))))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(sub)
        raise PlanError(
            "the changed services call each other in a cycle ("
            + " -> ".join(a for a, _ in cycle) + f" -> {cycle[0][0]}); dans needs an order "
            "to start new versions, callees first"
        ) from None


def _has_volume(spec: Spec) -> bool:
    mounts = spec["TaskTemplate"]["ContainerSpec"].get("Mounts") or []
    return any(m.get("Type", "volume") == "volume" for m in mounts)


def _replicas(spec: Spec) -> int:
    return int(spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 1))


def _is_dans_object(spec: Spec) -> bool:
    # Temporary services and relays of an unfinished upgrade are the executor's business.
    return GENERATION_LABEL in (spec.get("Labels") or {})


def _change(full: str, short_of: Mapping[str, str], running: RunningStack,
            desired: Mapping[str, Spec], diffs: Mapping[str, list[FieldDiff]],
            added: list[str], removed: list[str], replaced: set[str], scaled: set[str],
            chain: set[str], compatible: set[str], stateful: set[str],
            relays: tuple[Relay, ...], lb: str) -> ServiceChange:
    short = short_of.get(full, full.removeprefix(running.stack + "_"))
    if full in added:
        kind = "added"
    elif full in removed:
        kind = "removed"
    elif full in replaced:
        kind = "changed"
    elif full in scaled:
        kind = "scaled"
    else:
        kind = "unchanged"
    if full in chain:
        role = "chain" if full in replaced else "companion"
    elif full in stateful:
        role = "stateful"
    elif full in compatible:
        role = "compatible"
    elif any(r.target == full for r in relays):
        role = "relayed"
    elif full == lb:
        role = "edge-lb"
    elif kind in ("changed", "scaled"):
        role = "in-place"
    else:
        role = "none"
    spec = desired.get(full) or running.services.get(full) or {}
    return ServiceChange(full, short, kind, role, tuple(str(d) for d in diffs.get(full, [])),
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


def _relays(desired: ManagedStack, graph: nx.DiGraph, chain: set[str], generation: str,
            full_of: Mapping[str, str], short_of: Mapping[str, str]) -> tuple[Relay, ...]:
    chain_short = {short_of[n] for n in chain}
    callees = sorted({c for s in chain_short for c in graph.successors(s)} - chain_short)
    relays = []
    for callee in callees:
        full = full_of.get(callee)
        if full is None:
            continue  # a name outside the stack (external service): nothing to relay
        callers = {s for s in chain_short if graph.has_edge(s, callee)}
        ports = _ports_called(desired, callers, callee)
        if not ports:
            raise PlanError(
                f"{', '.join(sorted(callers))} call {callee}, but no port for it was found in "
                f"their environment; add `x-dans: {{ports: [PORT]}}` to service {callee}"
            )
        nets = [n["Target"] for n in
                desired.specs.services[full]["TaskTemplate"].get("Networks") or []
                if n["Target"] != desired.edge_network]
        if not nets:
            raise PlanError(f"service {callee} is on no network the relay could share")
        relays.append(Relay(
            name=f"{desired.stack}_dans-relay-{generation}-{callee}",
            short=callee, target=full, network=nets[0], ports=tuple(sorted(ports)),
        ))
    return tuple(relays)
