"""Loading: read, interpolate, validate, normalise and merge Compose files into a project."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compose_translator._errors import ComposeError
from compose_translator._files import MAX_COMPOSE_BYTES, decode_text, read_text
from compose_translator._interpolate import interpolate, read_dotenv
from compose_translator._merge import merge_files
from compose_translator._normalize import normalize_file
from compose_translator._report import Problems, Source
from compose_translator._schema import forbidden, validate
from compose_translator._values import shown
from compose_translator._yaml import parse_yaml

__all__ = ["ComposeProject", "load_project"]

_SECTIONS = ("services", "networks", "volumes", "configs", "secrets", "name")
_X_DANS_KEYS = {"compatible": bool, "calls": list, "ports": list,
                "protocol": str, "mesh": bool, "trace_header": str}
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


@dataclass
class ComposeProject:
    """Merged, interpolated, validated Compose files in canonical form (see `_normalize`)."""

    files: list[str]
    working_dir: str
    name: str | None
    services: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]]
    volumes: dict[str, dict[str, Any]]
    configs: dict[str, dict[str, Any]]
    secrets: dict[str, dict[str, Any]]
    extensions: dict[str, Any]  # top-level `x-*` fields
    service_extensions: dict[str, dict[str, Any]]  # service -> its `x-dans` mapping
    warnings: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)


def _read(name: str, stdin_text: str | bytes | None) -> str:
    if name == "-":
        if stdin_text is None:
            raise ComposeError("'-' given as a file but no standard input text was provided")
        if isinstance(stdin_text, str):
            return stdin_text
        data = stdin_text
        if len(data) > MAX_COMPOSE_BYTES:
            raise ComposeError("cannot read the Compose file from standard input: more than "
                               f"the limit of {MAX_COMPOSE_BYTES} bytes")
        try:
            return decode_text(data, utf16=True)
        except ValueError as exc:
            raise ComposeError(f"cannot read the Compose file from standard input: {exc}"
                               ) from None
    try:
        return read_text(name, utf16=True)
    except ValueError as exc:
        raise ComposeError(f"cannot read the Compose file {name}: {exc}") from None


def _check_version(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    # Like the CLI: format 1 and 2 files describe containers, not Swarm services.
    version = str(data.get("version", "3")).strip()
    if version.split(".")[0] in ("1", "2"):
        return [(("version",), f"Compose file format {version} is not supported by "
                               "docker stack deploy; use 3.x or leave 'version' out")]
    return []


def _nul_strings(data: Any, path: tuple[str | int, ...] = ()
                 ) -> list[tuple[tuple[str | int, ...], str]]:
    # A NUL cannot be in a process argument or environment variable (exec refuses it), so
    # the task would fail on every node; dans refuses it everywhere, labels included.
    if isinstance(data, str):
        return [(path, "contains a NUL character")] if "\0" in data else []
    items: Any = data.items() if isinstance(data, dict) else \
        enumerate(data) if isinstance(data, list) else ()
    found: list[tuple[tuple[str | int, ...], str]] = []
    for key, value in items:
        if isinstance(key, str) and "\0" in key:
            found.append(((*path, key), "the key contains a NUL character"))
        found += _nul_strings(value, (*path, key))
    return found


def _is_a(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))


def _check_x_dans(rep: Problems, services: dict[str, dict[str, Any]]
                  ) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name, svc in services.items():
        ext: Any = svc.get("x-dans")
        path = ("services", name, "x-dans")
        if ext is None:
            result[name] = {}
            continue
        if not isinstance(ext, dict):
            rep.error(path, "x-dans must be a mapping")
            continue
        for key, item in ext.items():
            value: Any = item
            want = _X_DANS_KEYS.get(key)
            if key == "entry":  # once planned, never used: entry services publish ports
                rep.warnings.append(f"services.{name}.x-dans.entry has no effect (the services "
                                    "that publish ports are the entries); remove it")
            elif want is None:
                rep.error((*path, key), f"unknown x-dans key {shown(key)} "
                                        f"(known: {', '.join(sorted(_X_DANS_KEYS))})")
            elif not _is_a(value, want):
                rep.error((*path, key), f"x-dans.{key} must be a {want.__name__}")
            elif key == "calls":
                for i, target in enumerate(value):
                    if not isinstance(target, str) or target not in services:
                        rep.error((*path, key, i), f"x-dans.calls names {shown(target)}, "
                                                   "which is not a service of this project")
            elif key == "ports" and not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in value
            ):
                rep.error((*path, key), "x-dans.ports must list port numbers (1-65535)")
            elif key == "protocol" and value not in ("http", "tcp"):
                rep.error((*path, key), "x-dans.protocol must be http or tcp")
            elif key == "trace_header" and not _HEADER_NAME.fullmatch(value):
                rep.error((*path, key), "x-dans.trace_header must be a header name "
                                        "(1-64 letters, digits, '-')")
        result[name] = dict(ext)
    return result


def load_project(
    files: Sequence[str],
    *,
    environ: Mapping[str, str] | None = None,
    stdin_text: str | bytes | None = None,
) -> ComposeProject:
    """Load Compose files into one project: merged left to right, variables substituted from
    `environ` (default os.environ) over a `.env` file beside the first file, validated against
    the Compose 3.x / Compose Specification schema, short forms expanded; '-' reads
    `stdin_text` (bytes are decoded like a file). Raises ComposeError listing every problem
    with file, line, service and key.
    """
    if not files:
        raise ComposeError("no Compose file given")
    try:
        return _load(files, environ, stdin_text)
    except RecursionError:
        raise ComposeError(f"{files[0]}: a YAML anchor refers to itself") from None


def _load(files: Sequence[str], environ: Mapping[str, str] | None,
          stdin_text: str | bytes | None) -> ComposeProject:
    first = files[0]
    workdir = os.path.abspath(os.getcwd() if first == "-" else os.path.dirname(first) or ".")
    try:
        lookup = dict(read_dotenv(os.path.join(workdir, ".env")))
    except ValueError as exc:
        raise ComposeError(f"cannot read the .env file {os.path.join(workdir, '.env')}: "
                           f"{exc}") from None
    lookup.update(os.environ if environ is None else environ)
    rep = Problems()
    missing: set[str] = set()
    canonical = []
    for name in files:
        label = "<stdin>" if name == "-" else name
        data, lines = parse_yaml(_read(name, stdin_text), label)
        rep.sources.append(Source(label, lines))
        if not isinstance(data, dict):
            rep.error((), "the top level of a Compose file must be a mapping")
            continue
        data = {k: interpolate(v, lookup, missing, rep.error, (k,)) if k in _SECTIONS else v
                for k, v in data.items()}
        problems = _check_version(data) + _nul_strings(data) + forbidden(data) + validate(data)
        for path, message in problems:
            rep.error(path, message)
        if problems:
            continue
        canonical.append(normalize_file(data, rep, workdir, lookup))
    rep.raise_if_any()
    merged = merge_files(canonical)
    extensions = _check_x_dans(rep, merged["services"])
    rep.raise_if_any()
    warnings = [f"The {var} variable is not set. Defaulting to a blank string."
                for var in sorted(missing)] + rep.warnings
    return ComposeProject(
        files=list(files), working_dir=workdir, name=merged.get("name"),
        services=merged["services"], networks=merged["networks"], volumes=merged["volumes"],
        configs=merged["configs"], secrets=merged["secrets"],
        extensions={k: v for k, v in merged.items() if k.startswith("x-")},
        service_extensions=extensions, warnings=warnings, sources=rep.sources,
    )
