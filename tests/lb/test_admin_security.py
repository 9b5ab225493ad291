"""The admin API's token check: constant-time, never a 500, failures logged and rate-limited;
and the admin pipe (the far end of dans's channel) against a real LB process."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest

from lb._admin import FailedAttempts, token_matches
from lb._admin_pipe import run_pipe
from tests.lb.support import TOKEN, LBProcess, free_port


@pytest.mark.parametrize(("header", "expected", "ok"), [
    (f"Bearer {TOKEN}", TOKEN, True),
    (f"bearer  {TOKEN} ", TOKEN, True),
    (f"Basic {TOKEN}", TOKEN, False),
    ("Bearer wrong", TOKEN, False),
    ("Bearer ", TOKEN, False),
    ("", TOKEN, False),
    (f"Bearer {TOKEN}", None, False),
    ("Bearer \udcc3\udca9", TOKEN, False),  # undecodable bytes as aiohttp keeps them
    ("Bearer été", TOKEN, False),
    (f"Bearer {TOKEN}x", TOKEN, False),
], ids=["right", "case-and-spaces", "basic", "wrong", "empty-token", "no-header",
        "no-token-set", "surrogates", "non-ascii", "longer"])
def test_token_matches(header: str, expected: str | None, ok: bool) -> None:
    assert token_matches(header, expected) is ok


def test_failed_attempts_block_a_peer_for_the_window_only() -> None:
    now = [0.0]
    fails = FailedAttempts(limit=3, window=10.0, clock=lambda: now[0])
    for _ in range(3):
        assert fails.blocked_for("a") == 0
        fails.record("a")
    assert fails.blocked_for("a") == pytest.approx(10.0)
    assert fails.blocked_for("b") == 0
    now[0] = 10.5
    assert fails.blocked_for("a") == 0


def raw_status(port: int, auth: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /v1/routes HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth
                     + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_the_admin_api_refuses_bad_tokens_and_then_rate_limits() -> None:
    lb = LBProcess({"frontends": []})
    try:
        bad = [b"Bearer \xc3\xa9t\xc3\xa9", b"Bearer \xff\xfe", b"Bearer wrong", b"Basic x"]
        assert [raw_status(lb.admin_port, a) for a in bad] == [401] * 4
        statuses = [raw_status(lb.admin_port, b"Bearer guess") for _ in range(8)]
        assert statuses[:6] == [401] * 6 and statuses[6:] == [429, 429]
        # Blocked means blocked: even the right token waits out the window.
        assert raw_status(lb.admin_port, f"Bearer {TOKEN}".encode()) == 429
        assert lb.admin.healthy()  # the liveness probe needs no token and is never blocked
        assert "missing or wrong token" in lb.output()
    finally:
        lb.stop()


def test_the_admin_pipe_adds_the_token_and_keeps_one_connection(tmp_path: Path) -> None:
    lb = LBProcess({"frontends": []})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    lines = [{"id": 1, "method": "GET", "path": "/v1/routes", "body": None, "timeout": 5},
             {"id": 2, "method": "PUT", "path": "/v1/routes", "timeout": 5,
              "body": json.dumps({"frontends": []})},
             {"id": 3, "method": "GET", "path": "/v1/frontends/x/groups/y/drained"}]
    out = io.BytesIO()
    try:
        inp = io.BytesIO(b"".join(json.dumps(line).encode() + b"\n" for line in lines)
                         + b"not json\n")
        assert run_pipe("127.0.0.1", lb.admin_port, str(token_file), inp, out) == 0
    finally:
        lb.stop()
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(a["id"], a.get("status")) for a in answers] == [(1, 200), (2, 200), (3, 404),
                                                             (None, None)]
    assert json.loads(answers[0]["body"]) == {"frontends": []}
    assert "bad request line" in answers[3]["error"]


def test_the_admin_pipe_says_when_the_lb_is_not_there(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t")
    port = free_port()
    out = io.BytesIO()
    inp = io.BytesIO(b'{"id": 1, "method": "GET", "path": "/healthz"}\n')
    assert run_pipe("127.0.0.1", port, str(token_file), inp, out) == 0
    assert "cannot reach the LB" in json.loads(out.getvalue())["error"]
    assert run_pipe("127.0.0.1", port, str(tmp_path / "missing"), io.BytesIO(), out) == 1
