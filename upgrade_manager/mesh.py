"""Waypoints: callers reach a meshed service through the LB program in mesh mode (DESIGN §9).

`add_waypoints(managed)` is pure, like `managed.manage`, which calls it when the stack is
meshed (`dans deploy --mesh`: every service another service may call, by the call graph the
planner uses; or a service's `x-dans: {mesh: true}`; `mesh: false` opts one out):
- the real service keeps its full name (`STACK_svc`, which Swarm resolves on each of its
  networks) and loses its short name and aliases there; what it had is kept in its label
  `ALIASES_LABEL`, so an upgrade's temporary copy still answers to every name;
- a waypoint `STACK_dans-wp-svc` on the same networks holds those names and forwards to
  `tasks.STACK_svc` (`dans lb waypoint`): HTTP on the ports dans knows are HTTP (the
  published targets, `http://` URLs in the other services' environments), every other TCP
  port relayed as it is. Its endpoint mode is the real service's (a dnsrr service's callers
  resolve task addresses: now the waypoint's). It restarts start-first, never changes with
  the application's version, and is left alone by upgrades (`callgraph` and `plan` skip it).
Nothing in the application changes; callers and callees keep their images and settings.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace

from upgrade_manager.callgraph import CallGraph
from upgrade_manager.errors import PlanError
from upgrade_manager.gateway import STACK_LABEL
from upgrade_manager.managed import ROLE_LABEL, WAYPOINT_ROLE, ManagedStack
from upgrade_manager.model import Spec

__all__ = ["ALIASES_LABEL", "WAYPOINT_FOR_LABEL", "WAYPOINT_ROLE", "add_waypoints",
           "is_waypoint", "meshed_services", "moved_aliases", "waypoint_name"]

WAYPOINT_FOR_LABEL = "io.dans.waypoint.for"
ALIASES_LABEL = "io.dans.mesh.aliases"  # on a meshed service: {network: [names]} as JSON
RESERVED_PORTS = (15001, 15090)  # the waypoint's relay listener and metrics port
MAX_NAME = 63


def waypoint_name(stack: str, short: str) -> str:
    """The waypoint service of a meshed service."""
    return f"{stack}_dans-wp-{short}"


def is_waypoint(spec: Spec) -> bool:
    """True for a waypoint's service spec."""
    return (spec.get("Labels") or {}).get(ROLE_LABEL) == WAYPOINT_ROLE


def moved_aliases(spec: Spec) -> dict[str, list[str]]:
    """The names a meshed service gave its waypoint, by network ({} when not meshed)."""
    raw = (spec.get("Labels") or {}).get(ALIASES_LABEL)
    return dict(json.loads(raw)) if raw else {}


def _called(calls: CallGraph, short: str) -> bool:
    """True when another service may call `short` (a known edge, or a shared network with a
    service that does not declare what it calls)."""
    if any(c != short for c in calls.known.predecessors(short)):
        return True
    return any(c != short and c not in calls.declared
               for net in calls.networks.get(short, ()) for c in calls.members[net])


def meshed_services(desired: ManagedStack, everything: bool) -> list[str]:
    """Full names of the services that get a waypoint: with `everything`, each one another
    service may call; and those declaring `x-dans: {mesh: true}`; never `mesh: false`."""
    specs = desired.specs
    calls = CallGraph.of(desired)
    out = []
    for full in sorted(specs.services):
        short = specs.short_names.get(full, full)
        if full == desired.lb_service or not calls.networks.get(short):
            continue
        wanted = specs.extensions.get(short, {}).get("mesh")
        if wanted or (wanted is None and everything and _called(calls, short)):
            out.append(full)
    return out


_HTTP_URL = r"(?:^|[\s=,;\"'])http://(?:[^/@\s]*@)?{host}(?::(\d{{1,5}}))?(?:[/\s?#\"']|$)"


