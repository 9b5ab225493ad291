"""Bad input to the upgrade commands: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import Names
from upgrade_manager.gateway import Gateway

VOTING_V1 = str(Path(__file__).resolve().parents[2] / "examples/voting-app/stacks/v1.yml")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["plan", "-f", "missing.yml"], 2, "cannot read the Compose file"),
        (["plan", "-f", VOTING_V1], 1, "does not exist; create it with `dans deploy`"),
        (["upgrade", "-f", VOTING_V1], 1, "does not exist; create it with `dans deploy`"),
        (["rollback"], 1, "has no unfinished upgrade to roll back"),
    ],
    ids=["missing-file", "plan-unknown-stack", "upgrade-unknown-stack", "rollback-nothing"],
)
def test_clear_errors(gateway: Gateway, names: Names, args: list[str], code: int,
                      message: str) -> None:
    del gateway  # the commands reach the engine themselves
    done = subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args,
                           "--stack", names("none")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith("Error: ") and message in done.stderr
    assert "Traceback" not in done.stderr
