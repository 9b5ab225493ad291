"""The test harness itself: swarm tests fail under CI=true without an engine, skip outside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from upgrade_manager import __version__
from upgrade_manager.cli import main

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
def test_needs_swarm(gateway):
    assert gateway.info()
"""


@pytest.mark.parametrize(
    ("ci", "expect_rc", "expect_text"),
    [("true", 1, "needs a Docker engine in swarm mode"), ("", 0, "1 skipped")],
    ids=["ci-fails", "local-skips"],
)
def test_swarm_fixture_without_engine(tmp_path: Path, ci: str, expect_rc: int,
                                      expect_text: str) -> None:
    probe_dir = ROOT / "tests" / f"_probe_{os.getpid()}_{ci or 'local'}"
    probe_dir.mkdir()
    try:
        (probe_dir / "__init__.py").write_text("")
        (probe_dir / "test_probe.py").write_text(PROBE)
        env = {**os.environ, "CI": ci, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
             str(probe_dir)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
    finally:
        for f in probe_dir.iterdir():
            f.unlink()
        probe_dir.rmdir()
    out = proc.stdout + proc.stderr
    assert proc.returncode == expect_rc, out
    assert expect_text in out


def test_cli_version_and_help() -> None:
    runner = CliRunner()
    version = runner.invoke(main, ["--version"])
    assert version.exit_code == 0 and __version__ in version.output
    helptext = runner.invoke(main, ["--help"])
    assert helptext.exit_code == 0
    assert "zero failed requests" in helptext.output


def test_doctor_reports_missing_engine_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    proc = subprocess.run([sys.executable, "-m", "upgrade_manager.cli", "doctor"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: connecting to the Docker engine")
    assert "Traceback" not in proc.stderr
