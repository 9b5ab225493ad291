"""`dans deploy --no-lb` (plain `docker stack deploy` behaviour) on the real swarm: progress
lines, JSON result, updates, prune, refused secret changes, missing external networks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from compose_translator import load_project, translate
from tests.support import Names
from upgrade_manager.cli import main
from upgrade_manager.deploy import deploy_stack
from upgrade_manager.errors import EngineError
from upgrade_manager.gateway import Gateway

STACK = """\
services:
  web:
    image: debian:bookworm-slim
    command: sleep infinity
    secrets: [token]
    deploy: {replicas: 0}
  old:
    image: debian:bookworm-slim
    command: sleep infinity
    deploy: {replicas: 0}
secrets:
  token:
    file: ./token.txt
    labels: {rev: "1"}
"""


def test_deploy_command_creates_then_updates_and_prunes(gateway: Gateway, names: Names,
                                                        tmp_path: Path) -> None:
    stack = names("st")
    (tmp_path / "token.txt").write_text("t1")
    (tmp_path / "c.yml").write_text(STACK)
    result = CliRunner().invoke(main, ["deploy", "--no-lb", "-f", str(tmp_path / "c.yml"),
                                       "-s", stack])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.endswith(f"Creating network {stack}_default") for line in lines)
    assert any(line.endswith(f"Creating secret {stack}_token") for line in lines)
    assert all(line.startswith("[") and "s] " in line for line in lines)
    web = gateway.inspect_service(f"{stack}_web")
    secret = gateway.inspect_secret(f"{stack}_token")
    assert web["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"][0]["SecretID"] == \
        secret["ID"]

    (tmp_path / "c.yml").write_text(STACK.replace('rev: "1"', 'rev: "2"')
                                    .replace("  old:\n", "  x-old:\n"))
    result = CliRunner().invoke(main, ["deploy", "--no-lb", "-f", str(tmp_path / "c.yml"),
                                       "-s", stack, "--prune", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["updated"] == [f"{stack}_web"]
    assert report["removed"] == [f"{stack}_old"]
    assert gateway.inspect_secret(f"{stack}_token")["Spec"]["Labels"]["rev"] == "2"
    assert not gateway.service_exists(f"{stack}_old")


def test_changed_secret_data_is_refused_like_the_cli(gateway: Gateway, names: Names,
                                                     tmp_path: Path) -> None:
    stack = names("st")
    (tmp_path / "c.yml").write_text(STACK)
    (tmp_path / "token.txt").write_text("t1")
    deploy_stack(gateway, translate(load_project([str(tmp_path / "c.yml")], environ={}), stack))
    (tmp_path / "token.txt").write_text("t2")
    specs = translate(load_project([str(tmp_path / "c.yml")], environ={}), stack)
    with pytest.raises(EngineError, match=f"failed to update secret {stack}_token"):
        deploy_stack(gateway, specs)


def test_missing_external_network(gateway: Gateway, names: Names, tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text(
        "services:\n  a:\n    image: debian:bookworm-slim\n    networks: [n]\n"
        f"networks:\n  n:\n    external: true\n    name: {names('absent')}\n")
    result = CliRunner().invoke(main, ["deploy", "--no-lb", "-f", str(tmp_path / "c.yml"),
                                       "-s", names("st")])
    assert result.exit_code != 0
    assert "is declared as external, but could not be found" in result.stderr
    assert "Traceback" not in result.output
