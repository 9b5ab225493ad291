"""A dans-managed stack: the translator's specs plus the edge LB that owns the published ports.

`manage(specs, settings)` is pure: it takes what `docker stack deploy` would create and
returns what `dans deploy` creates instead (DESIGN.md §5):
- an edge network `STACK_dans-edge` holding only the LB and the entry services, with no
  short-name aliases on it;
- every service that publishes ports (an entry service) loses its TCP published ports and
  joins the edge network; its name and other networks stay as they were;
- an LB service `STACK_dans-lb` on the edge network only, publishing those ports with the
  same numbers and modes and proxying each to `tasks.STACK_svc:TARGET`. Its admin API is
  published on no port (dans reaches it over the edge network: `admin_channel`), and its
  token is a Docker secret mounted at /run/secrets/dans_lb_token, never an environment
  variable or a label.
- configs and secrets are named after their content (`STACK_name-<digest>`), so changed
  content is a new object that the new version uses while the old version keeps the old.
The LB's spec depends only on the entry services' ports, so redeploying or upgrading a stack
whose published ports stay the same never restarts it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from compose_translator import StackSpecs
from lb.table import Frontend, Group, RoutingTable
from upgrade_manager._lb import lb_errors
from upgrade_manager.errors import PlanError
from upgrade_manager.gateway import STACK_LABEL
from upgrade_manager.model import Spec

__all__ = [
    "ADMIN_PORT_LABEL",
    "LOGICAL_NAME_LABEL",
    "MAIN_GROUP",
    "MESH_LABEL",
    "ROLE_LABEL",
    "TOKEN_FILE",
    "TOKEN_ROLE",
    "WAYPOINT_ROLE",
    "EntryPort",
    "LBSettings",
    "ManagedStack",
    "edge_network_name",
    "lb_env",
    "lb_service_name",
    "manage",
    "routing_table",
    "token_secret_name",
    "token_secret_ref",
]

ROLE_LABEL = "io.dans.role"
LOGICAL_NAME_LABEL = "io.dans.logical-name"
CONTENT_DIGEST_LEN = 10
ADMIN_PORT_LABEL = "io.dans.lb.admin-port"
MAIN_GROUP = "main"
TOKEN_FILE = "dans_lb_token"  # /run/secrets/<this> in the LB (lb._server.DEFAULT_SECRET)
TOKEN_ROLE = "lb-token"
WAYPOINT_ROLE = "waypoint"  # a meshed service's waypoint (upgrade_manager.mesh)
MESH_LABEL = "io.dans.mesh"  # on the LB's spec: "all" for a stack deployed with --mesh


def token_secret_name(stack: str, suffix: str) -> str:
    """The name of a stack's LB token secret; a new suffix for each token (secrets are
    immutable, so rotating the token is a new secret)."""
    return f"{stack}_dans-lb-token-{suffix}"


def token_secret_ref(spec: Spec) -> Spec | None:
    """The LB spec's reference to its token secret (the one mounted as TOKEN_FILE), if any."""
    container = spec["TaskTemplate"]["ContainerSpec"]
    for ref in container.get("Secrets") or []:
        if (ref.get("File") or {}).get("Name") == TOKEN_FILE:
            return dict(ref)
    return None


def lb_service_name(stack: str) -> str:
    """The name of a stack's edge LB service."""
    return f"{stack}_dans-lb"


def edge_network_name(stack: str) -> str:
    """The name of a stack's edge network."""
    return f"{stack}_dans-edge"


@dataclass(frozen=True)
class LBSettings:
    """How the edge LB is run; read back from its service spec so upgrades reuse them."""

    image: str
    token_secret: str  # the Docker secret holding the admin token (never the token itself)
    admin_port: int = 9900
    replicas: int | None = 1  # None: one LB task per node (global mode)
    # Create the stack's overlay networks encrypted (IPsec between nodes), the edge network
    # with the helper -> LB admin traffic among them.
    encrypt: bool = False
    # Every service another service may call gets a waypoint (upgrade_manager.mesh).
    mesh: bool = False


@dataclass(frozen=True)
class EntryPort:
    """One published port of an entry service, now owned by the LB."""

    service: str  # full name
    short: str
    published: int
    target: int
    mode: str  # ingress | host
    protocol: str  # http | tcp (what the LB speaks for it)

    @property
    def frontend(self) -> str:
        """The LB frontend's name for this port."""
        return f"{self.short}-{self.published}"

    def backend(self, service: str | None = None) -> str:
        """The LB backend address for this port, for the canonical or another service."""
        return f"tasks.{service or self.service}:{self.target}"


