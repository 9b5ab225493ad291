"""The seams between the packages: which package may import which."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the project packages it may import (the standard library and PyPI are free).
ALLOWED = {
    "compose_translator": {"compose_translator"},
    "upgrade_manager": {"upgrade_manager", "compose_translator", "lb"},
}
PROJECT = {"compose_translator", "upgrade_manager", "lb"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found & PROJECT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for path in sorted((ROOT / package).rglob("*.py"))
             for name in _imports(path) - ALLOWED[package]}
    assert not wrong, sorted(wrong)


def test_the_check_sees_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom upgrade_manager.errors import DansError\nimport lb.cli\n")
    assert _imports(probe) == {"upgrade_manager", "lb"}
