"""Shared fixtures: a swarm gateway (fails under CI=true when absent) and per-test names."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support import IN_CI, Names, names_for_test
from tests.voting_app.stacks import APP_DIR
from upgrade_manager.errors import DansError
from upgrade_manager.gateway import Gateway


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    """A gateway to an engine that is a swarm manager; CI=true turns absence into failure."""
    try:
        gw = Gateway.from_env()
        gw.require_manager()
    except DansError as exc:
        message = f"needs a Docker engine in swarm mode (run scripts/harness.sh): {exc}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield gw
    gw.close()


@pytest.fixture
def names(gateway: Gateway, request: pytest.FixtureRequest) -> Iterator[Names]:
    """A unique name prefix for this test; everything named with it is removed afterwards."""
    n = names_for_test(gateway, request)
    yield n
    n.cleanup()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test that touches the engine goes through the `gateway` fixture: mark it `swarm`;
    # one on the 3-node cluster (the `cluster` fixture) is `multinode` and needs an engine too.
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "gateway" in fixtures:
            item.add_marker(pytest.mark.swarm)
        if "cluster" in fixtures:
            item.add_marker(pytest.mark.multinode)
            item.add_marker(pytest.mark.swarm)


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