@dataclass(frozen=True)
class ManagedStack:
    """What `dans deploy` creates: the translated stack, rewritten to sit behind the LB."""

    specs: StackSpecs
    entries: tuple[EntryPort, ...]
    lb_service: str
    edge_network: str
    settings: LBSettings

    @property
    def stack(self) -> str:
        """The stack's name."""
        return self.specs.stack

    def entry_services(self) -> set[str]:
        """Full names of the services the LB fronts."""
        return {e.service for e in self.entries}

    def routing_table(self, extra_groups: dict[str, dict[str, str]] | None = None,
                      active: dict[str, str] | None = None) -> RoutingTable:
        """The LB's table for this stack; see `routing_table`."""
        return routing_table(self.entries, extra_groups, active)


def routing_table(entries: tuple[EntryPort, ...],
                  extra_groups: dict[str, dict[str, str]] | None = None,
                  active: dict[str, str] | None = None) -> RoutingTable:
    """The LB's table; by default every frontend routes to its canonical entry service.

    `extra_groups` maps a group name to {canonical service: temporary service} and adds, for
    each frontend of those services, a group routing to the temporary service; `active` maps
    a frontend name to the group that takes its new requests.
    """
    with lb_errors():  # a table the LB would refuse (a bad file, or a bug): a DansError
        return RoutingTable(tuple(_frontend(e, extra_groups or {}, active or {})
                                  for e in entries))


def _frontend(e: EntryPort, extra_groups: dict[str, dict[str, str]],
              active: dict[str, str]) -> Frontend:
    groups = {MAIN_GROUP: Group(backends=(e.backend(),))}
    for gname, mapping in extra_groups.items():
        if e.service in mapping:
            groups[gname] = Group(backends=(e.backend(mapping[e.service]),))
    # Every HTTP request leaves the edge with trace context (lb._trace, DESIGN.md §9): the
    # frontend's default, so the table is what it was before tracing existed.
    return Frontend(name=e.frontend, listen=e.published, mode=e.protocol, groups=groups,
                    active=active.get(e.frontend, MAIN_GROUP))


def _encrypted(body: Spec) -> Spec:
    """An overlay network's spec with Swarm's `encrypted` option (others unchanged)."""
    if body.get("Driver", "overlay") != "overlay":
        return body
    return {**body, "Options": {**(body.get("Options") or {}), "encrypted": ""}}


def manage(specs: StackSpecs, settings: LBSettings) -> ManagedStack:
    """Rewrite a translated stack so that the edge LB owns its published ports."""
    stack = specs.stack
    edge = edge_network_name(stack)
    services = copy.deepcopy(specs.services)
    entries: list[EntryPort] = []
    for full, spec in sorted(services.items()):
        short = specs.short_names.get(full, full)
        protocol = specs.extensions.get(short, {}).get("protocol", "http")
        owned = _take_ports(spec, full, short, protocol)
        if owned:
            entries.extend(owned)
            networks = spec["TaskTemplate"].setdefault("Networks", [])
            networks.append({"Target": edge})
    clash = [e for e in entries if e.published == settings.admin_port]
    if clash:
        raise PlanError(
            f"service {clash[0].short} publishes port {settings.admin_port}, which is the LB's "
            "admin port; choose another with --lb-admin-port"
        )
    lb_name = lb_service_name(stack)
    services[lb_name] = lb_service_spec(stack, tuple(entries), settings)
    networks = dict(specs.networks)
    networks[edge] = {
        "Name": edge,
        "Driver": "overlay",
        "Attachable": False,
        "Labels": {STACK_LABEL: stack, ROLE_LABEL: "edge"},
    }
    if settings.encrypt:
        networks = {name: _encrypted(body) for name, body in networks.items()}
    short_names = dict(specs.short_names)
    short_names[lb_name] = "dans-lb"
    configs, config_names = _content_addressed(specs.configs)
    secrets, secret_names = _content_addressed(specs.secrets)
    for spec in services.values():
        _rename_refs(spec, config_names, secret_names)
    rewritten = replace(specs, services=services, networks=networks, short_names=short_names,
                        configs=configs, secrets=secrets)
    managed = ManagedStack(rewritten, tuple(entries), lb_name, edge, settings)
    from upgrade_manager.mesh import add_waypoints  # it reads the call graph of `managed`

    return add_waypoints(managed)


def _content_addressed(objects: dict[str, Spec]) -> tuple[dict[str, Spec], dict[str, str]]:
    """Name each config or secret after its content, so a change makes a new object.

    Swarm refuses to change a config's data in place (stack deploy fails on it); a new name
    lets the new version use new content while the old version keeps the old one.
    """
    out: dict[str, Spec] = {}
    renamed: dict[str, str] = {}
    for name, spec in objects.items():
        if "Data" not in spec:  # driver-backed secrets have no data to address
            out[name] = spec
            continue
        digest = hashlib.sha256(spec["Data"]).hexdigest()[:CONTENT_DIGEST_LEN]
        new = f"{name}-{digest}"
        renamed[name] = new
        labels = {**(spec.get("Labels") or {}), LOGICAL_NAME_LABEL: name}
        out[new] = {**spec, "Name": new, "Labels": labels}
    return out, renamed


