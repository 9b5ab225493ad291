"""Fidelity on the real swarm: `docker stack deploy --resolve-image never` is the oracle.

Each fixture is deployed by the docker CLI under one stack name and by dans under another;
the inspected service specs, networks, configs and secrets must be equal once the stack name
is replaced. The stacks are deployed one after the other because published ingress ports
and fixed subnets can belong to one stack at a time.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support import IN_CI, Names
from tests.translator.fidelity import (
    DOCKER,
    FIXTURES,
    cli_deploy,
    dans_deploy,
    differences,
    moved_ports,
    remove_stack,
    rewrite_ports,
    snapshot,
    with_free_ports,
)
from upgrade_manager.gateway import Gateway

# Under CI=true a missing docker CLI is a failure, not a skip.
pytestmark = pytest.mark.skipif(shutil.which(DOCKER) is None and not IN_CI,
                                reason="needs the docker CLI")

CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
UPDATE = Path(__file__).parent / "fixtures" / "update"


def _env(stack: str, shared: dict[str, str]) -> dict[str, str]:
    # Objects with a fixed `name:` are not stack-scoped; give each stack its own.
    return dict(os.environ, **shared, NAMED_NET=f"{stack}_named",
                NAMED_SECRET=f"{stack}_namedsecret")


def _compare(gw: Gateway, names: Names, fixture: Path, shared: dict[str, str],
             scratch: Path) -> None:
    cli, dans = names("cli"), names("dans")
    fixture = with_free_ports(fixture, scratch, _env(cli, shared))
    cli_deploy(fixture, cli, _env(cli, shared))
    expected = snapshot(gw, cli)
    remove_stack(gw, cli)
    dans_deploy(gw, fixture, dans, _env(dans, shared))
    got = snapshot(gw, dans)
    assert expected["services"], "the oracle deployed nothing"
    diff = differences(expected, got)
    assert not diff, f"{fixture.name}: dans differs from docker stack deploy:\n  " + \
        "\n  ".join(diff)


def test_fixture_count() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES)
def test_same_as_docker_stack_deploy(gateway: Gateway, names: Names, case: str,
                                     tmp_path: Path) -> None:
    shared = {"SET_VAR": "set", "EMPTY_VAR": "", "PASSTHRU": "passed", "EXT_NET": names("ext")}
    if case.startswith("08"):
        gateway.create_network({"Name": names("ext"), "Driver": "overlay", "Labels": {}})
    if case.startswith("04"):
        gateway.create_config({"Name": names("ext"), "Labels": {}, "Data": b"outside"})
        gateway.create_secret({"Name": names("ext"), "Labels": {}, "Data": b"outside"})
    _compare(gateway, names, FIXTURES / case, shared, tmp_path)


def test_update_and_prune_same_as_docker(gateway: Gateway, names: Names, tmp_path: Path
                                         ) -> None:
    # v1 then v2 on top (with --prune): the CLI's update path, kept image, pruned service.
    import subprocess

    from compose_translator import load_project, translate
    from upgrade_manager.deploy import deploy_stack

    cli, dans = names("cli"), names("dans")
    moved = moved_ports({18600, 18601})  # the ports the update fixtures publish
    for version in ("v1", "v2"):
        fixture = tmp_path / version
        fixture.mkdir()
        shutil.copy(UPDATE / f"{version}.yml", fixture / "docker-compose.yml")
        for conf in UPDATE.glob("*.txt"):
            shutil.copy(conf, fixture / conf.name)
        rewrite_ports(fixture, moved)
        args = [DOCKER, "stack", "deploy", "--resolve-image", "never", "--detach=true",
                "--prune", "-c", "docker-compose.yml", cli]
        proc = subprocess.run(args, cwd=fixture, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    expected = snapshot(gateway, cli)
    remove_stack(gateway, cli)
    for version in ("v1", "v2"):
        project = load_project([str(tmp_path / version / "docker-compose.yml")], environ={})
        result = deploy_stack(gateway, translate(project, dans), prune=True)
    assert result.removed == [f"{dans}_gone"]
    assert sorted(result.updated) == [f"{dans}_api", f"{dans}_web"]
    got = snapshot(gateway, dans)
    assert sorted(got["services"]) == ["STACK_api", "STACK_web"]
    diff = differences(expected, got)
    assert not diff, "update differs from docker stack deploy:\n  " + "\n  ".join(diff)
    svc = gateway.inspect_service(f"{dans}_web")
    assert svc["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["VERSION=1"]
