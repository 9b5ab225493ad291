"""`dans lb` with bad input: one `Error:` line and a non-zero exit, never a traceback.

The command-line rows run `dans lb` through the real `dans` group (click's test runner) with
the LB's `run` replaced, so a value that wrongly passes validation fails the test instead of
starting a server. The port and admin rows start real `dans lb` processes on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import lb._server
from lb._settings import Settings
from lb.cli import EXIT_BUG
from lb.table import RoutingTable
from tests.lb.support import ROOT, TOKEN, LBProcess, free_port, frontend
from upgrade_manager.cli import main as dans

pytestmark = pytest.mark.timeout(120)

TABLE = {"frontends": [{"name": "w", "listen": 18080, "host": "127.0.0.1", "active": "a",
                        "groups": {"a": {"backends": ["127.0.0.1:1"]}}}]}


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Settings]]:
    """What `dans lb` would have run (nothing starts)."""
    runs: list[Settings] = []
    monkeypatch.setattr(lb._server, "run", runs.append)
    for name in [n for n in os.environ if n.startswith("DANS_LB_") or n == "DANS_DEBUG"]:
        monkeypatch.delenv(name)
    yield runs


def _dans_lb(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(dans, ["lb", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _assert_one_line_error(code: int, output: str, expected: str) -> None:
    assert code != 0, output
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert expected in lines[0], output


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("args, env, expected", [
    ([], {"DANS_LB_GRACE": "abc"}, "DANS_LB_GRACE must be a number of seconds"),
    ([], {"DANS_LB_GRACE": "nan"}, "DANS_LB_GRACE must be a finite number of seconds"),
    (["--grace", "inf"], {}, "--grace must be a finite number of seconds"),
    (["--grace", "-1"], {}, "--grace must be a finite number of seconds, 0"),
    (["--admin-port", "70000"], {}, "--admin-port must be a port number from 1 to 65535"),
    (["--admin-port", "0"], {}, "--admin-port must be a port number from 1 to 65535"),
    (["--admin-port", "abc"], {}, "--admin-port must be an integer"),
    ([], {"DANS_LB_ADMIN_PORT": "99999"}, "DANS_LB_ADMIN_PORT must be a port number"),
    (["--workers", "0"], {}, "--workers must be a number of worker processes from 1"),
    ([], {"DANS_LB_WORKERS": "two"}, "DANS_LB_WORKERS must be an integer"),
    (["--admin-timeout", "0"], {}, "--admin-timeout must be a finite number of seconds"),
    (["--admin-host", "bad host"], {}, "--admin-host must be an IP address or host name"),
    ([], {"DANS_LB_CONFIG": json.dumps({"frontends": [{**TABLE["frontends"][0],  # type: ignore
                                                       "timeouts": {"read": "NaN"}}]})},
     "timeouts.read must be a finite number"),
    ([], {"DANS_LB_CONFIG": '{"frontends": [{"timeouts": {"read": NaN}}]}'},
     "DANS_LB_CONFIG: routing table: NaN is not a JSON number"),
    ([], {"DANS_LB_CONFIG": '{"frontends": [{"timeouts": {"body": Infinity}}]}'},
     "Infinity is not a JSON number"),
    ([], {"DANS_LB_CONFIG": '{"frontends": ' + "[" * 50_000}, "JSON nested too deeply"),
], ids=["grace-abc", "grace-nan-env", "grace-inf", "grace-negative", "admin-port-70000",
        "admin-port-0", "admin-port-abc", "admin-port-env", "workers-0", "workers-env",
        "admin-timeout-0", "admin-host", "timeout-string", "timeout-nan", "timeout-infinity",
        "config-nested"])
def test_bad_settings_are_one_line_errors(started: list[Settings], args: list[str],
                                          env: dict[str, str], expected: str) -> None:
    code, output = _dans_lb(args, env)
    _assert_one_line_error(code, output, expected)
    assert not started


@pytest.mark.parametrize("flag, data, expected", [
    ("--config", b'{"frontends": [{"name": "caf\xe9"}]}', "is not UTF-8 text"),
    ("--config", json.dumps(TABLE).encode("utf-16"), "is not UTF-8 text"),
    ("--config", b"[" * 50_000 + b"]" * 50_000, "JSON nested too deeply"),
    ("--config", b'{"frontends": [{"name": "w", "timeouts": {"read": NaN}}]}',
     "NaN is not a JSON number"),
    ("--token-file", b"caf\xe9\n", "is not UTF-8 text"),
    ("--token-file", b"two\nlines", "other than printable ASCII"),
], ids=["config-latin1", "config-utf16", "config-nested", "config-nan", "token-latin1",
        "token-control"])
def test_bad_files_are_one_line_errors(started: list[Settings], tmp_path: Path, flag: str,
                                       data: bytes, expected: str) -> None:
    code, output = _dans_lb([flag, _write(tmp_path, "input", data)])
    _assert_one_line_error(code, output, expected)


def test_config_that_is_not_a_regular_file_is_refused(started: list[Settings],
                                                      tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would block start-up for good
    code, output = _dans_lb(["--config", str(fifo)])
    _assert_one_line_error(code, output, "is not a regular file")


def test_config_env_with_bytes_that_are_not_utf8(started: list[Settings],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # os.environ holds undecodable bytes as lone surrogates (PEP 383).
    monkeypatch.setenv("DANS_LB_CONFIG", '{"frontends": [{"name": "caf\udce9"}]}')
    code, output = _dans_lb([])
    _assert_one_line_error(code, output, "DANS_LB_CONFIG is not UTF-8 text")


def test_good_settings_reach_run(started: list[Settings]) -> None:
    code, output = _dans_lb(["--admin-port", "65535", "--grace", "0", "--workers", "2"],
                            {"DANS_LB_CONFIG": json.dumps(TABLE), "DANS_LB_TOKEN": "t"})
    assert code == 0, output
    (settings,) = started
    assert (settings.admin_port, settings.grace, settings.workers, settings.token) == \
        (65535, 0.0, 2, "t")
    assert settings.table.frontends[0].listen == 18080


def test_an_unexpected_exception_is_one_line_exit_70_and_debug_shows_it(
        monkeypatch: pytest.MonkeyPatch, started: list[Settings]) -> None:
    def broken(settings: Settings) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(lb._server, "run", broken)
    code, output = _dans_lb([])
    assert code == EXIT_BUG == 70
    _assert_one_line_error(code, output, "internal error in dans lb (KeyError: 'boom')")
    assert "--debug" in output
    result = CliRunner().invoke(dans, ["lb", "--debug"])
    assert isinstance(result.exception, KeyError)  # the traceback is the user's to see


# -- real processes ------------------------------------------------------------------------

def _run_lb(table: dict[str, Any], *args: str,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DANS_LB_CONFIG=json.dumps(table), DANS_LB_TOKEN=TOKEN,
               PYTHONPATH=str(ROOT))
    env.pop("DANS_LB_TOKEN_FILE", None)
    return subprocess.run(
        [sys.executable, "-m", "lb.cli", "--admin-host", "127.0.0.1", "--log-level", "warning",
         *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _listener(port: int, reuse_port: bool) -> socket.socket:
    s = socket.socket()
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


@pytest.mark.parametrize("workers, reuse_port", [(1, False), (1, True), (2, True)],
                         ids=["one-worker", "holder-has-reuseport", "worker-group"])
def test_a_frontend_port_in_use_is_refused_in_one_line(workers: int, reuse_port: bool) -> None:
    port = free_port()
    with _listener(port, reuse_port):
        done = _run_lb({"frontends": [frontend("w", port, {"a": ["127.0.0.1:1"]}, "a")]},
                       "--admin-port", str(free_port()), "--workers", str(workers))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in lines[0]


def test_a_second_lb_on_the_same_ports_is_refused(lb_process: Any) -> None:
    port = free_port()
    table = {"frontends": [frontend("w", port, {"a": ["127.0.0.1:1"]}, "a")]}
    first: LBProcess = lb_process(table)
    done = _run_lb(table, "--admin-port", str(free_port()))
    assert done.returncode != 0 and "Address already in use" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = _run_lb({"frontends": []}, "--admin-port", str(first.admin_port))
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"cannot serve the admin API on 127.0.0.1:{first.admin_port}" in done.stderr
    assert first.admin.healthy() and first.proc.poll() is None


def test_a_table_pushed_with_a_port_in_use_gets_400_in_a_worker_group(shared_lb: Any) -> None:
    proc: LBProcess = shared_lb({"frontends": []}, workers=2)
    port = free_port()
    with _listener(port, reuse_port=True):
        status, body = _admin(proc, "PUT", "/v1/routes", json.dumps(
            {"frontends": [frontend("w", port, {"a": ["127.0.0.1:1"]}, "a")]}).encode())
    assert status == 400 and "Address already in use" in body["error"]


def _admin(proc: LBProcess, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    with socket.create_connection(("127.0.0.1", proc.admin_port), timeout=10) as s:
        s.sendall(b"%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n%s"
                  % (method.encode(), path.encode(), TOKEN.encode(), len(body), body))
        answer = _read_all(s)
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def _read_all(s: socket.socket, deadline: float = 10.0) -> bytes:
    chunks = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        chunk = s.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("body, expected", [
    (b'{"frontends": [{"name": "w", "listen": 1, "timeouts": {"read": NaN}}]}',
     "NaN is not a JSON number"),
    (b'{"frontends": [], "x": Infinity}', "Infinity is not a JSON number"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"frontends": [{"name": "caf\xe9"}]}', "not UTF-8"),
    (json.dumps({"frontends": [{"name": "w", "listen": 18081, "active": "a",
                                "timeouts": {"header": 10 ** 30},
                                "groups": {"a": {"backends": ["h:1"]}}}]}).encode(),
     "timeouts.header must be a finite number"),
], ids=["nan", "infinity", "deep-nesting", "not-utf8", "huge-timeout"])
def test_a_bad_table_pushed_over_the_admin_api_is_a_400_json_error(
        shared_lb: Any, body: bytes, expected: str) -> None:
    proc: LBProcess = shared_lb({"frontends": []})
    status, answer = _admin(proc, "PUT", "/v1/routes", body)
    assert status == 400 and expected in answer["error"], answer
    assert "Traceback" not in proc.output()
    assert proc.admin.routes() == RoutingTable()


@pytest.mark.parametrize("sent, answered", [
    (b"", True),
    (b"GET /v1/status HTTP/1.1\r\nHost: x\r\n", True),
    (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
     + b"\r\n\r\nGET /v1/status HTTP/1.1\r\nHo", True),
    (b"PUT /v1/routes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
     + b"\r\nContent-Length: 100\r\n\r\n{", False),
], ids=["nothing", "half-a-head", "half-a-second-head", "stalled-body"])
def test_the_admin_api_times_out_a_slow_client(shared_lb: Any, sent: bytes,
                                               answered: bool) -> None:
    proc: LBProcess = shared_lb({"frontends": []}, args=("--admin-timeout", "0.5"))
    with socket.create_connection(("127.0.0.1", proc.admin_port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(sent)
        answer = _read_all(s)  # until the LB closes
        took = time.monotonic() - started
    assert 0.4 < took < 5, took
    timed_out = b"HTTP/1.1 408 Request Timeout\r\n"
    if answered:
        assert answer.endswith(b'{"error": "the request did not arrive in time"}'), answer
        assert answer.count(timed_out) == 1
    else:
        assert timed_out not in answer  # closed: aiohttp may have been answering
    assert proc.admin.healthy()  # others are still served
