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
from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx

from upgrade_manager.diff import FieldDiff, diff_specs, normalize, replaces_tasks
from upgrade_manager.errors import PlanError
from upgrade_manager.gateway import STACK_LABEL
from upgrade_manager.managed import ROLE_LABEL, ManagedStack, lb_env

__all__ = [
    "RunningStack",
    "ServiceChange",
    "Relay",
    "Step",
    "Plan",
    "make_plan",
    "STRATEGIES",
    "temp_name",
]

Spec = dict[str, Any]
STRATEGIES = ("dans", "rolling", "isolated")
GENERATION_LABEL = "io.dans.generation"

# Well-known ports by URL scheme, for finding where a relayed service listens.
_SCHEME_PORTS = {
    "http": 80, "https": 443, "postgres": 5432, "postgresql": 5432, "mysql": 3306,
    "redis": 6379, "amqp": 5672, "mongodb": 27017, "memcached": 11211,
}

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
    ports: tuple[int, ...]


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
            edges=tuple(tuple(e) for e in data["edges"]),  # type: ignore[misc]
            chain=tuple(data["chain"]),
            relays=tuple(Relay(**{**r, "ports": tuple(r["ports"])}) for r in data["relays"]),
            steps=tuple(Step(**s) for s in data["steps"]),
            extra_replicas=data["extra_replicas"],
            warnings=tuple(data["warnings"]),
            old_specs=data["old_specs"],
            old_table=data["old_table"],
            fingerprint=data["fingerprint"],
        )


def temp_name(full: str, generation: str) -> str:
    """The temporary copy of a service for one upgrade generation."""
    return f"{full}-dans-{generation}"


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

    relays = _relays(desired, graph, chain, running, generation, full_of, short_of) \
        if chain else ()
    order = _callees_first(graph, [short_of[n] for n in chain])
    chain_order = tuple(full_of[s] for s in order)

    changes = []
    for full in sorted(set(specs.services) | set(running.services)):
        changes.append(_change(full, short_of, running, specs.services, diffs, added, removed,
                               replaced, scaled, chain, compatible, stateful, relays, lb))
    extra = sum(_replicas(specs.services[n]) for n in chain) + len(relays)

    steps: list[Step] = []
    ctx = _Ctx(running, desired, generation, strategy, prune)
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
                                     scaled - {lb}, old_table)
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


def _relays(desired: ManagedStack, graph: nx.DiGraph, chain: set[str], running: RunningStack,
            generation: str, full_of: Mapping[str, str],
            short_of: Mapping[str, str]) -> tuple[Relay, ...]:
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
    del running
    return tuple(relays)


