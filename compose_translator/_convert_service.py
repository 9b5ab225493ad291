"""Service conversion: one small pure function per ServiceSpec section, as the CLI has them.

Each takes canonical Compose values and returns the Engine API JSON the docker CLI would send
(Go field names, `omitempty` fields left out). Errors are ConvertError with the key they are
about, so the caller can name file, line and service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from compose_translator._values import shown

__all__ = [
    "IMAGE_LABEL",
    "STACK_LABEL",
    "ConvertError",
    "scope",
    "stack_labels",
    "tagged_image",
]

STACK_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"
Spec = dict[str, Any]


class ConvertError(ValueError):
    """A value that cannot be converted; `key` is its path below the service."""

    def __init__(self, key: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.key = key


def scope(stack: str, name: str) -> str:
    """The stack-scoped name of an object: `STACK_name`."""
    return f"{stack}_{name}"


def stack_labels(stack: str, labels: Mapping[str, str | None] | None) -> dict[str, str]:
    """User labels plus the stack namespace label (which always wins)."""
    result = {k: v or "" for k, v in (labels or {}).items()}
    result[STACK_LABEL] = stack
    return result


_DOMAIN = re.compile(r"^(?:localhost|[^/]*[.:][^/]*)\Z")


def tagged_image(ref: str) -> str:
    """The image as the docker client sends it: familiar name, `:latest` when untagged."""
    if not ref or ref != ref.strip() or any(c.isupper() for c in ref.split("@")[0].split("/")[-1]
                                            .split(":")[0]):
        return ref
    name, at, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if slash and _DOMAIN.match(first):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain == "index.docker.io":
        domain = "docker.io"
    last = path.rsplit("/", 1)[-1]
    tag = ""
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    if domain == "docker.io":
        if path.startswith("library/") and path.count("/") == 1:
            path = path[len("library/"):]
        familiar = path
    else:
        familiar = f"{domain}/{path}"
    if tag:
        familiar += f":{tag}"
    if at:
        return f"{familiar}@{digest}"
    return familiar if tag else f"{familiar}:latest"


def convert_deploy_mode(mode: str | None, replicas: int | None) -> Spec:
    """deploy.mode and deploy.replicas -> ServiceSpec.Mode (jobs included)."""
    mode = mode or "replicated"
    if mode in ("global", "global-job") and replicas is not None:
        raise ConvertError(("deploy", "replicas"),
                           "replicas can only be used with replicated or replicated-job mode")
    if mode == "global":
        return {"Global": {}}
    if mode == "global-job":
        return {"GlobalJob": {}}
    if mode == "replicated-job":
        job: Spec = {}
        if replicas is not None:
            job = {"MaxConcurrent": replicas, "TotalCompletions": replicas}
        return {"ReplicatedJob": job}
    if mode == "replicated":
        return {"Replicated": {} if replicas is None else {"Replicas": replicas}}
    raise ConvertError(("deploy", "mode"), f"unknown mode: {mode}")


def _set_fields(section: Mapping[str, Any], **names: str) -> Spec:
    """{Engine name: value} for each Compose key (keyword: Engine name) that is set and not
    empty or zero, in the order given: the CLI leaves such fields out of the spec."""
    return {engine: section[key] for key, engine in names.items() if section.get(key)}


def convert_update_config(cfg: Mapping[str, Any] | None) -> Spec | None:
    """deploy.update_config / rollback_config -> UpdateConfig (parallelism defaults to 1)."""
    if cfg is None:
        return None
    out: Spec = {"Parallelism": cfg["parallelism"] if cfg.get("parallelism") is not None else 1}
    out.update(_set_fields(cfg, delay="Delay", failure_action="FailureAction",
                           monitor="Monitor"))
    out["MaxFailureRatio"] = cfg.get("max_failure_ratio") or 0
    out["Order"] = cfg.get("order") or ""
    return out


_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure)(?::(-?[0-9]{1,19}))?\Z")


def convert_restart_policy(restart: str | None, policy: Mapping[str, Any] | None) -> Spec | None:
    """deploy.restart_policy, else the legacy `restart` key -> TaskTemplate.RestartPolicy."""
    if policy is not None:
        out: Spec = {}
        if policy.get("condition"):
            out["Condition"] = policy["condition"]
        if policy.get("delay") is not None:
            out["Delay"] = policy["delay"]
        if policy.get("max_attempts") is not None:
            out["MaxAttempts"] = policy["max_attempts"]
        if policy.get("window") is not None:
            out["Window"] = policy["window"]
        return out
    if not restart:
        return None
    match = _RESTART.match(restart)
    if not match:
        raise ConvertError(("restart",), f"invalid restart policy: unknown policy {shown(restart)}")
    name, count = match.group(1), int(match.group(2) or 0)
    if count < 0:
        raise ConvertError(("restart",), "invalid restart policy: maximum retry count cannot "
                                         "be negative")
    if name == "no":
        return None
    out = {"Condition": "any" if name in ("always", "unless-stopped") else "on-failure"}
    if count > 0:
        out["MaxAttempts"] = count
    return out


def convert_resources(res: Mapping[str, Any] | None) -> Spec:
    """deploy.resources -> TaskTemplate.Resources (always present, possibly empty)."""
    out: Spec = {}
    res = res or {}
    if res.get("limits") is not None:
        lim = res["limits"]
        out["Limits"] = {k: lim[s] for k, s in (("NanoCPUs", "cpus"), ("MemoryBytes", "memory"),
                                                  ("Pids", "pids")) if lim.get(s)}
    if res.get("reservations") is not None:
        rsv = res["reservations"]
        out["Reservations"] = {k: rsv[s] for k, s in (("NanoCPUs", "cpus"),
                                                        ("MemoryBytes", "memory")) if rsv.get(s)}
        generic = []
        for item in rsv.get("generic_resources") or []:
            spec = item.get("discrete_resource_spec")
            generic.append({"DiscreteResourceSpec": {"Kind": spec.get("kind", ""),
                                                     "Value": int(spec.get("value") or 0)}}
                           if spec else {})
        if generic:
            out["Reservations"]["GenericResources"] = generic
    return out


def convert_placement(placement: Mapping[str, Any] | None) -> Spec:
    """deploy.placement -> TaskTemplate.Placement (always present, possibly empty)."""
    placement = placement or {}
    out: Spec = {}
    if placement.get("constraints"):
        out["Constraints"] = [str(c) for c in placement["constraints"]]
    if placement.get("preferences"):
        out["Preferences"] = [{"Spread": {"SpreadDescriptor": p.get("spread", "")}}
                              for p in placement["preferences"]]
    if placement.get("max_replicas_per_node"):
        out["MaxReplicas"] = placement["max_replicas_per_node"]
    return out


def convert_endpoint(mode: str | None, ports: list[Mapping[str, Any]] | None) -> Spec:
    """deploy.endpoint_mode and ports -> EndpointSpec, ports sorted by published port."""
    converted = []
    for port in ports or []:
        converted.append(_set_fields(port, protocol="Protocol", target="TargetPort",
                                     published="PublishedPort", mode="PublishMode"))
    converted.sort(key=lambda p: p.get("PublishedPort", 0))
    out: Spec = {}
    if mode:
        if mode.lower() not in ("vip", "dnsrr"):  # the CLI lowercases; the Engine refuses
            raise ConvertError(("deploy", "endpoint_mode"),
                               f"invalid endpoint mode {shown(mode)}: use vip or dnsrr")
        out["Mode"] = mode.lower()
    if converted:
        out["Ports"] = converted
    return out


def convert_healthcheck(hc: Mapping[str, Any] | None) -> Spec | None:
    """healthcheck -> ContainerSpec.Healthcheck (durations in ns; disable -> NONE)."""
    if hc is None:
        return None
    if hc.get("disable"):
        if hc.get("test"):
            raise ConvertError(("healthcheck",), "test and disable can't be set at the same time")
        return {"Test": ["NONE"]}
    out: Spec = {}
    if hc.get("test"):
        out["Test"] = list(hc["test"])
    for key, src in (("Interval", "interval"), ("Timeout", "timeout"),
                     ("StartPeriod", "start_period"), ("StartInterval", "start_interval"),
                     ("Retries", "retries")):
        if hc.get(src):
            out[key] = hc[src]
    return out


def convert_environment(env: Mapping[str, str | None] | None) -> list[str]:
    """environment -> sorted `KEY=VALUE` list (a key without value stays bare)."""
    return sorted(k if val is None else f"{k}={val}" for k, val in (env or {}).items())


def convert_extra_hosts(hosts: list[str] | None) -> list[str]:
    """extra_hosts `host:ip` -> swarmkit `ip host`, order kept."""
    out = []
    for entry in hosts or []:
        host, sep, ip = entry.partition(":")
        if sep:
            out.append(f"{ip} {host}")
    return out


def convert_dns(dns: list[str] | None, search: list[str] | None) -> Spec | None:
    """dns and dns_search -> ContainerSpec.DNSConfig."""
    if not dns and not search:
        return None
    out: Spec = {}
    if dns:
        out["Nameservers"] = list(dns)
    if search:
        out["Search"] = list(search)
    return out


def convert_ulimits(ulimits: Mapping[str, Mapping[str, int]] | None) -> list[Spec]:
    """ulimits -> ContainerSpec.Ulimits sorted by name."""
    return [{"Name": name, "Hard": u["hard"], "Soft": u["soft"]}
            for name, u in sorted((ulimits or {}).items())]


def _normalize_cap(cap: str) -> str:
    cap = cap.strip().upper()
    if cap in ("ALL", "RESET") or cap.startswith("CAP_"):
        return cap
    return "CAP_" + cap


def convert_capabilities(add: list[str] | None, drop: list[str] | None
                         ) -> tuple[list[str], list[str]]:
    """cap_add/cap_drop -> CapabilityAdd/CapabilityDrop: `CAP_` names, ALL wins, sorted."""
    adds = {_normalize_cap(c) for c in add or []}
    drops = {_normalize_cap(c) for c in drop or []}
    if "ALL" in adds:
        adds = {"ALL"}
    if "ALL" in drops:
        drops = {"ALL"}
    return sorted(adds), sorted(c for c in drops if c not in adds)


def convert_logging(logging: Mapping[str, Any] | None) -> Spec | None:
    """logging -> TaskTemplate.LogDriver."""
    if logging is None:
        return None
    out: Spec = {}
    if logging.get("driver"):
        out["Name"] = logging["driver"]
    if logging.get("options"):
        out["Options"] = dict(logging["options"])
    return out
