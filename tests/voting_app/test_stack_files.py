"""The stack files as `docker stack deploy` reads them: shape, defaults, interpolation."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.support import IN_CI
from tests.voting_app.stacks import SERVICES, STACKS

VERSIONS = {  # file -> the image tag of each service
    "v1": {"vote": "1", "worker": "1", "result": "1"},
    "change-api": {"vote": "2-change-api", "worker": "2-change-api", "result": "1"},
    "add-api": {"vote": "2-add-api", "worker": "2-add-api", "result": "1"},
    "candidates": {"vote": "2-candidates", "worker": "2-candidates", "result": "2-candidates"},
}
TEST_ENV = {"ENDPOINT_MODE": "dnsrr", "PORT_MODE": "host", "VOTE_PORT": "0", "RESULT_PORT": "0"}

# Under CI=true a missing docker CLI is a failure, not a skip.
pytestmark = pytest.mark.skipif(shutil.which("docker") is None and not IN_CI,
                                reason="needs the docker CLI")


def stack_config(version: str, env: dict[str, str]) -> dict[str, Any]:
    """The file after the docker CLI's loading and interpolation."""
    clean = {k: v for k, v in os.environ.items() if k not in TEST_ENV}
    done = subprocess.run(["docker", "stack", "config", "-c", str(STACKS / f"{version}.yml")],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


@pytest.mark.parametrize("version", list(VERSIONS))
def test_defaults_are_swarms_own(version: str) -> None:
    config = stack_config(version, {})
    services = config["services"]
    assert sorted(services) == sorted(SERVICES)
    for name, svc in services.items():
        assert svc["deploy"].get("endpoint_mode") == "vip", name
        assert "test" in svc["healthcheck"], name
        for port in svc.get("ports", []):
            assert port["mode"] == "ingress", name
    assert services["vote"]["ports"][0]["published"] == 8080
    assert services["result"]["ports"][0]["published"] == 8081
    assert services["vote"]["deploy"]["replicas"] == 2
    for short, tag in VERSIONS[version].items():
        assert services[short]["image"] == f"dans-voting/{short}:{tag}"


@pytest.mark.parametrize("version", list(VERSIONS))
def test_test_swarm_interpolation(version: str) -> None:
    services = stack_config(version, TEST_ENV)["services"]
    for name, svc in services.items():
        assert svc["deploy"]["endpoint_mode"] == "dnsrr", name
        for port in svc.get("ports", []):
            assert port["mode"] == "host" and port.get("published", 0) == 0, name


@pytest.mark.parametrize("version", list(VERSIONS))
def test_db_keeps_its_state_and_never_runs_twice(version: str) -> None:
    db = stack_config(version, {})["services"]["db"]
    assert db["deploy"]["update_config"]["order"] == "stop-first"
    assert db["image"] == "dans-voting/db:1"
    [volume] = db["volumes"]
    assert volume["type"] == "volume" and volume["source"] == "db-data"


@pytest.mark.parametrize("version", [v for v in VERSIONS if v != "v1"])
def test_upgrades_change_only_the_app(version: str) -> None:
    old, new = stack_config("v1", {})["services"], stack_config(version, {})["services"]
    assert old["db"] == new["db"]
    changed = {s for s in SERVICES if old[s] != new[s]}
    expected = {s for s, tag in VERSIONS[version].items() if tag != "1"}
    assert changed == expected
