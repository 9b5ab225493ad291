"""The shipped Grafana dashboard queries only what the LB exports (lb._metrics.FAMILIES).

Every PromQL expression of the dashboard (panel targets and template variables) is taken
apart: the metric names it selects must be families of the LB's registry (a histogram's
through its _bucket, _sum or _count series), and the labels it matches or groups by must be
labels of those families. Renaming a metric or a label in the LB without the dashboard fails
here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from lb._metrics import FAMILIES

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "dans-lb-dashboard.json"
# PromQL words that are not metric names (functions are told apart by the "(" after them).
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression in the dashboard: targets (rows included) and variables."""
    out: list[str] = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels += panel.get("panels", [])
        out += [t["expr"] for t in panel.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", text or "")
        assert found, f"variable {var['name']}: unexpected query {text!r}"
        out.append(f"max by ({found.group(2)}) ({found.group(1)})")
    return out


def family_of(name: str) -> str | None:
    """The registered family a selected series name belongs to, or None."""
    if name in FAMILIES:
        return name if FAMILIES[name].kind != "histogram" else None
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in FAMILIES and FAMILIES[base].kind == "histogram":
            return base
    return None


def parts(expr: str) -> tuple[list[str], list[str], list[str]]:
    """(selected metric names, labels matched in selectors, labels of by/without/on)."""
    text = _STRING.sub('""', expr.replace("$__rate_interval", "1m"))
    matched = [m for sel in re.findall(r"\{([^}]*)\}", text)
               for m in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", sel)]
    grouped = [label.strip() for clause in re.findall(
        r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text) for label in clause.split(",")
        if label.strip()]
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
    names = [m.group(0) for m in _IDENT.finditer(bare)
             if m.group(0).lower() not in KEYWORDS
             and not bare[m.end():].lstrip().startswith("(")
             and not (m.start() and (bare[m.start() - 1].isdigit() or bare[m.start() - 1] == "."))]
    return names, matched, grouped


def test_the_dashboard_is_grafana_json_with_panels_and_an_import_input() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] == "dans-lb"
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Requests/s per version", "Error rate per version",
            "Latency per version (p50, p99)", "Step", "Generation"} <= titles
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


EXPRS = expressions(json.loads(DASHBOARD.read_text()))


@pytest.mark.parametrize("expr", EXPRS, ids=[f"expr{i}" for i in range(len(EXPRS))])
def test_every_queried_metric_and_label_is_one_the_lb_exports(expr: str) -> None:
    names, matched, grouped = parts(expr)
    assert names, f"no metric found in {expr!r}"
    families = [family_of(n) for n in names]
    unknown = [n for n, f in zip(names, families, strict=True) if f is None]
    assert not unknown, f"{expr!r} queries {unknown}, which the LB does not export"
    labels = {label for f in families if f for label in FAMILIES[f].labels} | {"le"}
    wrong = sorted(set(matched + grouped) - labels)
    assert not wrong, f"{expr!r} uses labels {wrong}, which its metrics do not carry"


@pytest.mark.parametrize("expr, names, labels", [
    ('sum by (version) (rate(x_total{frontend=~"a|b",code=~"5.."}[5m]))', ["x_total"],
     {"version", "frontend", "code"}),
    ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m]))) / on (a) y", ["h_bucket", "y"],
     {"le", "a"}),
    ("(time() - max(t_seconds)) * 2e3", ["t_seconds"], set()),
    ('m{s="by (x) {"}', ["m"], {"s"}),
], ids=["selector", "quantile-on", "time-number", "string-with-braces"])
def test_the_expression_reader_finds_names_and_labels(expr: str, names: list[str],
                                                       labels: set[str]) -> None:
    found, matched, grouped = parts(expr)
    assert found == names and set(matched + grouped) == labels


def test_a_renamed_metric_would_be_caught() -> None:
    names, _, _ = parts("sum(rate(dans_lb_request_total[1m]))")
    assert [family_of(n) for n in names] == [None]
    assert family_of("dans_lb_request_duration_seconds_bucket") == \
        "dans_lb_request_duration_seconds"
    assert family_of("dans_lb_request_duration_seconds") is None  # a histogram has no such
