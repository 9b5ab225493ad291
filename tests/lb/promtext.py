"""A strict reader of the Prometheus text format (0.0.4), for the tests of the LB's /metrics.

Stricter than Prometheus itself where the LB should be: every sample belongs to the family
of the TYPE line before it (histograms with their _bucket, _sum and _count), a family is
declared once, HELP comes before TYPE, counters end in _total, label values are read with
their escapes undone (so a test can compare them with what went in).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One family: its type, help and samples {(sample name, labels): value}."""

    name: str
    kind: str
    help: str
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\\"n])", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _labels(text: str, line: str) -> Labels:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        assert m, f"bad labels in {line!r}"
        out.append((m.group(1), _unescape(m.group(2))))
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", f"bad labels in {line!r}"
            pos += 1
    names = [k for k, _ in out]
    assert len(names) == len(set(names)), f"a label twice in {line!r}"
    return tuple(out)


def _sample(line: str) -> tuple[str, Labels, float]:
    m = NAME.match(line)
    assert m, f"no metric name in {line!r}"
    name, rest = m.group(0), line[m.end():]
    labels: Labels = ()
    if rest.startswith("{"):
        end = rest.rindex("}")
        labels, rest = _labels(rest[1:end], line), rest[end + 1:]
    assert rest.startswith(" ") and rest.count(" ") == 1, f"bad value in {line!r}"
    value = float(rest[1:])
    assert not math.isnan(value), line
    return name, labels, value


def _belongs(sample: str, family: Family) -> bool:
    if family.kind == "histogram":
        return sample in (f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count")
    return sample == family.name


def parse(text: str) -> dict[str, Family]:
    """Every family of an exposition; AssertionError on anything malformed."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    current: Family | None = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert NAME.fullmatch(name) and name not in helps, line
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in TYPES and name not in families and name in helps, line
            assert kind != "counter" or name.endswith("_total"), f"counter {name} not _total"
            current = families[name] = Family(name, kind, helps[name])
        else:
            assert line and not line.startswith("#"), f"stray line {line!r}"
            sample, labels, value = _sample(line)
            assert current is not None and _belongs(sample, current), \
                f"{sample} outside its family"
            assert (sample, labels) not in current.samples, f"{line!r} twice"
            current.samples[(sample, labels)] = value
    return families


def values(text: str, name: str, **match: str) -> dict[Labels, float]:
    """The samples called `name` whose labels include `match`, by their full labels."""
    out: dict[Labels, float] = {}
    for family in parse(text).values():
        for (sample, labels), value in family.samples.items():
            if sample == name and set(match.items()) <= set(labels):
                out[labels] = value
    return out


def total(text: str, name: str, **match: str) -> float:
    """The sum of the samples called `name` whose labels include `match`."""
    return sum(values(text, name, **match).values())
