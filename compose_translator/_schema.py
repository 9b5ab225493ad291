"""The Compose schema dans accepts: file format 3.x plus the Compose Specification forms that
map onto Swarm (top-level `name`, long `depends_on`, string ports, numeric `cpus`).

Scalars that interpolation may turn into strings (`replicas: ${N}`) accept strings here; the
normaliser converts them and reports a value that is not a number. Keys Swarm cannot honour
are accepted and warned about later; keys the CLI forbids are reported as errors.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from compose_translator._values import shown

__all__ = ["FORBIDDEN", "IGNORED_SERVICE_KEYS", "forbidden", "validate"]

FORBIDDEN = {
    "extends": "'extends' is not supported by docker stack deploy",
    "volume_driver": "use the 'driver' key of the top-level 'volumes' entry instead",
    "volumes_from": "share a volume through the top-level 'volumes' key instead",
    "cpu_quota": "set resource limits with deploy.resources",
    "cpu_shares": "set resource limits with deploy.resources",
    "cpuset": "set resource limits with deploy.resources",
    "mem_limit": "set resource limits with deploy.resources",
    "memswap_limit": "set resource limits with deploy.resources",
}

# Service keys that are valid Compose but that Swarm services cannot honour.
IGNORED_SERVICE_KEYS = (
    "build", "cgroup_parent", "cgroupns_mode", "container_name", "depends_on", "devices",
    "domainname", "expose", "external_links", "group_add", "ipc", "links", "mac_address",
    "mem_reservation", "mem_swappiness", "network_mode", "oom_kill_disable", "pid", "platform",
    "privileged", "profiles", "pull_policy", "runtime", "scale", "security_opt", "shm_size",
    "storage_opt", "tmpfs", "userns_mode", "cpus", "cpu_count", "cpu_percent", "cpu_period",
    "cpu_rt_runtime", "cpu_rt_period", "pids_limit", "blkio_config", "device_cgroup_rules",
)

_STR = {"type": "string"}
_INT = {"type": ["integer", "string"]}
_NUM = {"type": ["number", "string"]}
_BOOL = {"type": ["boolean", "string"]}
_STR_OR_NUM = {"type": ["string", "number"]}
_LIST_STR = {"type": "array", "items": {"type": ["string", "number"]}}
_STR_OR_LIST = {"type": ["string", "array"], "items": {"type": ["string", "number"]}}
_SCALAR_OR_NULL = {"type": ["string", "number", "boolean", "null"]}
_MAP_OR_LIST = {
    "oneOf": [
        {"type": "object", "additionalProperties": _SCALAR_OR_NULL},
        {"type": "array", "items": {"type": "string"}},
    ]
}
_STR_MAP = {"type": "object", "additionalProperties": _STR_OR_NUM}
_EXT: dict[str, Any] = {"^x-": {}}


def _obj(props: dict[str, Any], required: list[str] | None = None, ext: bool = True,
         null: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": ["object", "null"] if null else "object",
        "properties": props,
        "additionalProperties": False,
    }
    if ext:
        schema["patternProperties"] = _EXT
    if required:
        schema["required"] = required
    return schema


# Enumerations the CLI's schema or the Engine check (the Engine names no file or key).
_UPDATE = _obj({"parallelism": _INT, "delay": _STR_OR_NUM,
                "failure_action": {"enum": ["continue", "pause", "rollback"]},
                "monitor": _STR_OR_NUM, "max_failure_ratio": _NUM,
                "order": {"enum": ["start-first", "stop-first"]}})
_RESOURCE = _obj({"cpus": _STR_OR_NUM, "memory": _STR_OR_NUM, "pids": _INT,
                  "generic_resources": {"type": "array", "items": _obj({
                      "discrete_resource_spec": _obj({"kind": _STR, "value": _INT})})},
                  "devices": {"type": "array"}})
_DEPLOY = _obj({
    "mode": _STR,
    "replicas": _INT,
    "labels": _MAP_OR_LIST,
    "endpoint_mode": _STR,
    "update_config": _UPDATE,
    "rollback_config": _UPDATE,
    "resources": _obj({"limits": _RESOURCE, "reservations": _RESOURCE}),
    "restart_policy": _obj({"condition": {"enum": ["none", "on-failure", "any"]},
                            "delay": _STR_OR_NUM, "max_attempts": _INT,
                            "window": _STR_OR_NUM}),
    "placement": _obj({
        "constraints": _LIST_STR,
        "preferences": {"type": "array", "items": _obj({"spread": _STR})},
        "max_replicas_per_node": _INT,
    }),
}, null=True)
_PORT_LONG = _obj({"mode": _STR, "host_ip": _STR, "target": _INT, "published": _INT,
                   "protocol": _STR, "name": _STR, "app_protocol": _STR})
_VOLUME_LONG = _obj({
    "type": {"enum": ["bind", "volume", "tmpfs", "npipe", "cluster"]},
    "source": _STR, "target": _STR, "read_only": _BOOL, "consistency": _STR,
    "bind": _obj({"propagation": {"enum": ["rprivate", "private", "rshared", "shared",
                                           "rslave", "slave"]},
                  "create_host_path": _BOOL, "selinux": _STR}),
    "volume": _obj({"nocopy": _BOOL, "subpath": _STR}),
    "tmpfs": _obj({"size": _STR_OR_NUM, "mode": _INT}),
}, required=["type"])
_FILE_REF = {"type": "array", "items": {"oneOf": [
    _STR,
    _obj({"source": _STR, "target": _STR, "uid": _STR_OR_NUM, "gid": _STR_OR_NUM,
          "mode": _INT}, required=["source"]),
]}}
_HEALTH = _obj({"disable": _BOOL, "interval": _STR_OR_NUM, "retries": _INT,
                "test": _STR_OR_LIST, "timeout": _STR_OR_NUM, "start_period": _STR_OR_NUM,
                "start_interval": _STR_OR_NUM})
_NET_ATTACH = {"oneOf": [
    {"type": "array", "items": _STR},
    {"type": "object", "additionalProperties": {"oneOf": [
        _obj({"aliases": _LIST_STR, "ipv4_address": _STR, "ipv6_address": _STR,
              "driver_opts": _STR_MAP, "link_local_ips": _LIST_STR, "priority": _INT,
              "mac_address": _STR}),
        {"type": "null"},
    ]}},
]}
_ULIMITS = {"type": "object", "additionalProperties": {"oneOf": [
    _INT, _obj({"soft": _INT, "hard": _INT}, required=["soft", "hard"], ext=False)]}}

_SERVICE_PROPS: dict[str, Any] = {
    "image": _STR,
    "command": _STR_OR_LIST | {"type": ["string", "array", "null"]},
    "entrypoint": _STR_OR_LIST | {"type": ["string", "array", "null"]},
    "environment": _MAP_OR_LIST,
    "env_file": _STR_OR_LIST,
    "labels": _MAP_OR_LIST,
    "ports": {"type": "array", "items": {"oneOf": [{"type": ["string", "number"]}, _PORT_LONG]}},
    "dns": _STR_OR_LIST,
    "dns_search": _STR_OR_LIST,
    "dns_opt": _LIST_STR,
    "extra_hosts": {"oneOf": [_LIST_STR, _STR_MAP]},
    "hostname": _STR,
    "volumes": {"type": "array", "items": {"oneOf": [_STR, _VOLUME_LONG]}},
    "configs": _FILE_REF,
    "secrets": _FILE_REF,
    "deploy": _DEPLOY,
    "healthcheck": _HEALTH,
    "logging": _obj({"driver": _STR, "options": {"type": ["object", "null"],
                                                  "additionalProperties": _SCALAR_OR_NULL}}),
    "stop_grace_period": _STR_OR_NUM,
    "stop_signal": _STR,
    "user": _STR_OR_NUM,
    "working_dir": _STR,
    "tty": _BOOL,
    "stdin_open": _BOOL,
    "read_only": _BOOL,
    "init": _BOOL,
    "cap_add": _LIST_STR,
    "cap_drop": _LIST_STR,
    "sysctls": _MAP_OR_LIST,
    "ulimits": _ULIMITS,
    "oom_score_adj": _INT,
    "isolation": _STR,
    "networks": _NET_ATTACH,
    "credential_spec": _obj({"config": _STR, "file": _STR, "registry": _STR}),
    "depends_on": {"oneOf": [
        _LIST_STR,
        {"type": "object", "additionalProperties": _obj({
            "condition": _STR, "restart": _BOOL, "required": _BOOL})},
    ]},
    "links": _LIST_STR,
    "build": {"type": ["string", "object"]},
    "tmpfs": _STR_OR_LIST,
    "expose": {"type": "array"},
    "external_links": _LIST_STR,
    "devices": {"type": "array"},
    "security_opt": _LIST_STR,
    "profiles": _LIST_STR,
    "restart": _STR,
    "scale": _INT,
}
for _key in IGNORED_SERVICE_KEYS:
    _SERVICE_PROPS.setdefault(_key, {})
for _key in FORBIDDEN:
    _SERVICE_PROPS.setdefault(_key, {})  # reported by the caller with a better message

_EXTERNAL = {"oneOf": [_BOOL, _obj({"name": _STR}, ext=False)]}
SCHEMA: dict[str, Any] = _obj({
    "version": {"type": ["string", "number"]},
    "name": _STR,
    "services": {"type": ["object", "null"], "patternProperties": {
        "^[a-zA-Z0-9._-]+\\Z": _obj(_SERVICE_PROPS, null=True)}, "additionalProperties": False},
    "networks": {"type": ["object", "null"], "additionalProperties": _obj({
        "name": _STR, "driver": _STR, "driver_opts": _STR_MAP, "external": _EXTERNAL,
        "internal": _BOOL, "attachable": _BOOL, "labels": _MAP_OR_LIST, "enable_ipv6": _BOOL,
        "ipam": _obj({"driver": _STR, "config": {"type": "array", "items": _obj({
            "subnet": _STR, "ip_range": _STR, "gateway": _STR,
            "aux_addresses": _STR_MAP})}, "options": _STR_MAP}),
    }, null=True)},
    "volumes": {"type": ["object", "null"], "additionalProperties": _obj({
        "name": _STR, "driver": _STR, "driver_opts": _STR_MAP, "external": _EXTERNAL,
        "labels": _MAP_OR_LIST}, null=True)},
    "secrets": {"type": ["object", "null"], "additionalProperties": _obj({
        "name": _STR, "file": _STR, "external": _EXTERNAL, "labels": _MAP_OR_LIST,
        "driver": _STR, "driver_opts": _STR_MAP, "template_driver": _STR,
        "environment": _STR, "content": _STR})},
    "configs": {"type": ["object", "null"], "additionalProperties": _obj({
        "name": _STR, "file": _STR, "external": _EXTERNAL, "labels": _MAP_OR_LIST,
        "template_driver": _STR, "environment": _STR, "content": _STR})},
})

_VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


_TYPES: dict[str, Any] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "number": lambda x: isinstance(x, int | float) and not isinstance(x, bool),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
}
_PATTERNS: dict[str, re.Pattern[str]] = {}


def _valid(schema: dict[str, Any], data: Any) -> bool:
    # A fast yes/no check for the keywords this schema uses; jsonschema explains failures.
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_TYPES[k](data) for k in kinds):
            return False
    if "enum" in schema and data not in schema["enum"]:
        return False
    if "oneOf" in schema and sum(_valid(sub, data) for sub in schema["oneOf"]) != 1:
        return False
    if isinstance(data, dict):
        props = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        extra = schema.get("additionalProperties", True)
        if any(key not in data for key in schema.get("required", ())):
            return False
        for key, value in data.items():
            if key in props:
                if not _valid(props[key], value):
                    return False
                continue
            matched = False
            for pattern, sub in patterns.items():
                regex = _PATTERNS.get(pattern) or _PATTERNS.setdefault(pattern, re.compile(pattern))
                if regex.search(key):
                    matched = True
                    if not _valid(sub, value):
                        return False
            if not matched and (extra is False or (isinstance(extra, dict)
                                                   and not _valid(extra, value))):
                return False
    elif isinstance(data, list) and "items" in schema:
        return all(_valid(schema["items"], item) for item in data)
    return True


def validate(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Check one file's data; return (path, message) per problem, the deepest problem first."""
    if _valid(SCHEMA, data):
        return []
    found: list[tuple[tuple[str | int, ...], str]] = []
    for error in _VALIDATOR.iter_errors(data):
        found.append(_describe(error))
    return found


