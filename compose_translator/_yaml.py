"""YAML reading with Go yaml.v3 scalar rules and a map from document paths to line numbers.

The docker CLI decodes Compose files with Go's yaml.v3, which follows YAML 1.2 core rules:
`yes`/`no`/`on`/`off` stay strings and `80:80` is not a base-60 integer. PyYAML implements
YAML 1.1, so scalars are resolved here instead; otherwise `- 80:80` would become 4880.
libyaml parses; a small builder turns nodes into data (several times faster than PyYAML's
generic constructor, which matters for 500-service files).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from compose_translator._values import go_str
from upgrade_manager.errors import ComposeError

__all__ = ["Lines", "parse_yaml"]

Path = tuple[str | int, ...]

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_T = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
_MERGE, _SEQ, _MAP = _T + "merge", _T + "seq", _T + "map"

_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
          "FALSE": False}
_NULLS = {"", "~", "null", "Null", "NULL"}
_INT_RE = re.compile(r"^[-+]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)$")
_FLOAT_RE = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_NUMERIC_START = set("-+.0123456789")


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """libyaml parser with YAML 1.2 core-schema tag resolution (what yaml.v3 does)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            if not implicit[0]:
                return _STR
            if value in _NULLS:
                return _NULL
            if value in _BOOLS:
                return _BOOL
            if value == "<<":
                return _MERGE
            if value[0] in _NUMERIC_START:
                if _INT_RE.match(value):
                    return _INT
                if _FLOAT_RE.match(value):
                    return _FLOAT
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP


def _int(text: str) -> int:
    text = text.replace("_", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    if text[:2] in ("0x", "0X"):
        return sign * int(text[2:], 16)
    if text[:2] in ("0o", "0O"):
        return sign * int(text[2:], 8)
    if text[:2] in ("0b", "0B"):
        return sign * int(text[2:], 2)
    if len(text) > 1 and text.startswith("0") and set(text) <= set("01234567"):
        return sign * int(text, 8)  # yaml.v3 parses with base 0: a leading 0 means octal
    return sign * int(text)


def _float(text: str) -> float:
    lower = text.lower()
    if lower.endswith(".inf"):
        return float("-inf") if lower.startswith("-") else float("inf")
    if lower == ".nan":
        return float("nan")
    return float(text.replace("_", ""))


class _Builder:
    """Turns a node graph into dicts, lists and scalars; anchors share one built object."""

    def __init__(self, loader: Any, filename: str) -> None:
        self.loader = loader
        self.filename = filename
        self.memo: dict[int, Any] = {}
        self.building: set[int] = set()
        self.problems: list[str] = []

    def build(self, node: yaml.Node) -> Any:
        if node.__class__ is yaml.ScalarNode:
            tag = node.tag
            value = node.value
            if tag == _STR:
                return value
            if tag == _INT:
                return _int(value)
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return _BOOLS.get(value, value.lower() == "true")
            if tag == _FLOAT:
                return _float(value)
            return self.loader.construct_object(node, deep=True)  # explicit tags: !!binary...
        key = id(node)
        if key in self.memo:
            return self.memo[key]
        if key in self.building:
            raise ComposeError(f"{self.filename}:{node.start_mark.line + 1}: "
                               "a YAML anchor refers to itself")
        self.building.add(key)
        try:
            if node.__class__ is yaml.SequenceNode:
                result: Any = [self.build(item) for item in node.value]
            else:
                assert isinstance(node, yaml.MappingNode)
                result = self.mapping(node)
        finally:
            self.building.discard(key)
        self.memo[key] = result
        return result

    def mapping(self, node: yaml.MappingNode) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) \
                    else [value_node]
                for source in sources:
                    built = self.build(source)
                    if not isinstance(built, dict):
                        raise ComposeError(f"{self.filename}:{source.start_mark.line + 1}: "
                                           "a merge key (<<) needs a mapping")
                    for k, v in built.items():
                        merged.setdefault(k, v)  # the first merged mapping wins
                continue
            key = key_node.value if key_node.tag == _STR else self.build(key_node)
            if type(key) is not str:
                key = go_str(key)  # yaml.v3 decodes into map[string]any
            if key in result:
                self.problems.append(f"{self.filename}:{key_node.start_mark.line + 1}: "
                                     f"mapping key {key!r} already defined")
            result[key] = self.build(value_node)
        if merged:
            merged.update(result)
            return merged
        return result


class Lines(Mapping[Path, int]):
    """The line of every mapping key and list item by path, computed on first use.

    Most loads never report a problem, so the walk over the node tree is deferred.
    """

    def __init__(self, node: yaml.Node | None = None) -> None:
        self._node = node
        self._lines: dict[Path, int] | None = None if node is not None else {}

    def _built(self) -> dict[Path, int]:
        if self._lines is None:
            self._lines = {}
            assert self._node is not None
            _walk(self._node, (), self._lines)
            self._node = None
        return self._lines

    def __getitem__(self, path: Path) -> int:
        return self._built()[path]

    def __iter__(self) -> Iterator[Path]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())


def parse_yaml(text: str, filename: str) -> tuple[Any, Lines]:
    """Parse one YAML document; return the data and the line of every mapping key and item.

    Duplicate keys in one mapping are an error, as they are for the docker CLI.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, Lines()
        builder = _Builder(loader, filename)
        data = builder.build(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        problem = getattr(exc, "problem", None) or str(exc)
        raise ComposeError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ComposeError(f"{filename}: the YAML nests too deeply") from None
    finally:
        loader.dispose()
    if builder.problems:
        raise ComposeError("\n".join(builder.problems), builder.problems)
    return data, Lines(node)


def _walk(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    # Records the line of each key; anchors may make the same node appear twice, which is fine.
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            sub = (*path, str(key_node.value))
            lines.setdefault(sub, key_node.start_mark.line + 1)
            if len(sub) < 7:
                _walk(value_node, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, i)
            lines[sub] = item.start_mark.line + 1
            if len(sub) < 7:
                _walk(item, sub, lines)