def _rename_refs(spec: Spec, configs: dict[str, str], secrets: dict[str, str]) -> None:
    container = spec["TaskTemplate"]["ContainerSpec"]
    for ref in container.get("Configs") or []:
        ref["ConfigName"] = configs.get(ref["ConfigName"], ref["ConfigName"])
    for ref in container.get("Secrets") or []:
        ref["SecretName"] = secrets.get(ref["SecretName"], ref["SecretName"])
    cred = (container.get("Privileges") or {}).get("CredentialSpec") or {}
    if cred.get("Config") in configs:
        cred["Config"] = configs[cred["Config"]]


def _take_ports(spec: Spec, full: str, short: str, protocol: str) -> list[EntryPort]:
    """Remove a service's published TCP ports from its spec and describe them as entries."""
    endpoint = spec.get("EndpointSpec") or {}
    ports = endpoint.get("Ports") or []
    owned, kept = [], []
    for port in ports:
        if port.get("Protocol", "tcp") != "tcp" or not port.get("PublishedPort"):
            kept.append(port)  # the LB proxies TCP only; UDP/SCTP stay on the service
            continue
        owned.append(EntryPort(
            service=full, short=short, published=int(port["PublishedPort"]),
            target=int(port["TargetPort"]), mode=port.get("PublishMode", "ingress"),
            protocol=protocol,
        ))
    if owned:
        if kept:
            endpoint["Ports"] = kept
        else:
            endpoint.pop("Ports", None)
        if endpoint:
            spec["EndpointSpec"] = endpoint
        else:
            spec.pop("EndpointSpec", None)
    return owned


def lb_env(table: dict[str, Any], admin_port: int) -> list[str]:
    """The environment the LB image reads its start-up table and admin port from (the token
    comes from its secret file)."""
    return [
        f"DANS_LB_ADMIN_PORT={admin_port}",
        f"DANS_LB_CONFIG={json.dumps(table, sort_keys=True)}",
        f"DANS_LB_TOKEN_FILE=/run/secrets/{TOKEN_FILE}",
        # Where a starting replica finds its peers' table (lb._admin_sync); Swarm fills it in.
        "DANS_LB_PEERS=tasks.{{.Service.Name}}",
    ]


def lb_service_spec(stack: str, entries: tuple[EntryPort, ...], settings: LBSettings) -> Spec:
    """The edge LB's ServiceSpec: on the edge network only, owning the entries' ports.

    The admin port is not published: a published port would be open on every node's
    addresses (ingress) past the host firewall, in plaintext; dans reaches the admin API over
    the edge network instead (`admin_channel`).
    """
    table = routing_table(entries)
    ports = [
        {"Protocol": "tcp", "TargetPort": e.published, "PublishedPort": e.published,
         "PublishMode": e.mode}
        for e in entries
    ]
    endpoint: Spec = {"Mode": "vip"}
    if ports:
        endpoint["Ports"] = ports
    placement: Spec = {}
    if settings.replicas is not None and any(e.mode == "host" for e in entries):
        # A host-mode port is bound on the node itself: a second replica there could never
        # start, so Swarm would keep it pending and every route step would wait for it.
        placement["MaxReplicas"] = 1
    return {
        "Name": lb_service_name(stack),
        "Labels": {
            STACK_LABEL: stack,
            ROLE_LABEL: "lb",
            ADMIN_PORT_LABEL: str(settings.admin_port),
            **({MESH_LABEL: "all"} if settings.mesh else {}),
        },
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": settings.image,
                "Env": lb_env(table.to_dict(), settings.admin_port),
                "Labels": {STACK_LABEL: stack},
                "Secrets": [{"SecretName": settings.token_secret,
                             "File": {"Name": TOKEN_FILE, "UID": "0", "GID": "0",
                                      "Mode": 0o400}}],
                "StopGracePeriod": 30_000_000_000,
            },
            "Networks": [{"Target": edge_network_name(stack)}],
            "RestartPolicy": {"Condition": "any", "MaxAttempts": 0},
            **({"Placement": placement} if placement else {}),
        },
        "Mode": ({"Global": {}} if settings.replicas is None
                 else {"Replicated": {"Replicas": settings.replicas}}),
        "UpdateConfig": {"Parallelism": 1, "Order": "stop-first", "FailureAction": "pause"},
        "EndpointSpec": endpoint,
    }
