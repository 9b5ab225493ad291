"""The LB's code stays readable: modules under 500 lines, functions under 60 (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LB = Path(__file__).resolve().parents[2] / "lb"
MODULES = sorted(LB.glob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= 500, f"{path.name} is over 500 lines: split it"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and (node.end_lineno or 0) - node.lineno + 1 > 60]
    assert not long, f"{path.name}: functions over 60 lines: {', '.join(long)}"