class _Ctx:
    """Builds the steps of one plan; holds what every builder needs."""

    def __init__(self, running: RunningStack, desired: ManagedStack, generation: str,
                 strategy: str, prune: bool) -> None:
        self.running = running
        self.desired = desired
        self.specs = desired.specs
        self.generation = generation
        self.network = f"{desired.stack}_dans-gen-{generation}"
        self.labels = {STACK_LABEL: desired.stack, GENERATION_LABEL: generation}
        del strategy, prune

    def objects(self) -> list[Step]:
        """Create the networks, configs and secrets the new file adds."""
        steps = [Step("create_network", n, {"spec": s})
                 for n, s in sorted(self.specs.networks.items())
                 if n not in self.running.networks]
        steps += [Step("create_config", n, {"spec": _encodable(s)})
                  for n, s in sorted(self.specs.configs.items())
                  if n not in self.running.configs]
        steps += [Step("create_secret", n, {"spec": _encodable(s)})
                  for n, s in sorted(self.specs.secrets.items())
                  if n not in self.running.secrets]
        return steps

    def unused_objects(self) -> list[Step]:
        """Remove configs and secrets the new file no longer names (e.g. older content)."""
        old_configs = sorted(self.running.configs - set(self.specs.configs))
        old_secrets = sorted(self.running.secrets - set(self.specs.secrets))
        if not old_configs and not old_secrets:
            return []
        return [Step("remove_unused", "configs-secrets",
                     {"configs": old_configs, "secrets": old_secrets},
                     note="kept if a service still uses them")]

    def prune_objects(self) -> list[Step]:
        """Remove the stack's networks that the new file no longer declares."""
        keep = set(self.specs.networks)
        return [Step("remove_network", n, note="not in the new file")
                for n in sorted(self.running.networks - keep)
                if "dans-gen-" not in n]

    def create(self, name: str) -> Step:
        """Create a service the new file adds, and wait until it is healthy."""
        return Step("create_service", name, {"spec": self.specs.services[name]},
                    note="new service")

    def update_in_place(self, name: str, note: str, *, stop_first: bool = False) -> Step:
        """Update a service in place with its own update config (or stop-first)."""
        args: dict[str, Any] = {"spec": self.specs.services[name]}
        if stop_first:
            args["via"] = {**_update_config(self.specs.services[name]), "Order": "stop-first"}
        return Step("update_service", name, args, note=note)

    def rolling(self, changed: set[str], added: list[str]) -> list[Step]:
        """What `docker stack deploy` does: every service updates at once, each rolling."""
        steps = [self.create(n) for n in added]
        steps.append(Step("update_services", "stack",
                          {"services": {n: self.specs.services[n] for n in sorted(changed)}},
                          note="all at once, each by its own update config"))
        return steps

    def isolated(self, replaced: set[str], scaled: set[str], added: list[str]) -> list[Step]:
        """Old chain stops, new chain starts: no two versions ever serve together."""
        steps = [self.create(n) for n in added]
        services = {n: self.specs.services[n] for n in sorted(replaced | scaled)}
        steps.append(Step("update_services", "stack",
                          {"services": services, "via": {**FAST_UPDATE}},
                          note="every changed service at once, stop-first"))
        return steps

    def chain_steps(self, chain: tuple[str, ...], relays: tuple[Relay, ...],
                    converge: set[str], scaled: set[str],
                    old_table: dict[str, Any] | None) -> list[Step]:
        """The DANS sequence: new chain beside the old, switch, converge, switch back."""
        d = self.desired
        temps = {n: temp_name(n, self.generation) for n in chain}
        group = f"dans-{self.generation}"
        fronts = [e.frontend for e in d.entries if e.service in temps]
        steps = [Step("create_network", self.network, {"spec": {
            "Name": self.network, "Driver": "overlay", "Attachable": False,
            "Labels": dict(self.labels)}}, note="generation network")]
        steps += [Step("create_relay", r.name, {"spec": self.relay_spec(r)},
                       note=f"answers for {r.short} on the generation network")
                  for r in relays]
        steps += [Step("create_temp", temps[n], {"spec": self.temp_spec(n), "of": n},
                       note=f"new {self.specs.short_names[n]} beside the old")
                  for n in chain]
        to_new = d.routing_table({group: temps}, {f: group for f in fronts})
        steps.append(Step("route", "lb", {"table": to_new.to_dict()},
                          note="new requests go to the new chain"))
        steps.append(Step("drain", "lb", {"frontends": fronts, "group": "main"},
                          note="old chain finishes its requests"))
        services = {n: self.specs.services[n] for n in sorted(converge | scaled)}
        steps.append(Step("converge", "canonical", {"services": services, "via": FAST_UPDATE},
                          note="idle canonical services take the new specs"))
        back = d.routing_table({group: temps})
        back_dict = back.to_dict()
        for fe in back_dict["frontends"]:
            if group in fe["groups"]:
                fe["groups"][group]["state"] = "draining"
        steps.append(Step("route", "lb-back", {"table": back_dict},
                          note="new requests go to the canonical services"))
        steps.append(Step("drain", "lb-back", {"frontends": fronts, "group": group},
                          note="temporary chain finishes its requests"))
        steps.append(Step("route", "lb-final", {"table": d.routing_table().to_dict()}))
        steps.append(Step("remove_services", "temporary", {"names": list(temps.values())}))
        steps.append(Step("remove_services", "relays", {"names": [r.name for r in relays]}))
        steps.append(Step("remove_network", self.network, note="generation network"))
        del old_table
        return steps

    def temp_spec(self, full: str) -> Spec:
        """A temporary copy of a service: on the generation network only, under its names."""
        spec = json.loads(json.dumps(self.specs.services[full]))
        short = self.specs.short_names[full]
        spec["Name"] = temp_name(full, self.generation)
        spec["Labels"] = {**(spec.get("Labels") or {}), **self.labels}
        task = spec["TaskTemplate"]
        aliases = {short}
        for net in task.get("Networks") or []:
            aliases |= set(net.get("Aliases") or [])
        networks = [{"Target": self.network, "Aliases": sorted(aliases)}]
        if full in self.desired.entry_services():
            networks.append({"Target": self.desired.edge_network})
        task["Networks"] = networks
        endpoint = spec.get("EndpointSpec") or {}
        endpoint.pop("Ports", None)  # published ports belong to the canonical service
        spec["EndpointSpec"] = endpoint
        return spec

    def relay_spec(self, relay: Relay) -> Spec:
        """The LB program in TCP mode, answering for `relay.short` on the generation network."""
        settings = self.desired.settings
        admin = 9900 if 9900 not in relay.ports else 9901
        table = {"frontends": [
            {"name": f"{relay.short}-{p}", "listen": p, "mode": "tcp", "active": "main",
             "groups": {"main": {"backends": [f"tasks.{relay.target}:{p}"]}}}
            for p in relay.ports]}
        mode = (self.specs.services[relay.target].get("EndpointSpec") or {}).get("Mode", "vip")
        return {
            "Name": relay.name,
            "Labels": {**self.labels, ROLE_LABEL: "relay"},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": settings.image,
                    "Env": lb_env(table, settings.token, admin),
                    "StopGracePeriod": 10_000_000_000,
                },
                "Networks": [{"Target": relay.network},
                             {"Target": self.network, "Aliases": [relay.short]}],
                "RestartPolicy": {"Condition": "any", "MaxAttempts": 0},
            },
            "Mode": {"Replicated": {"Replicas": 1}},
            "EndpointSpec": {"Mode": mode},
        }


def _update_config(spec: Spec) -> dict[str, Any]:
    return dict(spec.get("UpdateConfig") or {})


def _encodable(spec: Spec) -> Spec:
    """Config and secret specs carry bytes; the plan stores them as base64 text."""
    import base64

    out = dict(spec)
    if isinstance(out.get("Data"), bytes):
        out["Data"] = base64.b64encode(out["Data"]).decode("ascii")
    return out