_KIND_NAMES = {"object": "a mapping", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "a boolean",
               "null": "nothing (null)"}


def _describe(error: jsonschema.ValidationError) -> tuple[tuple[str | int, ...], str]:
    # A failed oneOf hides the useful message in its context: pick the deepest sub-error.
    best = error
    if error.context:
        best = max(error.context, key=lambda e: len(e.absolute_path))
    path = tuple(best.absolute_path)
    if best.validator == "additionalProperties":
        schema: Any = best.schema
        instance: Any = best.instance
        extra = [k for k in instance if k not in schema.get("properties", {})
                 and not str(k).startswith("x-")]
        if path == ("services",) and extra:
            return ("services", extra[0]), (f"invalid service name {shown(extra[0])}: use letters, "
                                            "digits, '.', '_' and '-' only")
        message = f"unsupported key {', '.join(map(repr, extra))}"
        return ((*path, extra[0]) if extra else path), message
    if best.validator in ("type", "enum"):
        wanted: Any = best.validator_value
        if best.validator == "enum":
            expected = "one of " + ", ".join(map(repr, wanted))
        else:
            kinds = [wanted] if isinstance(wanted, str) else list(wanted)
            expected = " or ".join(_KIND_NAMES.get(k, k) for k in kinds)
        return path, f"{shown(best.instance)} is not valid here: expected {expected}"
    if best.validator == "required":
        return path, best.message
    return path, best.message


def forbidden(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Service keys `docker stack deploy` refuses, with what to use instead."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    services = data.get("services") if isinstance(data, dict) else None
    for name, svc in (services or {}).items() if isinstance(services, dict) else ():
        for key in svc or {} if isinstance(svc, dict) else ():
            if key in FORBIDDEN:
                found.append((("services", name, key), f"{shown(key)} is not allowed: "
                                                       f"{FORBIDDEN[key]}"))
    return found
