"""Fixtures of the voting-app tests: its images (built once per session) and a stack."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.support import Names
from tests.voting_app.stacks import APP_DIR, VotingStack
from upgrade_manager.gateway import Gateway


@pytest.fixture(scope="session")
def voting_images(gateway: Gateway) -> list[str]:
    """Every voting-app image, built by build.sh (only what is missing or stale)."""
    done = subprocess.run([str(APP_DIR / "build.sh")], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"build.sh failed:\n{done.stdout}{done.stderr}"
    listed = subprocess.run([str(APP_DIR / "build.sh"), "--list"], capture_output=True,
                            text=True, check=True)
    tags = listed.stdout.split()
    missing = [t for t in tags if not gateway.image_exists(t)]
    assert not missing, f"build.sh did not build {missing}"
    return tags


@pytest.fixture
def voting_stack(
    gateway: Gateway, names: Names, voting_images: list[str]
) -> Iterator[Callable[..., VotingStack]]:
    """A factory of voting-app stacks named with this test's prefix; all removed afterwards,
    their named volumes included."""

    def make(suffix: str = "", replicas: int = 2) -> VotingStack:
        stack = VotingStack(gateway, names() + suffix, replicas=replicas)
        return stack

    yield make
    names.cleanup()  # services, networks and the stacks' named volumes
