"""YAML reading with Go yaml.v3 scalar rules and a map from document paths to line numbers.

The docker CLI decodes Compose files with Go's yaml.v3, which follows YAML 1.2 core rules:
`yes`/`no`/`on`/`off` stay strings and `80:80` is not a base-60 integer. PyYAML implements
YAML 1.1, so the resolvers are replaced here; otherwise `- 80:80` would become 4880.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from upgrade_manager.errors import ComposeError

__all__ = ["Lines", "parse_yaml"]

Path = tuple[str | int, ...]
Lines = dict[Path, int]

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """SafeLoader with YAML 1.2 core-schema scalars (what yaml.v3 produces)."""

    yaml_implicit_resolvers: dict[Any, Any] = {}


def _int(loader: Any, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    if text.startswith(("0x", "0X")):
        return sign * int(text[2:], 16)
    if text.startswith(("0o", "0O")):
        return sign * int(text[2:], 8)
    if text.startswith(("0b", "0B")):
        return sign * int(text[2:], 2)
    if len(text) > 1 and text.startswith("0") and set(text) <= set("01234567"):
        return sign * int(text, 8)  # yaml.v3 parses with base 0: a leading 0 means octal
    return sign * int(text)


def _bool(loader: Any, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


for _first, _regex, _tag in (
    ("tTfF", r"^(?:true|True|TRUE|false|False|FALSE)$", "tag:yaml.org,2002:bool"),
    ("-+0123456789", r"^[-+]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-7]*[0-9][0-9_]*)$",
     "tag:yaml.org,2002:int"),
    ("-+0123456789.", r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "tag:yaml.org,2002:float"),
    ("~nN", r"^(?:~|null|Null|NULL)$", "tag:yaml.org,2002:null"),
    ("", r"^$", "tag:yaml.org,2002:null"),
    ("<", r"^<<$", "tag:yaml.org,2002:merge"),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_regex), list(_first) or [""])
_Loader.add_constructor("tag:yaml.org,2002:int", _int)
_Loader.add_constructor("tag:yaml.org,2002:bool", _bool)


def parse_yaml(text: str, filename: str) -> tuple[Any, Lines]:
    """Parse one YAML document; return the data and the line of every mapping key and item.

    Duplicate keys in one mapping are an error, as they are for the docker CLI.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        lines: Lines = {}
        problems: list[str] = []
        _walk(node, (), lines, problems, filename)
        if problems:
            raise ComposeError("\n".join(problems), problems)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        problem = getattr(exc, "problem", None) or str(exc)
        raise ComposeError(f"{where}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()
    return data, lines


def _walk(node: yaml.Node, path: Path, lines: Lines, problems: list[str], filename: str) -> None:
    # Records the line of each key; anchors may make the same node appear twice, which is fine.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = str(key_node.value)
            if key in seen:
                problems.append(f"{filename}:{key_node.start_mark.line + 1}: "
                                f"mapping key {key!r} already defined"
                                + (f" in {'.'.join(map(str, path))}" if path else ""))
            seen.add(key)
            sub = (*path, key)
            lines[sub] = key_node.start_mark.line + 1
            if len(sub) < 6:
                _walk(value_node, sub, lines, problems, filename)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, i)
            lines[sub] = item.start_mark.line + 1
            if len(sub) < 6:
                _walk(item, sub, lines, problems, filename)
