"""The LB on real loopback sockets: switching, draining, retries, timeouts, bad input, SIGTERM."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from lb.errors import LBError
from lb.table import RoutingTable
from tests.lb.support import (
    Backend,
    LBProcess,
    LoopThread,
    RawBackend,
    free_port,
    frontend,
    get,
    load,
    raw_request,
    wait_until,
)

StartBackend = Callable[[str], Backend]
StartLB = Callable[..., LBProcess]


def two_groups(a: Backend, b: Backend, port: int, **extra: Any) -> dict[str, Any]:
    return {"frontends": [frontend("web", port, {"a": [a.addr], "b": [b.addr]}, "a",
                                   **extra)]}


SWITCH_EVERY = 200  # requests


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_switch_under_steady_load_loses_no_request(
    loops: LoopThread, backend: StartBackend, shared_lb: StartLB, workers: int,
) -> None:
    a, b = backend("A"), backend("B")
    port = free_port()
    lb = shared_lb(two_groups(a, b, port), workers=workers)
    url = f"http://127.0.0.1:{port}/"
    targets = ["b", "a", "b", "a", "b"]
    # A switch after every SWITCH_EVERY requests sent, while 8 connections keep sending:
    # each switch lands with requests in flight, and the load is bounded by its count.
    reached = [threading.Event() for _ in targets]

    def progress(sent: int) -> None:
        for k, event in enumerate(reached):
            if sent >= (k + 1) * SWITCH_EVERY:
                event.set()

    done = threading.Event()
    fut = asyncio.run_coroutine_threadsafe(
        load(url, count=SWITCH_EVERY * (len(targets) + 1), seconds=30, concurrency=8,
             on_progress=progress), loops.loop)
    fut.add_done_callback(lambda _: done.set())
    switches = 0
    for event, target in zip(reached, targets, strict=True):
        assert event.wait(30), "the load stalled"
        if done.is_set():
            break
        assert lb.admin.switch("web", target) in ("a", "b")
        switches += 1
    result = fut.result(30)
    assert switches >= 3, "the load finished before the switches: raise SWITCH_EVERY"
    assert result.total == SWITCH_EVERY * (len(targets) + 1)
    assert result.errors == []
    assert set(result.statuses) == {200}, result.statuses
    assert set(result.bodies) == {"A", "B"}
    assert lb.admin.status()["frontends"]["web"]["active"] in ("a", "b")


def test_drain_finishes_when_in_flight_requests_end(
    loops: LoopThread, backend: StartBackend, shared_lb: StartLB,
) -> None:
    a, b = backend("A"), backend("B")
    port = free_port()
    lb = shared_lb(two_groups(a, b, port))
    held: list[tuple[int, str]] = []
    threads = [threading.Thread(target=lambda: held.append(get(f"http://127.0.0.1:{port}/hold")))
               for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: lb.admin.status()["frontends"]["web"]["groups"]["a"]["in_flight"] == 3,
               timeout=10, what="3 requests in flight in group a")
    with pytest.raises(LBError, match=r"409.*switch first"):
        lb.admin.drain("web", "a")
    assert lb.admin.switch("web", "b") == "a"
    assert lb.admin.drain("web", "a") == 3
    with pytest.raises(LBError, match="still has 3 request"):
        lb.admin.wait_drained("web", "a", timeout=0.5)
    assert get(f"http://127.0.0.1:{port}/") == (200, "B")  # new requests: the new group
    status = lb.admin.status()["frontends"]["web"]["groups"]
    assert status["a"]["state"] == "draining" and status["a"]["in_flight"] == 3
    a.release()
    lb.admin.wait_drained("web", "a", timeout=10)
    for t in threads:
        t.join(10)
    assert held == [(200, "A")] * 3
    assert lb.admin.routes().frontend("web").groups["a"].state == "draining"


def test_backend_that_disappears_is_retried_elsewhere(
    loops: LoopThread, backend: StartBackend, lb_process: StartLB,
) -> None:
    a1, a2 = backend("A1"), backend("A2")
    port = free_port()
    lb = lb_process({"frontends": [frontend("web", port, {"a": [a1.addr, a2.addr]}, "a")]})
    url = f"http://127.0.0.1:{port}/"
    warm = loops.run(load(url, count=50, seconds=10, concurrency=4))
    assert set(warm.bodies) == {"A1", "A2"}
    a1.stop()
    result = loops.run(load(url, count=300, seconds=10, concurrency=4))
    assert result.errors == [] and set(result.statuses) == {200}, result
    assert set(result.bodies) == {"A2"}
    metrics = lb.admin.metrics()
    assert ('dans_lb_errors_total{frontend="web",group="a",version="deployed",'
            'kind="connect"}') in metrics
    eps = lb.admin.status()["frontends"]["web"]["groups"]["a"]["backends"][0]["endpoints"]
    assert eps[0]["failures"] >= 1


def test_post_body_is_not_resent_but_connect_failures_are(
    backend: StartBackend, shared_lb: StartLB,
) -> None:
    a = backend("A")
    dead = free_port()
    port = free_port()
    shared_lb({"frontends": [frontend("web", port,
                                       {"a": [f"127.0.0.1:{dead}", a.addr]}, "a")]})
    for _ in range(6):  # round-robin hits the dead endpoint: retried, never an error
        status, body = get(f"http://127.0.0.1:{port}/echo", data=b"x" * 5000, method="POST")
        assert status == 200 and json.loads(body)["length"] == 5000


@pytest.mark.parametrize(
    "groups, status",
    [({"a": ["127.0.0.1:1"]}, 502), ({"a": ["tasks.no-such-service.invalid:80"]}, 503)],
    ids=["refused", "unresolvable"],
)
def test_no_reachable_backend(shared_lb: StartLB, groups: dict[str, list[str]],
                              status: int) -> None:
    port = free_port()
    shared_lb({"frontends": [frontend("web", port, groups, "a")]})
    assert get(f"http://127.0.0.1:{port}/")[0] == status


def test_hanging_backend_hits_the_read_timeout(backend: StartBackend,
                                              shared_lb: StartLB) -> None:
    a = backend("A")
    port = free_port()
    shared_lb({"frontends": [frontend("web", port, {"a": [a.addr]}, "a",
                                       timeouts={"connect": 1, "read": 0.5})]})
    started = time.monotonic()
    assert get(f"http://127.0.0.1:{port}/sleep?s=5")[0] == 504
    assert time.monotonic() - started < 3
    assert get(f"http://127.0.0.1:{port}/") == (200, "A")  # the LB is fine afterwards


@pytest.mark.parametrize("data", [
    b"GARBAGE \x00\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
], ids=["garbage", "version", "length", "header", "two-lengths"])
def test_malformed_requests_get_400(backend: StartBackend, shared_lb: StartLB,
                                    data: bytes) -> None:
    a = backend("A")
    port = free_port()
    lb = shared_lb({"frontends": [frontend("web", port, {"a": [a.addr]}, "a")]})
    answer = raw_request(port, data)
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] in (b"400", b"505"), answer
    assert a.hits == 0
    assert get(f"http://127.0.0.1:{port}/") == (200, "A")
    assert lb.proc.poll() is None


def test_headers_and_streamed_bodies(backend: StartBackend, shared_lb: StartLB) -> None:
    a = backend("A")
    port = free_port()
    shared_lb({"frontends": [frontend("web", port, {"a": [a.addr]}, "a")]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("PUT", "/echo?q=1", body=b"y" * 3_000_000,
                 headers={"Connection": "keep-alive, X-Secret", "X-Secret": "no",
                          "X-Keep": "yes", "X-Forwarded-For": "10.9.9.9"})
    resp = conn.getresponse()
    seen = json.loads(resp.read())
    conn.close()
    assert resp.status == 200 and seen["length"] == 3_000_000 and seen["path"] == "/echo?q=1"
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert "x-secret" not in headers and headers["x-keep"] == "yes"
    assert headers["x-forwarded-for"] == "10.9.9.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http" and headers["x-forwarded-port"] == str(port)
    status, big = get(f"http://127.0.0.1:{port}/big?n=5000000")
    assert status == 200 and len(big) == 5_000_000


def test_tcp_relay_forwards_connections(backend: StartBackend, lb_process: StartLB) -> None:
    a = backend("A")
    port = free_port()
    lb = lb_process({"frontends": [frontend("relay", port, {"old": [f"localhost:{a.port}"]},
                                            "old", mode="tcp")]})
    for _ in range(3):
        assert get(f"http://127.0.0.1:{port}/") == (200, "A")
    assert get(f"http://127.0.0.1:{port}/big?n=3000000")[1] == "x" * 3_000_000
    assert lb.admin.status()["frontends"]["relay"]["groups"]["old"]["requests"] >= 4


def test_sigterm_finishes_in_flight_then_exits(backend: StartBackend,
                                               lb_process: StartLB) -> None:
    a = backend("A")
    port = free_port()
    lb = lb_process({"frontends": [frontend("web", port, {"a": [a.addr]}, "a")]})
    held: list[tuple[int, str]] = []
    threads = [threading.Thread(target=lambda: held.append(get(f"http://127.0.0.1:{port}/hold")))
               for _ in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: lb.admin.status()["in_flight"] == 2, timeout=10, what="2 in flight")
    lb.terminate()
    wait_until(lambda: lb.admin.status()["closing"], timeout=5, what="the LB closing")
    with pytest.raises(OSError):
        raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2)
    assert lb.proc.poll() is None  # still finishing the held requests
    a.release()
    for t in threads:
        t.join(10)
    assert held == [(200, "A")] * 2
    assert lb.proc.wait(15) == 0


@pytest.mark.parametrize("call", [
    ("GET", "/v1/status", None),
    ("GET", "/v1/routes", None),
    ("PUT", "/v1/routes", {"frontends": []}),
    ("POST", "/v1/frontends/web/switch", {"group": "b"}),
    ("POST", "/v1/frontends/web/groups/b/drain", None),
    ("GET", "/metrics", None),
], ids=["status", "routes", "set-routes", "switch", "drain", "metrics"])
def test_admin_without_the_right_token_gets_401_and_changes_nothing(
    backend: StartBackend, lb_process: StartLB, call: tuple[str, str, Any]
) -> None:
    import urllib.error
    import urllib.request

    a, b = backend("A"), backend("B")
    port = free_port()
    lb = lb_process(two_groups(a, b, port))
    before = lb.admin.routes()
    method, path, body = call
    # Three failures from one peer: under the LB's limit (10 a minute), so each is a 401.
    for token in (None, "wrong", ""):
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        req = urllib.request.Request(f"http://127.0.0.1:{lb.admin_port}{path}", method=method,
                                     headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        err.value.close()
        assert err.value.code == 401, f"token {token!r}"
        assert lb.admin.routes() == before, f"token {token!r}"
        assert get(f"http://127.0.0.1:{port}/") == (200, "A"), f"token {token!r}"


def test_admin_commands_and_errors(backend: StartBackend, lb_process: StartLB) -> None:
    a, b = backend("A"), backend("B")
    port, port2 = free_port(), free_port()
    lb = lb_process(two_groups(a, b, port))
    table = RoutingTable.from_dict({"frontends": [
        frontend("web", port, {"b": [b.addr]}, "b"),
        frontend("api", port2, {"x": [a.addr]}, "x"),
    ]})
    applied = lb.admin.set_routes(table)
    assert applied == table
    assert get(f"http://127.0.0.1:{port}/") == (200, "B")
    assert get(f"http://127.0.0.1:{port2}/") == (200, "A")
    with pytest.raises(LBError, match=r"404.*no frontend named 'nope'"):
        lb.admin.switch("nope", "a")
    with pytest.raises(LBError, match=r"404.*no group named 'zz'"):
        lb.admin.drain("web", "zz")
    with pytest.raises(LBError, match=r"400.*active group 'q'"):
        lb.admin._call("PUT", "/v1/routes", {"frontends": [
            frontend("w", free_port(), {"a": [a.addr]}, "q")]})
    with pytest.raises(LBError, match=re.escape('400 expected {"group": NAME}')):
        lb.admin._call("POST", "/v1/frontends/web/switch", "x")
    assert lb.admin.routes() == table
    metrics = lb.admin.metrics()
    assert "dans_lb_request_duration_seconds_bucket" in metrics
    assert 'dans_lb_in_flight{frontend="web",group="b",version="deployed"} 0' in metrics
    wrong = type(lb.admin)(f"http://127.0.0.1:{free_port()}", "t")
    with pytest.raises(LBError, match="cannot reach"):
        wrong.status()


def test_keep_alive_head_pipelining_and_chunked_bodies(
    backend: StartBackend, shared_lb: StartLB
) -> None:
    a = backend("A")
    port = free_port()
    shared_lb({"frontends": [frontend("web", port, {"a": [a.addr]}, "a")]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("HEAD", "/")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b"" and head.getheader("Content-Length") == "1"
    conn.request("POST", "/echo", body=iter([b"ab", b"cde", b"f" * 70000]), encode_chunked=True)
    echoed = conn.getresponse()
    assert json.loads(echoed.read())["length"] == 70005
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"A"  # the same connection all along
    conn.close()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 2 and b"\r\n\r\nA" in data and b'"/echo"' in data


def test_a_client_that_goes_away_frees_its_request(
    backend: StartBackend, shared_lb: StartLB
) -> None:
    a = backend("A")
    port = free_port()
    lb = shared_lb({"frontends": [frontend("web", port, {"a": [a.addr]}, "a")]})
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: lb.admin.status()["in_flight"] == 1, timeout=10, what="1 in flight")
    s.close()
    a.release()
    wait_until(lambda: lb.admin.status()["in_flight"] == 0, timeout=10, what="0 in flight")
    assert get(f"http://127.0.0.1:{port}/") == (200, "A")


def test_websocket_upgrade_is_tunnelled(loops: LoopThread, backend: StartBackend,
                                        shared_lb: StartLB) -> None:
    a = backend("A")
    port = free_port()
    lb = shared_lb({"frontends": [frontend("web", port, {"a": [a.addr]}, "a")]})

    async def talk() -> list[str]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                replies = []
                for word in ("one", "two"):
                    await ws.send_str(word)
                    replies.append((await ws.receive(timeout=5)).data)
                return replies

    assert loops.run(talk()) == ["A:one", "A:two"]
    wait_until(lambda: lb.admin.status()["in_flight"] == 0, timeout=10, what="tunnel closed")


@pytest.mark.parametrize("answer, request_head, expected", [
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
     b"Connection: close\r\n\r\nok",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz",
     b"ok"),
    (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\nHELLO",
     b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n",
     b"HELLO"),
], ids=["interim-then-final", "switch-then-data"])
def test_bytes_after_an_interim_or_101_head_in_the_same_read_are_kept(
        loops: LoopThread, shared_lb: StartLB, answer: bytes, request_head: bytes,
        expected: bytes) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)  # one write: the LB gets both heads (or head + data) together
        await writer.drain()
        await reader.read()  # until the LB closes its side
        writer.close()

    server, port = _raw_backend_behind_lb(loops, shared_lb, serve)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(request_head)
            got = b""
            deadline = time.monotonic() + 5
            while not got.endswith(expected) and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        assert got.endswith(expected), got
        assert b" 100 " not in got  # the interim answer is not passed on
    finally:
        server.close()


def _raw_backend_behind_lb(loops: LoopThread, lb_process: StartLB,
                           serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                           Awaitable[None]]) -> tuple[RawBackend, int]:
    """A hand-written backend on loopback and an LB process whose frontend `web` sends to
    it; returns the backend (close it when done) and the LB's port."""
    server = RawBackend(loops, serve)
    port = free_port()
    lb_process({"frontends": [frontend("web", port, {"a": [server.addr]}, "a")]})
    return server, port


