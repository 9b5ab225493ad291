"""Variable substitution in Compose values, with the docker CLI's syntax and messages.

Supported: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
`${VAR?message}` and `$$` for a literal `$`. Only values are substituted, never keys; an unset
variable without a default becomes "" and is reported once as a warning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from compose_translator._files import read_text
from compose_translator._values import shown

__all__ = ["InterpolationError", "interpolate", "read_dotenv"]

_PATTERN = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[_a-z][_a-z0-9]*)"
    r"|\{(?P<braced>[_a-z][_a-z0-9]*(?::?[-?][^}]*)?)\}|(?P<invalid>))",
    re.IGNORECASE,
)


_NAME = re.compile(r"[_a-z][_a-z0-9]*", re.IGNORECASE)


class InterpolationError(ValueError):
    """A value could not be substituted (bad syntax or a required variable is missing)."""


def substitute(text: str, lookup: Mapping[str, str], missing: set[str]) -> str:
    """Substitute variables in one string; unset names without default go into `missing`."""
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped") is not None:
            return "$"
        name = match.group("named") or match.group("braced")
        if name is None:
            raise InterpolationError(f"invalid interpolation format in {shown(text)}")
        var = _NAME.match(name).group()  # type: ignore[union-attr]  # the pattern has one
        rest = name[len(var):]
        if rest:
            sep = rest[:2] if rest.startswith(":") else rest[:1]
            arg = rest[len(sep):]
            value = lookup.get(var)
            empty = value is None or (sep.startswith(":") and value == "")
            if sep.endswith("?"):
                if empty:
                    raise InterpolationError(
                        f"required variable {var} is missing a value"
                        + (f": {arg}" if arg else ""))
                return str(value)
            return arg if empty else str(value)
        value = lookup.get(name)
        if value is None:
            missing.add(name)
            return ""
        return value

    return _PATTERN.sub(replace, text)


def interpolate(
    data: Any,
    lookup: Mapping[str, str],
    missing: set[str],
    on_error: Callable[[tuple[str | int, ...], str], None],
    path: tuple[str | int, ...] = (),
) -> Any:
    """Return a copy of `data` with every string value substituted; report errors by path."""
    if isinstance(data, str):
        try:
            return substitute(data, lookup, missing)
        except InterpolationError as exc:
            on_error(path, str(exc))
            return data
    if isinstance(data, dict):
        return {k: interpolate(v, lookup, missing, on_error, (*path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, lookup, missing, on_error, (*path, i)) for i, v in enumerate(data)]
    return data


def read_dotenv(path: str) -> dict[str, str]:
    """Read a `.env` file: `KEY=VALUE` lines, `#` comments, optional `export` and quotes.

    No file is no variables; a file that cannot be read raises ValueError."""
    result: dict[str, str] = {}
    if not os.path.lexists(path):
        return result
    for raw in read_text(path).splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        result[key] = value
    return result
