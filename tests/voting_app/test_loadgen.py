"""loadgen against a local server on a real socket: counting, mixed chains, bounds."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from aiohttp import web

from tests.voting_app.stacks import load_loadgen

loadgen = load_loadgen()


@pytest.mark.parametrize(
    ("chain", "mixed"),
    [
        ("vote@1,worker@1", False),
        ("vote@1,worker@2-change-api", True),
        ("vote@2-add-api", False),
        ("", False),
        (None, False),
        ("vote@2, worker@2", False),
    ],
    ids=["same", "crossed", "alone", "empty", "absent", "spaces"],
)
def test_is_mixed(chain: str | None, mixed: bool) -> None:
    assert loadgen.is_mixed(chain) is mixed


async def _serve_and_load(**load: Any) -> dict[str, Any]:
    answers = itertools.cycle([
        (200, "vote@1,worker@1"),
        (200, "vote@1,worker@2"),
        (502, "vote@2,worker@1"),
        (503, "vote@2"),
    ])

    async def vote(request: web.Request) -> web.Response:
        body = await request.json()
        assert body["vote"] in ("a", "b") and body["voter_id"]
        status, chain = next(answers)
        payload = {"worker_status": 404} if status == 502 else {}
        return web.json_response(payload, status=status, headers={"X-Served-By": chain})

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text="<html></html>", headers={"X-Served-By": "vote@2"})

    app = web.Application()
    app.router.add_post("/api/vote", vote)
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return dict(await loadgen.run_load(f"http://127.0.0.1:{port}", **load))
    finally:
        await runner.cleanup()


def test_counts_ok_failed_and_mixed() -> None:
    report = asyncio.run(_serve_and_load(concurrency=1, duration=10, max_requests=40))
    assert report["total"] == 40
    assert (report["ok"], report["failed"], report["mixed"], report["mixed_failed"]) == (
        20, 20, 20, 10)
    assert report["errors"] == {"HTTP 502 (worker 404)": 10, "HTTP 503": 10}
    assert report["chains"]["vote@2,worker@1"] == {"ok": 0, "failed": 10}
    assert sum(s["ok"] + s["failed"] for s in report["timeline"]) == 40
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["max_ms"]


def test_stops_at_its_duration() -> None:
    begin = time.monotonic()
    report = asyncio.run(_serve_and_load(concurrency=4, duration=1.0))
    assert time.monotonic() - begin < 5
    assert report["total"] > 0 and report["duration_s"] < 3


def test_unreachable_target_fails_visibly() -> None:
    report = asyncio.run(loadgen.run_load("http://127.0.0.1:9", 2, 0.5, 10, timeout=1))
    assert report["ok"] == 0 and report["failed"] == report["total"] > 0
    assert report["mixed"] == 0


def test_records_every_request_and_reads_pages_at_a_bounded_rate() -> None:
    records: list[dict[str, Any]] = []
    begin = time.time()
    report = asyncio.run(_serve_and_load(concurrency=2, duration=10, max_requests=8,
                                         page=True, interval=0.2, on_request=records.append))
    assert report["total"] == len(records) == 8
    assert report["ok"] == 8 and set(report["chains"]) == {"vote@2"}  # GET / only
    assert all(r["status"] == 200 and r["ok"] and r["chain"] == "vote@2" for r in records)
    assert all(begin <= r["t"] <= time.time() and r["ms"] >= 0 for r in records)
    # Two readers, each at most one request every 0.2 s: 8 requests take at least 0.6 s.
    assert max(r["t"] for r in records) - min(r["t"] for r in records) >= 0.55


def test_the_record_of_a_failed_vote_says_why() -> None:
    records: list[dict[str, Any]] = []
    asyncio.run(_serve_and_load(concurrency=1, duration=10, max_requests=4,
                                on_request=records.append))
    assert [(r["status"], r["ok"], r["error"]) for r in records] == [
        (200, True, None), (200, True, None), (502, False, "HTTP 502 (worker 404)"),
        (503, False, "HTTP 503")]
