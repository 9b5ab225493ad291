"""`translate`: a loaded project -> the specs `docker stack deploy` would send, plus warnings
and the dependency edges the planner needs. Pure: no I/O, no Docker."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from compose_translator._convert_stack import (
    ConvertError,
    convert_networks,
    convert_objects,
    convert_service,
    service_networks,
)
from compose_translator._deps import Dependency, find_dependencies
from compose_translator._errors import ComposeError
from compose_translator._limits import stack_problems
from compose_translator._project import ComposeProject
from compose_translator._report import Problems
from compose_translator._schema import IGNORED_SERVICE_KEYS

__all__ = ["StackSpecs", "ignored_keys", "translate"]

_STACK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")


@dataclass(frozen=True)
class StackSpecs:
    """Everything `docker stack deploy` would create for one stack, as Engine API bodies.

    Service specs name their secrets and configs (`SecretName`/`ConfigName`, and a
    credential-spec `Config` by name); the deployer adds the engine IDs.
    """

    stack: str
    services: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]]
    external_networks: list[str]
    configs: dict[str, dict[str, Any]]
    secrets: dict[str, dict[str, Any]]
    short_names: dict[str, str]
    extensions: dict[str, dict[str, Any]]
    dependencies: list[Dependency]
    warnings: list[str] = field(default_factory=list)


def ignored_keys(project: ComposeProject) -> list[str]:
    """Keys in the project that Swarm cannot honour, as dotted paths, file order."""
    found: list[str] = []
    for name, svc in project.services.items():
        base = f"services.{name}"
        found += [f"{base}.{k}" for k in svc if k in IGNORED_SERVICE_KEYS]
        for net, cfg in (svc.get("networks") or {}).items():
            found += [f"{base}.networks.{net}.{k}" for k in (cfg or {})
                      if k in ("ipv4_address", "ipv6_address", "link_local_ips", "priority",
                               "mac_address")]
        for i, vol in enumerate(svc.get("volumes") or []):
            if vol.get("_selinux"):
                found.append(f"{base}.volumes[{i}] option {vol['_selinux']}")
            found += [f"{base}.volumes[{i}].bind.{k}" for k in (vol.get("bind") or {})
                      if k in ("create_host_path", "selinux")]
            if (vol.get("tmpfs") or {}).get("mode") is not None:
                found.append(f"{base}.volumes[{i}].tmpfs.mode")
        for i, port in enumerate(svc.get("ports") or []):
            if port.get("_host_ip"):
                found.append(f"{base}.ports[{i}].host_ip")
        if svc.get("dns_opt"):
            found.append(f"{base}.dns_opt")
        reservations = ((svc.get("deploy") or {}).get("resources") or {}).get("reservations")
        if (reservations or {}).get("devices"):
            found.append(f"{base}.deploy.resources.reservations.devices")
    for name, net in project.networks.items():
        found += [f"networks.{name}.{k}" for k in ("enable_ipv6",) if k in net]
        ipam = net.get("ipam") or {}
        found += [f"networks.{name}.ipam.options"] if ipam.get("options") else []
        for i, cfg in enumerate(ipam.get("config") or []):
            found += [f"networks.{name}.ipam.config[{i}].{k}" for k in cfg if k != "subnet"]
    return found


def translate(project: ComposeProject, stack: str) -> StackSpecs:
    """Convert a loaded project into the specs `docker stack deploy` creates for `stack`:
    services named `STACK_svc`, the networks services use (`STACK_default` when a service
    names none), configs and secrets, all carrying the stack label. Pure; raises
    ComposeError naming file, line, service and key for values that cannot be converted.
    """
    if not stack or not _STACK_NAME.match(stack):
        raise ComposeError(f"invalid stack name {stack!r}: use letters, digits, '_', '.', '-'")
    rep = Problems(sources=project.sources)
    model = {"networks": project.networks, "volumes": project.volumes,
             "configs": project.configs, "secrets": project.secrets}
    services: dict[str, dict[str, Any]] = {}
    short: dict[str, str] = {}
    for name, svc in project.services.items():
        try:
            spec = convert_service(stack, name, svc, model)
        except ConvertError as exc:
            rep.error(("services", name, *exc.key), str(exc))
            continue
        services[spec["Name"]] = spec
        short[spec["Name"]] = name
    networks, external = convert_networks(stack, project.networks,
                                          service_networks(project.services))
    for path, message in stack_problems(stack, project):
        rep.error(path, message)
    rep.raise_if_any()
    warnings = list(project.warnings)
    ignored = ignored_keys(project)
    if ignored:
        warnings.append("Ignoring keys that Swarm services cannot honour: " + ", ".join(ignored))
    return StackSpecs(
        stack=stack,
        services=services,
        networks=networks,
        external_networks=external,
        configs=convert_objects(stack, project.configs),
        secrets=convert_objects(stack, project.secrets),
        short_names=short,
        extensions={n: dict(project.service_extensions.get(n, {})) for n in project.services},
        dependencies=find_dependencies(project.services, project.service_extensions),
        warnings=warnings,
    )
