"""Service dependencies for the planner: declared (`depends_on`, `links`, `x-dans.calls`) and
inferred from environment values that name another service as a host.

These are the edges dans can read; the planner treats them as hints that order start-up and
adds the calls it cannot see (`upgrade_manager.callgraph`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Dependency", "find_dependencies", "hosts_in"]


@dataclass(frozen=True)
class Dependency:
    """`source` needs `target` (short service names); `kind` says how we know."""

    source: str
    target: str
    kind: str  # "depends_on" | "links" | "x-dans" | "environment"
    declared: bool


_SPLIT = re.compile(r"[\s,;]+")
_HOST = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^@/]*@)?([A-Za-z0-9_.-]+)(?::\d+)?(?:[/?#].*)?$")


def hosts_in(value: str) -> list[str]:
    """Host names in an environment value: `http://api:5000/x`, `db:5432`, `u:p@db`, `db`."""
    found = []
    tokens = [t for t in _SPLIT.split(value.strip()) if t]
    for token in tokens:
        match = _HOST.match(token)
        # A bare word is a host only when it is the whole value (`DB_HOST=db`), not prose.
        if match and (len(tokens) == 1 or token != match.group(1)):
            found.append(match.group(1))
    return found


def find_dependencies(services: Mapping[str, Mapping[str, Any]],
                      extensions: Mapping[str, Mapping[str, Any]]) -> list[Dependency]:
    """Every edge between services of the project, declared ones before inferred ones."""
    names = set(services)
    edges: dict[tuple[str, str, str], Dependency] = {}

    def add(source: str, target: str, kind: str, declared: bool) -> None:
        if target in names and target != source:
            edges.setdefault((source, target, kind), Dependency(source, target, kind, declared))

    for name, svc in services.items():
        for target in svc.get("depends_on") or {}:
            add(name, str(target), "depends_on", True)
        for link in svc.get("links") or []:
            add(name, str(link).split(":", 1)[0], "links", True)
        for target in extensions.get(name, {}).get("calls", []):
            add(name, str(target), "x-dans", True)
    for name, svc in services.items():
        for value in (svc.get("environment") or {}).values():
            for host in hosts_in(value or ""):
                add(name, host, "environment", False)
    return sorted(edges.values(), key=lambda d: (not d.declared, d.source, d.target, d.kind))