def _http_ports(desired: ManagedStack, full: str, short: str) -> list[int]:
    """The ports callers speak HTTP to `short` on: `http://` URLs naming it in the other
    services' environments, and its published ports (unless `x-dans.protocol: tcp`). Any
    other port is relayed as it is, so a guess never puts a non-HTTP port through the
    HTTP engine."""
    specs = desired.specs
    if specs.extensions.get(short, {}).get("protocol") == "tcp":
        return []
    url = re.compile(_HTTP_URL.format(host=re.escape(short)))
    ports = {e.target for e in desired.entries if e.service == full}
    for other, spec in specs.services.items():
        if other == full:
            continue
        for env in spec["TaskTemplate"]["ContainerSpec"].get("Env") or []:
            ports |= {int(m) if m else 80 for m in url.findall(env.partition("=")[2])}
    ports = {p for p in ports if 0 < p < 65536}
    clash = sorted(ports & set(RESERVED_PORTS))
    if clash:
        raise PlanError(f"service {short} is called on port {clash[0]}, which its waypoint "
                        "needs for itself; leave it out of the mesh with x-dans: {mesh: false}")
    return sorted(ports)


def _waypoint_spec(desired: ManagedStack, full: str, names: dict[str, list[str]]) -> Spec:
    specs = desired.specs
    stack = desired.stack
    short = specs.short_names.get(full, full)
    name = waypoint_name(stack, short)
    if len(name) > MAX_NAME:
        raise PlanError(f"service {short}: its waypoint's name {name} is longer than "
                        f"{MAX_NAME} characters; shorten the stack or service name, or leave "
                        "it out of the mesh with x-dans: {mesh: false}")
    args = ["waypoint", "--target", full, "--callee", short]
    ports = _http_ports(desired, full, short)
    if ports:
        args += ["--http", ",".join(map(str, ports))]
    header = specs.extensions.get(short, {}).get("trace_header")
    if header:
        args += ["--trace-header", str(header)]
    mode = (specs.services[full].get("EndpointSpec") or {}).get("Mode", "vip")
    second = 1_000_000_000
    return {
        "Name": name,
        "Labels": {STACK_LABEL: stack, ROLE_LABEL: WAYPOINT_ROLE, WAYPOINT_FOR_LABEL: full},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": desired.settings.image,
                "Args": args,
                "Labels": {STACK_LABEL: stack},
                "CapabilityAdd": ["CAP_NET_ADMIN"],
                "Healthcheck": {"Test": ["CMD", "test", "-f", "/tmp/dans-waypoint-ready"],
                                "Interval": second, "Timeout": second, "Retries": 3,
                                "StartPeriod": 0},
                "StopGracePeriod": 10 * second,
            },
            "Networks": [{"Target": net, "Aliases": aliases}
                         for net, aliases in sorted(names.items())],
            "RestartPolicy": {"Condition": "any", "MaxAttempts": 0},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "UpdateConfig": {"Parallelism": 1, "Order": "start-first", "FailureAction": "pause"},
        "EndpointSpec": {"Mode": mode},
    }


def _take_names(spec: Spec, short: str, edge: str) -> dict[str, list[str]]:
    """Remove the short name and aliases from a service's networks (not the edge); return
    them by network, the short name first."""
    names: dict[str, list[str]] = {}
    for net in spec["TaskTemplate"].get("Networks") or []:
        if net["Target"] == edge:
            continue
        aliases = [a for a in net.pop("Aliases", None) or [] if a != short]
        names[net["Target"]] = [short, *sorted(set(aliases))]
    return names


def add_waypoints(desired: ManagedStack) -> ManagedStack:
    """The stack with a waypoint in front of each meshed service (see the module's text)."""
    if not desired.settings.mesh and not any(ext.get("mesh") for ext in
                                             desired.specs.extensions.values()):
        return desired  # the usual stack: no call graph to read
    meshed = meshed_services(desired, desired.settings.mesh)
    if not meshed:
        return desired
    specs = desired.specs
    services = copy.deepcopy(specs.services)
    short_names = dict(specs.short_names)
    for full in meshed:
        short = specs.short_names.get(full, full)
        names = _take_names(services[full], short, desired.edge_network)
        services[full]["Labels"] = {**(services[full].get("Labels") or {}),
                                    ALIASES_LABEL: json.dumps(names, sort_keys=True)}
        wp = _waypoint_spec(desired, full, names)
        if wp["Name"] in services:
            raise PlanError(f"the stack has a service named {wp['Name']}, the name of "
                            f"{short}'s waypoint")
        services[wp["Name"]] = wp
        short_names[wp["Name"]] = wp["Name"].removeprefix(desired.stack + "_")
    return replace(desired, specs=replace(specs, services=services, short_names=short_names))
