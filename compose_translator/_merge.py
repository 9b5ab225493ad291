"""Merging canonical files left to right with the docker CLI's override rules.

Maps merge by key (later files win); ports are keyed by published port, volumes by target,
secrets and configs by source; `command` and `entrypoint` are replaced; other lists append.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["merge_files"]

_REPLACED = {"command", "entrypoint", "image", "healthcheck.test", "logging.driver"}


def _port_key(port: dict[str, Any]) -> Any:
    if port.get("published") is not None:
        return ("published", port["published"], port.get("protocol") or "tcp")
    return ("target", port.get("target"), port.get("protocol") or "tcp")


_KEYED_LISTS = {
    "ports": _port_key,
    "volumes": lambda vol: vol.get("target"),
    "secrets": lambda ref: ref.get("source"),
    "configs": lambda ref: ref.get("source"),
}


def _merge_keyed(base: list[Any], over: list[Any], key: Any) -> list[Any]:
    merged = {key(item): item for item in base}
    for item in over:
        merged[key(item)] = item
    return list(merged.values())


def _merge_value(base: Any, over: Any, path: str) -> Any:
    if path in _REPLACED or over is None:
        return copy.deepcopy(over) if over is not None else base
    if isinstance(base, dict) and isinstance(over, dict):
        result = dict(base)
        for key, value in over.items():
            sub = f"{path}.{key}" if path else key
            result[key] = _merge_value(base[key], value, sub) if key in base \
                else copy.deepcopy(value)
        return result
    if isinstance(base, list) and isinstance(over, list):
        if path in _KEYED_LISTS:
            return _merge_keyed(base, over, _KEYED_LISTS[path])
        return base + [x for x in over if x not in base]
    return copy.deepcopy(over)


def _merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in over.items():
        if key == "logging" and isinstance(value, dict) and isinstance(base.get(key), dict) \
                and value.get("driver") not in (None, base[key].get("driver")):
            result[key] = copy.deepcopy(value)  # another driver: its options do not carry over
        elif key in base and key != "_path":
            result[key] = _merge_value(base[key], value, key)
        else:
            result[key] = value
    return result


def merge_files(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge canonical file dicts; the first file is the base, each later one overrides."""
    if len(files) == 1:
        return files[0]
    result = copy.deepcopy(files[0])
    for over in files[1:]:
        for key, value in over.items():
            if key == "services":
                services = result.setdefault("services", {})
                for name, svc in value.items():
                    services[name] = _merge_service(services[name], svc) \
                        if name in services else svc
            elif key in ("networks", "volumes", "configs", "secrets"):
                section = result.setdefault(key, {})
                for name, obj in value.items():
                    section[name] = _merge_value(section.get(name), obj, "") \
                        if section.get(name) else obj
            else:
                result[key] = _merge_value(result.get(key), value, "")
    return result
