"""Comparing a running service spec with a desired one, ignoring what the engine fills in.

The engine hands back a spec that differs from the one sent in ways that mean nothing: network
targets become IDs, images may be pinned to a digest, empty sections appear or vanish, some
defaults are written in. `normalize` removes exactly those differences, so that `diff_specs`
reports only what the user's Compose file changed. Pure functions, no Docker calls.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from upgrade_manager.model import Spec

__all__ = ["TASK_FIELDS", "FieldDiff", "diff_specs", "normalize", "replaces_tasks"]


# Fields whose change makes Swarm replace a service's tasks (swarmkit compares the task spec
# and the endpoint spec); anything else (replicas, update config, labels) changes in place.
TASK_FIELDS = ("TaskTemplate", "EndpointSpec")

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")

# Values the engine writes in when the client left them out.
_ENGINE_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("TaskTemplate", "ContainerSpec", "Isolation"): "default",
    ("TaskTemplate", "ForceUpdate"): 0,
    ("TaskTemplate", "Runtime"): "container",
    ("EndpointSpec", "Mode"): "vip",
    ("UpdateConfig", "MaxFailureRatio"): 0,
    ("UpdateConfig", "FailureAction"): "pause",
    ("RollbackConfig", "MaxFailureRatio"): 0,
    ("RollbackConfig", "FailureAction"): "pause",
}


@dataclass(frozen=True)
class FieldDiff:
    """One changed leaf: a dotted path with the running and the desired value."""

    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.path}: {_short(self.old)} -> {_short(self.new)}"


def _short(value: Any, limit: int = 60) -> str:
    text = "(none)" if value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _prune(value: Any) -> Any:
    """Drop empty containers, None and empty strings, recursively."""
    if isinstance(value, Mapping):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def normalize(spec: Mapping[str, Any], network_names: Mapping[str, str] | None = None) -> Spec:
    """A canonical form of a ServiceSpec for comparison.

    `network_names` maps network IDs to names, so a running spec (targets are IDs) and a
    desired spec (targets are names) compare equal. Networks are sorted by target; image
    digests dropped; engine defaults removed; empty values pruned.
    """
    names = network_names or {}
    out: Spec = copy.deepcopy(dict(spec))
    for path, default in _ENGINE_DEFAULTS.items():
        _drop_if(out, path, default)
    out = _prune(out)
    task = out.get("TaskTemplate", {})
    container = task.get("ContainerSpec", {})
    if "Image" in container:
        container["Image"] = _DIGEST.sub("", container["Image"])
    # Secrets and configs are referenced by name; their IDs are filled in at deploy time.
    for key, id_key in (("Secrets", "SecretID"), ("Configs", "ConfigID")):
        for ref in container.get(key) or []:
            ref.pop(id_key, None)
    cred = (container.get("Privileges") or {}).get("CredentialSpec") or {}
    cred.pop("Config", None)
    networks = task.get("Networks") or out.pop("Networks", None)
    if networks:
        fixed = []
        for net in networks:
            net = dict(net)
            net["Target"] = names.get(net["Target"], net["Target"])
            if "Aliases" in net:
                net["Aliases"] = sorted(net["Aliases"])
            fixed.append(net)
        task["Networks"] = sorted(fixed, key=lambda n: n["Target"])
    return out


def _drop_if(spec: Spec, path: tuple[str, ...], default: Any) -> None:
    node: Any = spec
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict) and node.get(path[-1]) == default:
        del node[path[-1]]


def diff_specs(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldDiff]:
    """Leaf-level differences between two normalized specs, in a stable order."""
    out: list[FieldDiff] = []
    _walk(old, new, "", out)
    return out


def _walk(old: Any, new: Any, path: str, out: list[FieldDiff]) -> None:
    if old is None and isinstance(new, Mapping):
        old = {}
    if new is None and isinstance(old, Mapping):
        new = {}
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new)):
            _walk(old.get(key), new.get(key), f"{path}.{key}" if path else key, out)
        return
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and len(old) == len(new)
        and any(isinstance(x, Mapping) for x in old + new)
    ):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _walk(a, b, f"{path}[{i}]", out)
        return
    if old != new:
        out.append(FieldDiff(path, old, new))


def replaces_tasks(diffs: list[FieldDiff]) -> bool:
    """True when applying these differences makes Swarm replace the service's tasks."""
    return any(d.path.split(".")[0].split("[")[0] in TASK_FIELDS for d in diffs)
