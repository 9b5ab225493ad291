"""Who may call whom: the sound over-approximation the planner works with (DESIGN.md §8).

Real images carry their callees' URLs in code and config files, so the edges dans can read
(`depends_on`, `links`, URLs in the environment) are hints, never the whole truth. The rule:
- a service that declares `x-dans: {calls: [...]}` calls exactly those services (plus the
  ones its Compose keys name): its declaration narrows the graph;
- every other service may call every service it shares a network with (the stack's edge
  network excepted: only the LB calls over it, by full name);
- a network declared `external: true` is shared with things outside the stack, which dans
  neither sees nor can copy or move: a service on one may be called from outside (and may
  call outside services), so the planner treats it as having outside callers (`external`).
Known edges also give the order in which new versions start (callees first); assumed edges
only widen the set of services that move together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx

from upgrade_manager.managed import ROLE_LABEL, WAYPOINT_ROLE, ManagedStack

__all__ = ["CallGraph", "Closure"]


@dataclass
class Closure:
    """The services that must move with a set of changed ones, and why."""

    members: set[str] = field(default_factory=set)  # short names, the changed ones included
    blocked: dict[str, str] = field(default_factory=dict)  # caller that cannot move -> callee
    assumed: dict[str, list[str]] = field(default_factory=dict)  # network -> callees reached


@dataclass(frozen=True)
class CallGraph:
    """The known edges and the network membership of a desired stack (short names)."""

    known: nx.DiGraph
    declared: frozenset[str]
    networks: dict[str, tuple[str, ...]]
    members: dict[str, tuple[str, ...]]
    external: dict[str, tuple[str, ...]] = field(default_factory=dict)  # short -> ext. nets

    @classmethod
    def of(cls, desired: ManagedStack) -> CallGraph:
        """Read the graph from a managed stack's specs and `x-dans` declarations."""
        specs = desired.specs
        known = nx.DiGraph()
        known.add_nodes_from(specs.short_names.values())
        for dep in specs.dependencies:
            if dep.source != dep.target:
                known.add_edge(dep.source, dep.target, kind=dep.kind, declared=dep.declared)
        declared = frozenset(s for s, ext in specs.extensions.items() if "calls" in ext)
        networks: dict[str, tuple[str, ...]] = {}
        members: dict[str, list[str]] = {}
        outside = set(specs.external_networks)
        external: dict[str, tuple[str, ...]] = {}
        for full, spec in sorted(specs.services.items()):
            if full == desired.lb_service \
                    or (spec.get("Labels") or {}).get(ROLE_LABEL) == WAYPOINT_ROLE:
                continue  # a waypoint stands in for its service: calls pass through it
            short = specs.short_names.get(full, full)
            nets = tuple(sorted({n["Target"] for n in spec["TaskTemplate"].get("Networks") or []
                                 if n["Target"] != desired.edge_network}))
            networks[short] = nets
            if outside & set(nets):
                external[short] = tuple(n for n in nets if n in outside)
            for net in nets:
                members.setdefault(net, []).append(short)
        return cls(known, declared, networks, {k: tuple(v) for k, v in members.items()},
                   external)

    def closure(self, changed: Iterable[str], can_move: set[str]) -> Closure:
        """Every service that may call a changed one, directly or through others.

        A caller outside `can_move` (it cannot be copied, e.g. state in a named volume) is
        recorded in `blocked` and not followed further. Each network is expanded once, so
        the cost grows with the number of memberships, not with their square.
        """
        out = Closure()
        todo = [s for s in changed if s in self.networks]
        out.members.update(todo)
        expanded: set[str] = set()
        while todo:
            callee = todo.pop()
            callers = [(c, "known") for c in self.known.predecessors(callee)]
            for net in self.networks.get(callee, ()):
                if net in expanded:
                    continue
                expanded.add(net)
                out.assumed.setdefault(net, []).append(callee)
                callers += [(c, net) for c in self.members[net] if c not in self.declared]
            for caller, _how in callers:
                if caller == callee or caller in out.members or caller not in self.networks:
                    continue
                if caller not in can_move:
                    out.blocked.setdefault(caller, callee)
                    continue
                out.members.add(caller)
                todo.append(caller)
        return out

    def levels(self, members: Iterable[str]) -> list[list[str]]:
        """`members` in start order by known edges: level 0 calls no other member.

        Services that call each other (a cycle) share a level: they start together.
        """
        sub = self.known.subgraph(members)
        dag = nx.condensation(sub)
        depth: dict[int, int] = {}
        for node in reversed(list(nx.topological_sort(dag))):
            succ = [depth[s] for s in dag.successors(node)]
            depth[node] = 1 + max(succ) if succ else 0
        out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for node, level in depth.items():
            out[level].extend(dag.nodes[node]["members"])
        return [sorted(level) for level in out]
