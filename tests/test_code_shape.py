"""The packages stay readable: modules up to 500 lines, functions up to 60 (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compose_translator", "lb", "upgrade_manager")
MODULES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py"))


def _lines(node: ast.AST) -> int:
    start = getattr(node, "lineno", 0)
    return (getattr(node, "end_lineno", None) or start) - start + 1


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(ROOT)) for p in MODULES])
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= 500, f"{path.name} is over 500 lines: split it"
    long = [f"{node.name} ({_lines(node)} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _lines(node) > 60]
    assert not long, f"{path.name}: functions over 60 lines: {', '.join(long)}"
