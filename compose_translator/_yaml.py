"""YAML reading with Go yaml.v3 scalar rules and a map from document paths to line numbers.

The docker CLI decodes Compose files with Go's yaml.v3, which follows YAML 1.2 core rules:
`yes`/`no`/`on`/`off` stay strings and `80:80` is not a base-60 integer. PyYAML implements
YAML 1.1, so scalars are resolved here instead; otherwise `- 80:80` would become 4880.
libyaml parses; a small builder turns nodes into data (several times faster than PyYAML's
generic constructor, which matters for 500-service files).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from compose_translator._errors import ComposeError
from compose_translator._values import go_str

__all__ = ["Lines", "parse_yaml"]

Path = tuple[str | int, ...]

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_T = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
_MERGE, _SEQ, _MAP = _T + "merge", _T + "seq", _T + "map"
# Plain scalars that look numeric resolve to these, so an explicit `!!int` stays distinct.
_NUMBER = "tag:dans,2026:number"

_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
          "FALSE": False}
_NULLS = {"", "~", "null", "Null", "NULL"}
_INT_RE = re.compile(r"^[-+]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)\Z")
_FLOAT_RE = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z")
_NUMERIC_START = set("-+.0123456789")


class _Loader(_Base):  # type: ignore[misc]
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
            if value[0] in _NUMERIC_START and (_INT_RE.match(value) or _FLOAT_RE.match(value)):
                return _NUMBER
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP


_INT64 = (-(2**63), 2**64 - 1)  # yaml.v3 decodes int64, then uint64; beyond that, floats


def _plain_number(text: str) -> Any:
    """A plain scalar that looks numeric, as yaml.v3 decodes it into `any`.

    Underscores are dropped, then the text is read as an int64 or uint64 (base prefixes and
    a leading 0 for octal, like Go's base 0), else as a float64; a value that fits neither
    (`0x_`, a 5000-digit integer, `1e400`) stays a string, as it does for the docker CLI.
    """
    plain = text.replace("_", "")
    if _INT_RE.match(plain) and len(plain) <= 70:
        number = _int(plain)
        if number is not None and _INT64[0] <= number <= _INT64[1]:
            return number
    if _FLOAT_RE.match(plain) and len(plain) <= 400:
        real = _float(plain)
        if real not in (float("inf"), float("-inf")) or "inf" in plain.lower():
            return real
    return text


def _int(text: str) -> int | None:
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    base = 10
    if text[:2] in ("0x", "0X"):
        text, base = text[2:], 16
    elif text[:2] in ("0o", "0O"):
        text, base = text[2:], 8
    elif text[:2] in ("0b", "0B"):
        text, base = text[2:], 2
    elif len(text) > 1 and text.startswith("0"):
        base = 8  # yaml.v3 parses with base 0: a leading 0 means octal
    try:
        return sign * int(text, base)
    except ValueError:  # an empty digit string (`0x`), or 8 or 9 after a leading 0
        return None


def _float(text: str) -> float:
    lower = text.lower()
    if lower.endswith(".inf"):
        return float("-inf") if lower.startswith("-") else float("inf")
    if lower == ".nan":
        return float("nan")
    return float(text)


# Explicitly tagged scalars: what yaml.v3 accepts for each core tag (YAML 1.1 booleans too).
_TAGGED_BOOLS = {**_BOOLS, "yes": True, "Yes": True, "YES": True, "on": True, "On": True,
                 "ON": True, "y": True, "Y": True, "no": False, "No": False, "NO": False,
                 "off": False, "Off": False, "OFF": False, "n": False, "N": False}
_TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt ]+[0-9]{1,2}:[0-9]{2}:[0-9]{2}"
                           r"(?:\.[0-9]*)?(?:[ ]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?)?")


def _tagged(tag: str, value: str) -> Any:
    """The value of `!!tag value`; ValueError when the value is not of that type."""
    if tag == _INT:
        number = _plain_number(value) if _INT_RE.match(value.replace("_", "")) else None
        if isinstance(number, int):
            return number
        raise ValueError(f"cannot decode {value!r} as !!int")
    if tag == _FLOAT:
        number = _plain_number(value) if value and value[0] in _NUMERIC_START else None
        if isinstance(number, int | float) and not isinstance(number, bool):
            return float(number)
        raise ValueError(f"cannot decode {value!r} as !!float")
    if tag == _BOOL:
        if value in _TAGGED_BOOLS:
            return _TAGGED_BOOLS[value]
        raise ValueError(f"cannot decode {value!r} as !!bool (use true or false)")
    if tag == _NULL:
        if value in _NULLS:
            return None
        raise ValueError(f"cannot decode {value!r} as !!null")
    if tag == _T + "timestamp":
        if _TIMESTAMP_RE.fullmatch(value):
            return value
        raise ValueError(f"cannot decode {value!r} as !!timestamp")
    if tag == _T + "binary":
        try:
            return base64.b64decode("".join(value.split()), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("!!binary value is not base64 of UTF-8 text") from None
    raise ValueError(f"unknown tag {tag}")


# Bounds that make hostile documents cheap to refuse. yaml.v3 refuses excessive aliasing
# too; a real stack file of 1,000 services expands to about 100,000 values.
MAX_EXPANDED = 2_000_000
MAX_DEPTH = 100


class _Builder:
    """Turns a node graph into dicts, lists and scalars; anchors share one built object."""

    def __init__(self, loader: Any, filename: str) -> None:
        self.loader = loader
        self.filename = filename
        self.memo: dict[int, tuple[Any, int]] = {}
        self.building: set[int] = set()
        self.problems: list[str] = []
        self.depth = 0

    def fail(self, node: yaml.Node, message: str) -> ComposeError:
        return ComposeError(f"{self.filename}:{node.start_mark.line + 1}: {message}")

    def build(self, node: yaml.Node) -> Any:
        return self.sized(node)[0]

    def sized(self, node: yaml.Node) -> tuple[Any, int]:
        """The value of `node` and how many values it expands to, aliases counted each time."""
        if node.__class__ is yaml.ScalarNode:
            return self.scalar(node), 1
        key = id(node)
        if key in self.memo:
            return self.memo[key]
        if key in self.building:
            raise self.fail(node, "a YAML anchor refers to itself")
        if self.depth >= MAX_DEPTH:
            raise self.fail(node, f"the YAML nests deeper than {MAX_DEPTH} levels")
        self.building.add(key)
        self.depth += 1
        try:
            if node.__class__ is yaml.SequenceNode:
                items = [self.sized(item) for item in node.value]
                result: Any = [value for value, _ in items]
                size = 1 + sum(n for _, n in items)
            else:
                assert isinstance(node, yaml.MappingNode)
                result, size = self.mapping(node)
        finally:
            self.building.discard(key)
            self.depth -= 1
        if size > MAX_EXPANDED:
            raise self.fail(node, f"the YAML aliases expand to more than {MAX_EXPANDED:,} "
                                  "values; write the repeated parts out or share fewer")
        self.memo[key] = (result, size)
        return result, size

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        value = node.value
        if tag == _STR:
            return value
        if tag == _NULL and value in _NULLS:
            return None
        if tag == _BOOL and value in _BOOLS:
            return _BOOLS[value]
        if tag == _NUMBER:
            return _plain_number(value)
        try:
            return _tagged(tag, value)
        except ValueError as exc:
            raise self.fail(node, str(exc)) from None

    def mapping(self, node: yaml.MappingNode) -> tuple[dict[str, Any], int]:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        size = 1
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) \
                    else [value_node]
                for source in sources:
                    built, count = self.sized(source)
                    if not isinstance(built, dict):
                        raise self.fail(source, "a merge key (<<) needs a mapping")
                    size += count
                    for k, v in built.items():
                        merged.setdefault(k, v)  # the first merged mapping wins
                continue
            key = key_node.value if key_node.tag == _STR else self.build(key_node)
            if type(key) is not str:
                key = go_str(key)  # yaml.v3 decodes into map[string]any
            if key in result:
                self.problems.append(f"{self.filename}:{key_node.start_mark.line + 1}: "
                                     f"mapping key {key!r} already defined")
            result[key], count = self.sized(value_node)
            size += 1 + count
        if merged:
            merged.update(result)
            return merged, size
        return result, size


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
