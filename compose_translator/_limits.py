"""The Engine's rules for what a stack creates, checked before anything is sent.

`docker stack deploy` leaves these to the Engine, which refuses mid-deploy with a message
that names no file or key; the same rules here fail first and say where. Service and network
names must be DNS name components (at most 63 characters); config and secret names at most
64 of `[a-zA-Z0-9-_.]`, starting and ending alphanumeric; secret data less than 512,000
bytes, config data less than 1,024,000, neither empty (the limits of Engine 20.10 and later).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Problem", "stack_problems"]

Problem = tuple[tuple[str | int, ...], str]

_DNS_NAME = re.compile(r"[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*")
_OBJECT_NAME = re.compile(r"[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?")
_DATA_LIMIT = {"configs": 1_024_000, "secrets": 512_000}


def _dns_name(kind: str, name: str) -> str | None:
    if len(name) > 63:
        return f"the {kind} name {name!r} is {len(name)} characters; the Engine allows 63"
    if not _DNS_NAME.fullmatch(name):
        return (f"the {kind} name {name!r} is not a valid DNS name component (letters, digits, "
                "'-' and '_' between them; no dots or other characters)")
    return None


def stack_problems(stack: str, project: Any) -> Iterator[Problem]:
    """Every name and data size in `project` (deployed as `stack`) the Engine would refuse."""
    for key in project.services:
        problem = _dns_name("service", f"{stack}_{key}")
        if problem:
            yield ("services", key), problem
    for key, net in project.networks.items():
        if not net.get("external"):
            problem = _dns_name("network", net.get("name") or f"{stack}_{key}")
            if problem:
                yield ("networks", key), problem
    for kind in ("configs", "secrets"):
        objects: Mapping[str, Mapping[str, Any]] = getattr(project, kind)
        for key, obj in objects.items():
            if obj.get("external"):
                continue
            name = obj.get("name") or f"{stack}_{key}"
            if len(name) > 64 or not _OBJECT_NAME.fullmatch(name):
                yield (kind, key), (f"the {kind[:-1]} name {name!r} is not allowed: at most 64 "
                                    "of [a-zA-Z0-9-_.], starting and ending with a letter or "
                                    "digit")
            data = obj.get("data")
            if data is not None and not obj.get("driver") and \
                    not 0 < len(data) < _DATA_LIMIT[kind]:
                yield (kind, key), (f"the {kind[:-1]} data is {len(data)} bytes; the Engine "
                                    f"needs more than 0 and less than {_DATA_LIMIT[kind]:,}")
