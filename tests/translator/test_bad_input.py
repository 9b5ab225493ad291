"""Hostile and careless input: each reproducer of issue 13 ends in one clear message and a
non-zero exit, never a traceback or a hang; the generated corpus has no bug."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.translator import fuzz
from upgrade_manager.cli import EXIT_INTERNAL, DansGroup, main

DANS = [sys.executable, "-m", "upgrade_manager.cli"]
CASES = {case.name: case for case in fuzz.KNOWN}

# Each known reproducer -> (where the message points, what it says).
EXPECTED = {
    "non-utf8": ("docker-compose.yml", "not valid UTF-8 at line 3, column 15 (byte 0xe9)"),
    "utf16-no-bom": ("docker-compose.yml", "control characters are not allowed"),
    "non-utf8-dotenv": (".env", "not valid UTF-8 at line 1, column 6"),
    "non-utf8-env-file": ("key 'env_file'", "not valid UTF-8 at line 1"),
    "tag-int-abc": ("docker-compose.yml:5", "cannot decode 'abc' as !!int"),
    "tag-float-abc": ("docker-compose.yml:5", "cannot decode 'abc' as !!float"),
    "tag-timestamp": ("docker-compose.yml:5", "cannot decode 'nope' as !!timestamp"),
    "tag-binary": ("docker-compose.yml:5", "!!binary value is not base64"),
    "tag-python": ("docker-compose.yml:5", "unknown tag"),
    "int-5000-digits": ("key 'deploy.replicas'", "(5000 characters)"),
    "int-0x_": ("key 'deploy.replicas'", "got '0x_'"),
    "memory-inf": ("key 'deploy.resources.limits.memory'", "invalid size inf"),
    "memory-1e400": ("key 'deploy.resources.limits.memory'", "invalid size '1e400'"),
    "tmpfs-size-inf": ("key 'volumes[0].tmpfs.size'", "invalid size inf"),
    "nul-env-file": ("key 'env_file'", "contains a NUL character"),
    "nul-config-file": ("config 'c', key 'file'", "contains a NUL character"),
    "nul-secret-file": ("secret 's', key 'file'", "contains a NUL character"),
    "billion-laughs": ("docker-compose.yml:", "aliases expand to more than 2,000,000 values"),
    "cpus-1e999999999": ("key 'deploy.resources.limits.cpus'", "more CPUs than any machine"),
    "replicas-negative": ("key 'deploy.replicas'", "-1 is out of range: must be at least 0"),
    "parallelism-negative": ("key 'deploy.update_config.parallelism'", "-1 is out of range"),
    "max-attempts-negative": ("key 'deploy.restart_policy.max_attempts'", "-1 is out of range"),
    "retries-negative": ("key 'healthcheck.retries'", "-1 is out of range"),
    "config-mode-negative": ("key 'configs[0].mode'", "-1 is out of range"),
    "published-70000": ("key 'ports[0].published'", "70000 is out of range"),
    "target-negative": ("key 'ports[0].target'", "-1 is out of range"),
    "duration-beyond-int64": ("key 'healthcheck.interval'", "more than about 292 years"),
    "tag-bool-maybe": ("docker-compose.yml:4", "cannot decode 'maybe' as !!bool"),
    "service-name-newline": ("service 'web\\n'", "invalid service name"),
    "restart-newline": ("key 'restart'", "unknown policy 'no\\n'"),
    "deep-nesting": ("docker-compose.yml:5", "nests deeper than 100 levels"),
    "self-anchor": ("docker-compose.yml:1", "anchor refers to itself"),
    "empty-file": ("", ""),
    "fifo-env-file": ("key 'env_file'", "not a regular file"),
}


def _materialise(case: fuzz.Case, folder: Path) -> Path:
    for name, data in case.files.items():
        if data == b"<fifo>":
            os.mkfifo(folder / name)
        else:
            (folder / name).write_bytes(data)
    return folder / "docker-compose.yml"


@dataclass
class Ran:
    """What one `dans` command did: exit status and the two streams."""

    returncode: int
    stdout: str
    stderr: str


def _dans(args: list[str], *, env: dict[str, str] | None = None, stdin: bytes = b"",
          timeout: float = 60) -> Ran:
    """Run `dans ARGS` in this process (click's runner: fast, same code path as the console
    script, exceptions mapped by the same group)."""
    del timeout  # every case here ends at once or the fuzz runner's bound catches it
    result = CliRunner().invoke(main, args, input=stdin, env=env)
    return Ran(result.exit_code, result.stdout, result.stderr)


def _dans_process(args: list[str], *, timeout: float = 60) -> Ran:
    """Run `dans ARGS` as a process, bounded in time: for what must hold end to end."""
    done = subprocess.run([*DANS, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    return Ran(done.returncode, done.stdout, done.stderr)


def test_every_known_case_has_an_expectation() -> None:
    assert set(EXPECTED) == set(CASES) - {"utf16-bom"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_known_case_is_one_clear_error(tmp_path: Path, name: str) -> None:
    where, what = EXPECTED[name]
    path = _materialise(CASES[name], tmp_path)
    result = _dans(["translate", "-f", str(path), "--stack", "st"])
    if name == "empty-file":  # an empty file is an empty project, as for the docker CLI
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: ")
    assert where in result.stderr and what in result.stderr, result.stderr
    assert "\0" not in result.stderr


def test_utf16_with_bom_reads_like_yaml_v3(tmp_path: Path) -> None:
    path = _materialise(CASES["utf16-bom"], tmp_path)
    result = _dans(["translate", "-f", str(path), "--stack", "st"])
    assert result.returncode == 0, result.stderr
    assert '"Image": "x:latest"' in result.stdout


def test_non_utf8_standard_input(tmp_path: Path) -> None:
    result = _dans(["translate", "-f", "-", "--stack", "st"],
                   stdin=b"services:\n  app:\n    image: caf\xe9\n")
    assert result.returncode == 2
    assert "standard input: not valid UTF-8 at line 3" in result.stderr


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "directory"])
def test_special_files_as_compose_file_are_refused(tmp_path: Path, special: str) -> None:
    if special == "fifo":
        target = tmp_path / "stack.yml"
        os.mkfifo(target)
    elif special == "directory":
        target = tmp_path
    else:
        target = Path(special)
    result = _dans_process(["translate", "-f", str(target), "--stack", "st"], timeout=30)
    assert result.returncode == 2
    assert "cannot read the Compose file" in result.stderr
    assert "not a regular file" in result.stderr or "is a directory" in result.stderr


@pytest.mark.parametrize("stack", ["ok\n", "a b", "-x", "", "web.api"])
def test_bad_stack_names(tmp_path: Path, stack: str) -> None:
    (tmp_path / "c.yml").write_text("services:\n  app:\n    image: i\n")
    result = _dans(["translate", "-f", str(tmp_path / "c.yml"), "--stack", stack])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "stack name" in result.stderr or "not a valid DNS name" in result.stderr


@pytest.mark.parametrize(("body", "message"), [
    ("services:\n  web.api:\n    image: i\n", "not a valid DNS name component"),
    ("services:\n  " + "a" * 70 + ":\n    image: i\n", "the Engine allows 63"),
    ("services:\n  a:\n    image: i\n    networks: [n]\nnetworks:\n  n:\n    name: my.net\n",
     "network name 'my.net' is not a valid DNS name"),
    ("services:\n  a:\n    image: i\n    configs: [c]\nconfigs:\n  c:\n    content: ''\n",
     "needs more than 0 and less than 1,024,000"),
    ("services:\n  a:\n    image: i\n    configs: [c]\nconfigs:\n  c:\n    name: -c\n"
     "    content: x\n", "config name '-c' is not allowed"),
    ("services:\n  a:\n    image: i\n    deploy:\n      restart_policy:\n"
     "        condition: sometimes\n", "expected one of 'none', 'on-failure', 'any'"),
    ("services:\n  a:\n    image: i\n    deploy:\n      update_config:\n"
     "        failure_action: explode\n", "expected one of 'continue'"),
    ("services:\n  a:\n    image: i\n    deploy:\n      endpoint_mode: x\n",
     "invalid endpoint mode 'x': use vip or dnsrr"),
    ("services:\n  a:\n    image: i\n    ports: ['99999:80']\n", "invalid port range"),
    ("services:\n  a:\n    image: i\n    ports: ['80-70:80-70']\n", "invalid port range"),
    ("services:\n  a:\n    image: i\n    ports: ['+80:80']\n", "invalid port"),
    ("services:\n  a:\n    image: i\n    environment: {A: \"a\\0b\"}\n", "NUL character"),
    ("services:\n  a:\n    image: i\n    deploy: {update_config: {max_failure_ratio: 2}}\n",
     "must be between 0 and 1"),
    ("services:\n  a:\n    image: i\n    deploy: {update_config: {delay: -1s}}\n",
     "must not be negative"),
    ("services:\n  a:\n    image: i\n    deploy: {replicas: '1_000'}\n", "expected a number"),
], ids=["dotted-service", "long-service", "dotted-network", "empty-config", "config-name",
        "condition", "failure-action", "endpoint-mode", "port-99999", "port-range-reversed",
        "port-plus", "env-nul", "failure-ratio", "negative-delay", "underscore-int"])
def test_engine_rules_refused_with_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "c.yml").write_text(body)
    result = _dans(["translate", "-f", str(tmp_path / "c.yml"), "--stack", "st"])
    assert result.returncode == 2, result.stderr
    assert "c.yml:" in result.stderr and message in result.stderr, result.stderr


# -- the engine connection ------------------------------------------------------------------

@pytest.mark.parametrize(("host", "message"), [
    ("tcp://127.0.0.1:99999", "not a valid engine address (Port out of range"),
    ("tcp://[::1", "not a valid engine address"),
    ("foo://x", "cannot reach the Docker engine"),
])
def test_bad_docker_host_is_one_line(host: str, message: str) -> None:
    result = _dans(["doctor"], env={"DOCKER_HOST": host})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and message in result.stderr, result.stderr


@pytest.fixture
def not_an_engine() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers every request with plain text."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_engine_answering_non_json(not_an_engine: str) -> None:
    result = _dans(["doctor"], env={"DOCKER_HOST": not_an_engine})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot reach the Docker engine" in result.stderr or "not JSON" in result.stderr


# -- an unexpected exception ------------------------------------------------------------------

def _group_with_a_bug() -> click.Group:
    @click.group(cls=DansGroup)
    @click.option("--debug", is_flag=True)
    def group(debug: bool) -> None:
        del debug

    @group.command()
    def broken() -> None:
        raise ZeroDivisionError("division by zero\x1b[2J")

    return group


def test_internal_error_is_one_line_and_exit_70() -> None:
    result = CliRunner().invoke(_group_with_a_bug(), ["broken"], env={"DANS_DEBUG": ""})
    assert result.exit_code == EXIT_INTERNAL
    assert result.stderr.count("\n") == 1
    assert "internal error in dans (ZeroDivisionError: division by zero\\x1b[2J)" in result.stderr
    assert "--debug" in result.stderr and "Traceback" not in result.stderr


def test_debug_shows_the_traceback() -> None:
    result = CliRunner().invoke(_group_with_a_bug(), ["--debug", "broken"])
    assert isinstance(result.exception, ZeroDivisionError)


# -- the corpus -------------------------------------------------------------------------------

# `make unit` runs the first 500 mutations; `make test` (and CI) the whole corpus as well.
@pytest.mark.parametrize("count", [pytest.param(500, id="500"),
                                   pytest.param(3000, id="3000", marks=pytest.mark.corpus)])
def test_fuzz_corpus_has_no_traceback_and_no_hang(count: int) -> None:
    cases = fuzz.generate(count)
    report = fuzz.run(cases)
    assert len(report.outcomes) == len(cases)
    assert report.bugs == {}, report.summary()
    kinds = {outcome for outcome in report.outcomes.values()}
    assert kinds == {"ok", "error"}  # both ends are reached: the corpus is not all noise
    assert all(report.outcomes[name] == "error" for name in EXPECTED if name != "empty-file")


def _sleep_on_hang(case: fuzz.Case, workdir: Path) -> str:
    if case.name == "hang":
        threading.Event().wait()  # never set: this case never ends
    return fuzz.run_case(case, workdir)


def test_fuzz_runner_records_a_hang_and_goes_on() -> None:
    # The runner itself must catch what it is for: a case that never ends is killed.
    fine = fuzz.Case("fine", {"docker-compose.yml": b"services: {a: {image: i}}\n"})
    hang = fuzz.Case("hang", fine.files)
    report = fuzz.run([fine, hang, fine.__class__("after", fine.files)], case_seconds=1,
                      check=_sleep_on_hang)
    assert report.outcomes == {"fine": "ok", "hang": "HANG: over 1 s", "after": "ok"}


def test_the_console_script_reports_like_the_group(tmp_path: Path) -> None:
    path = _materialise(CASES["cpus-1e999999999"], tmp_path)
    result = _dans_process(["translate", "-f", str(path), "--stack", "st"], timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "more CPUs than any machine" in result.stderr
