"""A Swarm user's habits, no engine needed: docker's flags and STACK argument, the
`docker dans` plugin through the real docker CLI, and a `--help` that loads nothing heavy."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from lb import cli as lb_cli
from lb._server import DEFAULT_ADMIN_PORT
from tests.support import IN_CI
from upgrade_manager import _cli_upgrade
from upgrade_manager._cli_plugin import metadata
from upgrade_manager.gateway import Gateway
from upgrade_manager.model import STRATEGIES

ROOT = Path(__file__).resolve().parents[2]
VOTING_V1 = str(ROOT / "examples/voting-app/stacks/v1.yml")
NO_ENGINE = {**os.environ, "DOCKER_HOST": "unix:///nonexistent-dans-test.sock"}
HEAVY = ("docker", "aiohttp", "networkx", "jsonschema", "yaml")

# Runs the CLI as `dans ARGS` would, then names the heavy modules that got imported.
RUNNER = f"""\
import sys
from upgrade_manager.cli import main
try:
    main(sys.argv[1:], prog_name="dans")
except SystemExit:
    pass
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def dans(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args],
                          capture_output=True, text=True, timeout=60, env=env or NO_ENGINE,
                          cwd=ROOT)


@pytest.mark.parametrize(
    "args",
    [["--help"], ["deploy", "--help"], ["plan", "--help"], ["upgrade", "--help"],
     ["status", "--help"], ["rollback", "--help"], ["translate", "--help"],
     ["doctor", "--help"], ["install-plugin", "--help"], ["lb", "--help"], ["--version"]],
    ids=lambda a: "-".join(a).strip("-"),
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert "Usage:" in done.stdout or "version" in done.stdout, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "HEAVY=", done.stderr


def test_constants_repeated_for_fast_help_stay_equal() -> None:
    assert _cli_upgrade.STRATEGIES == tuple(STRATEGIES)
    assert lb_cli._HELP_ADMIN_PORT == DEFAULT_ADMIN_PORT


@pytest.mark.parametrize(
    ("args", "stack"),
    [(["-c", VOTING_V1, "shop"], "shop"),
     (["--compose-file", VOTING_V1, "shop"], "shop"),
     (["-f", VOTING_V1, "--stack", "shop"], "shop"),
     (["-f", VOTING_V1, "-s", "shop", "shop"], "shop")],
    ids=["c-positional", "compose-file-positional", "f-stack", "same-name-twice"],
)
def test_docker_and_dans_spellings_agree(args: list[str], stack: str) -> None:
    done = dans("translate", *args)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stack"] == stack


@pytest.mark.parametrize(
    ("args", "message"),
    [(["translate", "-c", VOTING_V1, "--stack", "b", "a"], "two stack names: 'a' (STACK) and "
                                                          "'b' (--stack); give one"),
     (["plan", "-c", VOTING_V1, "-s", "b", "a"], "two stack names"),
     (["upgrade", "-c", VOTING_V1, "--stack", "b", "a"], "two stack names"),
     (["plan", "-c", VOTING_V1], "no stack name: pass it as STACK"),
     (["upgrade", "-c", VOTING_V1], "no stack name: pass it as STACK"),
     (["deploy", "-c", VOTING_V1, "--stack", "b", "a"], "two stack names"),
     (["status", "--stack", "b", "a"], "two stack names"),
     (["rollback"], "no stack name")],
    ids=["translate-two", "plan-two", "upgrade-two", "plan-none", "upgrade-none", "deploy-two",
         "status-two", "rollback-none"],
)
def test_stack_name_errors_are_one_line(args: list[str], message: str) -> None:
    done = dans(*args)
    assert done.returncode == 2
    assert done.stderr.startswith("Error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_resolve_image_always_says_where_dans_differs() -> None:
    done = dans("plan", "-c", VOTING_V1, "--resolve-image", "always", "--with-registry-auth",
                "shop")
    assert "Warning: --resolve-image always: dans does not query the registry" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: connecting to the Docker")
    assert "Traceback" not in done.stderr


def test_registry_auth_header_carries_the_docker_config_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = base64.b64encode(b"alice:secret").decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"registry.example:5000": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    api = docker.APIClient(base_url="unix:///nonexistent-dans-test.sock", version="1.41")
    gw = Gateway(api)
    spec = {"TaskTemplate": {"ContainerSpec": {"Image": "registry.example:5000/app:1"}}}
    assert gw._auth_headers(spec) == {}  # off unless --with-registry-auth
    gw.registry_auth = True
    header = gw._auth_headers(spec)["X-Registry-Auth"]
    sent = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    assert (sent["username"], sent["password"]) == ("alice", "secret")
    gw.close()


def test_plugin_answers_the_metadata_call(tmp_path: Path) -> None:
    done = dans("install-plugin", "--dir", str(tmp_path / "cli-plugins"))
    assert done.returncode == 0, done.stderr
    plugin = tmp_path / "cli-plugins" / "docker-dans"
    assert os.access(plugin, os.X_OK)
    answer = subprocess.run([str(plugin), "docker-cli-plugin-metadata"], capture_output=True,
                            text=True, timeout=30, check=True)
    got = json.loads(answer.stdout)
    assert got == metadata()
    assert got["SchemaVersion"] == "0.1.0" and {"Vendor", "Version", "ShortDescription"} <= set(got)


DOCKER = shutil.which("docker")


@pytest.mark.skipif(DOCKER is None and not IN_CI, reason="needs the docker CLI (no engine)")
@pytest.mark.parametrize(
    ("args", "expected"),
    [(["dans", "--help"], "Usage: docker dans [OPTIONS] COMMAND"),
     (["dans", "upgrade", "--help"], "Usage: docker dans upgrade [OPTIONS] [STACK]"),
     (["help", "dans", "plan"], "Usage: docker dans plan [OPTIONS] [STACK]"),
     (["dans", "--version"], "dans, version"),
     (["--help"], "Upgrade Swarm stacks with zero failed requests")],
    ids=["dans-help", "upgrade-help", "docker-help-dans-plan", "version", "docker-lists-it"],
)
def test_docker_runs_the_installed_plugin(tmp_path: Path, args: list[str],
                                          expected: str) -> None:
    # Installed where docker looks by default ($DOCKER_CONFIG/cli-plugins); no engine needed.
    env = {**NO_ENGINE, "DOCKER_CONFIG": str(tmp_path)}
    assert dans("install-plugin", env=env).returncode == 0
    assert DOCKER is not None
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout


@pytest.mark.skipif(DOCKER is None and not IN_CI, reason="needs the docker CLI (no engine)")
def test_docker_dans_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    env = {**NO_ENGINE, "DOCKER_CONFIG": str(tmp_path)}
    assert dans("install-plugin", env=env).returncode == 0
    assert DOCKER is not None
    done = subprocess.run([DOCKER, "dans", "upgrade", "-c", VOTING_V1, "--stack", "b", "a"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("Error: two stack names"), done.stderr
    assert "Traceback" not in done.stderr
