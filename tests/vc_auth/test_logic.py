"""The example's own logic, locally: tokens per Auth version, trace context, judging, and
the four roles served on loopback (a consistent transaction succeeds with one trace id; one
whose two Auth calls reach different versions fails and is seen as mixed)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from tests.vc_auth.app import loadgen

from vcauth.logic import child_traceparent, issue, judge, trace_id, verify  # isort: skip
from vcauth.server import make_app  # isort: skip

USERS = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)


@given(USERS)
def test_each_version_verifies_its_own_tokens_only(user: str) -> None:
    one, two = issue("1", user), issue("2", user)
    assert verify("1", one) == user and verify("2", two) == user
    assert verify("2", one) is None and verify("1", two) is None  # the incompatible change


@pytest.mark.parametrize("token", ["", "v1.alice.0000000000000000", "v1.alice", "v2~e30~00",
                                   "v1.al ice." + "0" * 16, "v2~not-base64~" + "0" * 32])
def test_forged_or_malformed_tokens_fail(token: str) -> None:
    assert verify("1", token) is None and verify("2", token) is None


def test_a_tampered_v2_payload_fails() -> None:
    token = issue("2", "alice")
    _, payload, mac = token.split("~")
    other = issue("2", "mallory").split("~")[1]
    assert verify("2", f"v2~{other}~{mac}") is None
    assert verify("2", f"v2~{payload}~{mac}") == "alice"


def test_child_traceparent_keeps_the_trace_and_makes_a_new_span() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    a, b = child_traceparent(parent), child_traceparent(parent)
    assert trace_id(a) == trace_id(b) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert a != b and a.split("-")[2] != parent.split("-")[2]
    fresh = child_traceparent("junk")
    assert trace_id(fresh) is not None and trace_id("00-" + "0" * 32 + "-" + "1" * 16 + "-01") \
        is None


@pytest.mark.parametrize("status, seen, want", [
    (200, {"portal": ["1"], "auth": ["1", "1"]}, "ok"),
    (502, {"portal": ["1"], "auth": ["1"]}, "failed"),
    (502, {"portal": ["1"], "auth": ["1", "2"]}, "mixed"),
    (200, {"auth": ["2", "1"]}, "mixed"),
], ids=["ok", "failed", "mixed-failed", "mixed-ok"])
def test_judging_a_transaction(status: int, seen: dict[str, list[str]], want: str) -> None:
    assert judge(status, seen) == want
    assert loadgen().classify(status, {"seen": seen})[0] == want


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def _transaction(portal_auth: str, proc_auth: str) -> tuple[int, dict[str, Any]]:
    runners = []
    try:
        urls: dict[str, str] = {}
        for name, role, version in (("db", "db", "1"), ("auth1", "auth", "1"),
                                    ("auth2", "auth", "2")):
            runner, urls[name] = await _serve(make_app(role, version, {}))
            runners.append(runner)
        runner, urls["proc"] = await _serve(make_app("proc", "1", {
            "AUTH_URL": urls[proc_auth], "DB_URL": urls["db"]}))
        runners.append(runner)
        runner, urls["portal"] = await _serve(make_app("portal", "1", {
            "AUTH_URL": urls[portal_auth], "PROC_URL": urls["proc"]}))
        runners.append(runner)
        parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        async with aiohttp.ClientSession() as s, \
                s.get(urls["portal"] + "/tx?user=bob", headers={"traceparent": parent}) as r:
            return r.status, json.loads(await r.text())
    finally:
        for runner in runners:
            await runner.cleanup()


def test_a_consistent_transaction_succeeds_under_one_trace() -> None:
    status, answer = asyncio.run(_transaction("auth1", "auth1"))
    assert status == 200, answer
    assert answer["seen"] == {"portal": ["1"], "auth": ["1", "1"], "proc": ["1"], "db": ["1"]}
    # Every hop saw the edge's trace id: the app propagates trace context.
    assert {t for ids in answer["traces"].values() for t in ids} == {
        "4bf92f3577b34da6a3ce929d0e0e4736"}
    assert loadgen().classify(status, answer) == ("ok", "1", True)


def test_a_token_from_v1_checked_by_v2_fails_the_transaction_as_mixed() -> None:
    status, answer = asyncio.run(_transaction("auth1", "auth2"))
    assert status == 502 and "rejects the token" in answer["error"]
    assert answer["seen"]["auth"] == ["1", "2"]
    assert loadgen().classify(status, answer)[0] == "mixed"
