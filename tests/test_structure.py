"""The seams between the packages: which package may import which, and what each makes public."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lb
import upgrade_manager
from upgrade_manager import lb_image

ROOT = Path(__file__).resolve().parent.parent
# package -> the project packages it may import (the standard library and PyPI are free).
ALLOWED = {
    "compose_translator": {"compose_translator"},
    "lb": {"lb"},
    "upgrade_manager": {"upgrade_manager", "compose_translator", "lb"},
}
PROJECT = {"compose_translator", "upgrade_manager", "lb"}
# What other packages may import of `lb`: its public modules (lb/__init__.py says why).
LB_PUBLIC = {"lb", "lb.errors", "lb.table", "lb.client", "lb.cli"}
LB_ALL = {"Frontend", "Group", "LBError", "RoutingTable"}


def _modules(path: Path) -> set[str]:
    """The absolute module names `path` imports (`import a.b`, `from a.b import c`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules(path)} & PROJECT


def _package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for path in _package_files(package)
             for name in _imports(path) - ALLOWED[package]}
    assert not wrong, sorted(wrong)


def test_the_check_sees_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom upgrade_manager.errors import DansError\nimport lb.cli\n"
                     "def f():\n    from compose_translator import translate\n")
    assert _imports(probe) == {"upgrade_manager", "lb", "compose_translator"}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_package_reaches_into_another_packages_private_modules(package: str) -> None:
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for path in _package_files(package) for name in _modules(path)
             if name.split(".")[0] in PROJECT - {package}
             and any(part.startswith("_") for part in name.split(".")[1:])}
    assert not wrong, sorted(wrong)


def test_upgrade_manager_uses_only_the_public_modules_of_lb() -> None:
    used = {name for path in _package_files("upgrade_manager") for name in _modules(path)
            if name.split(".")[0] == "lb"}
    assert used, "upgrade_manager drives the LB: the check must see its imports"
    assert used <= LB_PUBLIC, sorted(used - LB_PUBLIC)


def test_lb_names_its_internals_private() -> None:
    # Every module of lb that is not in its public surface is a `_module`, as in
    # compose_translator: what another package may use is visible in the file name.
    names = {"lb" if p.stem == "__init__" else f"lb.{p.stem}" for p in _package_files("lb")}
    public = {n for n in names if not n.split(".")[-1].startswith("_")}
    assert public == LB_PUBLIC, sorted(public ^ LB_PUBLIC)


def test_the_public_surfaces_are_what_the_packages_declare() -> None:
    assert set(lb.__all__) == LB_ALL
    assert all(hasattr(lb, name) for name in lb.__all__)
    assert upgrade_manager.__all__ == ["__version__"]


MODULES = [p for pkg in sorted(ALLOWED) for p in _package_files(pkg) if p.name != "__main__.py"]


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(ROOT)) for p in MODULES])
def test_every_module_declares_what_it_exports(path: Path) -> None:
    module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts)
                                     .removesuffix(".__init__"))
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{path.relative_to(ROOT)} has no __all__"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{path.relative_to(ROOT)}: __all__ names what it lacks: {missing}"


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The LB image's build context as `dans lb build-image` writes it (a stand-in wheel)."""
    wheel = tmp_path / "httptools-0.0-cp311-none-any.whl"
    wheel.write_bytes(b"not a real wheel")
    monkeypatch.setattr(lb_image, "httptools_wheel", lambda: wheel)
    return lb_image.build_context(tmp_path / "context")


def test_the_lb_image_context_holds_lb_alone(context: Path) -> None:
    files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    assert "Dockerfile" in files and "dans/lb/cli.py" in files
    outside = [f for f in files if f != "Dockerfile" and not f.startswith(("dans/lb/", "wheels/"))]
    assert not outside, outside
    lb_files = sorted(str(p.relative_to(ROOT / "lb")) for p in (ROOT / "lb").rglob("*.py"))
    assert [f.removeprefix("dans/lb/") for f in files if f.startswith("dans/")] == lb_files


def test_the_lb_image_copies_only_the_context_it_is_given(context: Path) -> None:
    # What the image holds is what its Dockerfile copies: the wheel and dans/ (= lb).
    dockerfile = (context / "Dockerfile").read_text()
    copied = re.findall(r"^(?:COPY|ADD)\s+(?:--\S+\s+)*(.+?)\s+\S+\s*$", dockerfile, re.M)
    assert sorted(copied) == ["dans", "wheels"]


def test_the_lb_in_the_image_context_imports_without_the_rest_of_dans(context: Path) -> None:
    # Every module of the copied `lb` imports with the other dans packages made unimportable.
    names = sorted(".".join(p.relative_to(context / "dans").with_suffix("").parts)
                   .removesuffix(".__init__") for p in (context / "dans").rglob("*.py"))
    code = ("import importlib, sys\n"
            "for blocked in ('upgrade_manager', 'compose_translator'):\n"
            "    sys.modules[blocked] = None\n"
            f"for name in {names!r}:\n"
            "    assert importlib.import_module(name).__file__.startswith(sys.argv[1]), name\n"
            "print('ok', len(sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code, str(context / "dans")], cwd=context,
                          env={"PYTHONPATH": str(context / "dans")}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]