def test_an_answer_nobody_asked_for_never_reaches_a_client(
        loops: LoopThread, shared_lb: StartLB) -> None:
    # The first backend connection answers its request twice in one write: the second
    # answer must neither follow the first to the client nor wait in the pool for the
    # next request (response poisoning by a broken backend).
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
               b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale",
               b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server, port = _raw_backend_behind_lb(loops, shared_lb, serve)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        bodies = []
        for _ in range(2):
            conn.request("GET", "/")
            resp = conn.getresponse()
            bodies.append(resp.read())
        conn.close()
        assert bodies == [b"first", b"fresh"]
    finally:
        server.close()


def test_a_frontend_reopened_on_its_own_port_takes_it_again(
        backend: StartBackend, shared_lb: StartLB) -> None:
    # The LB binds its ports alone (no SO_REUSEPORT): a table that changes a frontend's
    # mode closes its listener and opens a new one on the same port in one command.
    a = backend("A")
    port = free_port()
    lb = shared_lb({"frontends": [frontend("web", port, {"a": [a.addr]}, "a")]})
    assert get(f"http://127.0.0.1:{port}/") == (200, "A")
    for mode in ("tcp", "http"):
        lb.admin.set_routes(RoutingTable.from_dict(
            {"frontends": [frontend("web", port, {"a": [a.addr]}, "a", mode=mode)]}))
        assert get(f"http://127.0.0.1:{port}/") == (200, "A")
        assert lb.admin.routes().frontend("web").mode == mode
