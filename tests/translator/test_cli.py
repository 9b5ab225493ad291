"""`dans translate` through the click group: output formats, stdin, errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from upgrade_manager.cli import main

FILE = """\
name: shop
services:
  web:
    image: nginx
    build: .
    environment: [API=http://api:80]
  api:
    image: api:1
"""


def test_translate_json(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text(FILE)
    result = CliRunner().invoke(main, ["translate", "-f", str(tmp_path / "c.yml"), "-s", "st"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(data["services"]) == ["st_api", "st_web"]
    assert data["services"]["st_web"]["TaskTemplate"]["ContainerSpec"]["Image"] == \
        "nginx:latest"
    assert data["dependencies"] == [
        {"source": "web", "target": "api", "kind": "environment", "declared": False}]
    assert "Warning: Ignoring keys that Swarm services cannot honour: services.web.build" \
        in result.stderr


def test_translate_yaml_from_stdin_with_file_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["translate", "-f", "-", "--format", "yaml"], input=FILE)
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["stack"] == "shop"
    assert data["networks"]["shop_default"]["Labels"] == {"com.docker.stack.namespace": "shop"}


def test_translate_errors_are_one_line_each_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("services:\n  web:\n    image: x\n    mem_limit: 1g\n"
                                    "    colour: red\n")
    result = CliRunner().invoke(main, ["translate", "-f", str(tmp_path / "c.yml"), "-s", "s"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.startswith("Error: 2 problems in the Compose file:")
    assert "c.yml:4: service 'web', key 'mem_limit'" in result.stderr
    assert "c.yml:5: service 'web', key 'colour': unsupported key 'colour'" in result.stderr


def test_translate_missing_file_and_stack(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["translate", "-f", str(tmp_path / "nope.yml"), "-s", "s"])
    assert result.exit_code == 2
    assert "cannot read the Compose file" in result.stderr
    (tmp_path / "c.yml").write_text("services: {a: {image: i}}\n")
    result = CliRunner().invoke(main, ["translate", "-f", str(tmp_path / "c.yml")])
    assert result.exit_code == 2
    assert "no stack name" in result.stderr
