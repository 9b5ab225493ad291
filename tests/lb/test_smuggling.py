"""Conformance and smuggling suite: raw bytes in, exact bytes at the backend, answers out.

Each test sends hostile bytes from a raw socket through a real LB process to a backend that
records every byte it gets (`tests.lb.raw.CaptureBackend`) and asserts what reached the
backend and which answer reached which client. Written from RFC 9112 and the known request
smuggling classes (CL.TE, TE.CL, TE.TE, Connection-nominated framing, early answers, chunk
framing, bare CR/LF, obs-fold, NUL, request forms, versions, pipelining, half-close).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.lb.raw import Answers, CaptureBackend, closed_soon, read_answers, talk
from tests.lb.support import LBProcess, LoopThread, free_port, frontend, wait_until

TIMEOUTS = {"connect": 1.0, "read": 3.0, "header": 1.0, "body": 1.0, "keepalive": 2.0,
            "tunnel": 5.0}


@pytest.fixture(scope="module")
def capture(loops: LoopThread) -> Iterator[CaptureBackend]:
    b = CaptureBackend(loops)
    yield b
    b.close()


@pytest.fixture(scope="module")
def lb(capture: CaptureBackend) -> Iterator[tuple[LBProcess, int]]:
    port = free_port()
    # Framing only: the edge's traceparent (on by default) is tests/lb/test_trace.py's.
    p = LBProcess({"frontends": [frontend("web", port, {"a": [capture.addr]}, "a",
                                          timeouts=TIMEOUTS, trace=False)]})
    yield p, port
    p.stop()


@pytest.fixture
def port(lb: tuple[LBProcess, int], capture: CaptureBackend) -> int:
    # What an earlier test sent may still be on its way to the backend (a loaded machine
    # delays the backend's thread): once the LB has no request in flight, wait until the
    # backend has been quiet for a moment before forgetting it (bounded).
    wait_until(lambda: lb[0].admin.status()["in_flight"] == 0, timeout=10, interval=0.02,
               what="the earlier test's requests to end")
    quiet_since, seen = time.monotonic(), len(capture.raw)
    deadline = quiet_since + 3.0
    while time.monotonic() - quiet_since < 0.05 and time.monotonic() < deadline:
        time.sleep(0.02)
        if len(capture.raw) != seen:
            quiet_since, seen = time.monotonic(), len(capture.raw)
    capture.seen.clear()
    for conn in capture.conns:  # pooled connections live on: forget what they carried
        conn.raw.clear()
    return lb[1]


def _paths(capture: CaptureBackend) -> list[bytes]:
    return [s.path for s in capture.seen]


REJECTED = {
    "cl-te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "te-cl": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
             b"Content-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    "te-te-xchunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-te-space-before-colon": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked"
                                b"\r\n\r\n0\r\n\r\n",
    "te-te-two-lines": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       b"Transfer-Encoding: x\r\n\r\n0\r\n\r\n",
    "te-te-vertical-tab": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n"
                          b"0\r\n\r\n",
    "te-te-not-final": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity"
                       b"\r\n\r\n0\r\n\r\n",
    "te-te-gzip": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                  b"0\r\n\r\n",
    "te-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl-two-values": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2"
                     b"\r\n\r\nab",
    "cl-list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\nab",
    "cl-plus": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\nab",
    "chunk-data-overrun": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\nhelloXX0\r\n\r\n",
    "chunk-bare-lf": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\nhello\n0\n\n",
    "chunk-padded-size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b" 5 \r\nhello\r\n0\r\n\r\n",
    "chunk-0x-size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk-ext-bare-lf": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5;a\nb\r\nhello\r\n0\r\n\r\n",
    "bare-lf-head": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare-cr-head": b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    "nul-in-target": b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\nHost: x\r\nX Y: a\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "connect": b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
    "http-0.9": b"GET /\r\n\r\n",
    "http-2.0": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "authority-form": b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n",
    "upgrade-with-body": b"POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: w\r\n"
                         b"Content-Length: 25\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    "long-target": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "many-headers": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 150 + b"\r\n",
    "huge-header": b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 70000 + b"\r\n\r\n",
}
STATUS = {"te-te-gzip": 501, "connect": 405, "http-0.9": 505, "http-2.0": 505,
          "long-target": 414, "many-headers": 431, "huge-header": 431}


@pytest.mark.parametrize("name", list(REJECTED))
def test_ambiguous_or_malformed_requests_are_refused_and_never_forwarded(
        port: int, capture: CaptureBackend, name: str) -> None:
    got = talk(port, REJECTED[name] + b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n", answers=2)
    assert [s for s, _, _ in got.done] == [STATUS.get(name, 400)], got.done
    assert got.done[0][2].get(b"connection") == b"close"
    assert capture.seen == [] or (_paths(capture) == [b"/"] and name.startswith("chunk")), \
        capture.raw
    assert b"/after" not in capture.raw and b"SMUGGLED" not in capture.raw


@pytest.mark.parametrize("nominated", [b"Content-Length", b"close, Content-Length",
                                       b"Transfer-Encoding", b"keep-alive, Host"])
def test_connection_cannot_nominate_framing_away_no_cross_client_poisoning(
        port: int, capture: CaptureBackend, nominated: bytes) -> None:
    """The issue's reproducer: the smuggled request stays body; the victim gets its own."""
    smuggled = b"GET /slow-smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    if b"Transfer-Encoding" in nominated:
        framing = b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
            len(smuggled), smuggled)
    else:
        framing = b"Content-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled)
    attacker = talk(port, b"POST /post HTTP/1.1\r\nHost: x\r\nConnection: " + nominated +
                    b"\r\n" + framing)
    victim = talk(port, b"GET /victim HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [(s, b) for s, b, _ in attacker.done] == [(200, b"/post")]
    assert [(s, b) for s, b, _ in victim.done] == [(200, b"/victim")]
    assert _paths(capture) == [b"/post", b"/victim"]
    assert capture.seen[0].body == smuggled


def test_chunk_extensions_are_dropped_and_bodies_reframed(
        port: int, capture: CaptureBackend) -> None:
    got = talk(port, b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert [(s, b) for s, b, _ in got.done] == [(200, b"/c")]
    assert capture.seen[0].body == b"hello"
    raw = capture.raw
    assert b"name=value" not in raw and b"X-Trailer" not in raw
    assert raw.endswith(b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_exact_bytes_of_a_forwarded_request(port: int, capture: CaptureBackend) -> None:
    talk(port, b"POST /exact?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nConnection: keep-alive, X-B"
               b"\r\nX-B: 2\r\nKeep-Alive: 5\r\nX-Forwarded-Port: 1\r\nContent-Length: 2\r\n\r\nok")
    assert capture.raw == (
        b"POST /exact?q=1 HTTP/1.1\r\nX-A: 1\r\nHost: h\r\nX-Forwarded-For: 127.0.0.1\r\n"
        b"X-Forwarded-Proto: http\r\nX-Forwarded-Port: %d\r\nX-Forwarded-Host: h\r\n"
        b"Content-Length: 2\r\n\r\nok" % port)


def test_repeated_requests_on_one_connection_are_each_forwarded_exactly(
        port: int, capture: CaptureBackend) -> None:
    # The connection reuses the head it built for an identical request: every field must
    # still count (a changed value, an added field, another version, a body).
    one = b"GET /same HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n"
    requests = [one, one, b"GET /same HTTP/1.1\r\nHost: h\r\nX-A: 2\r\n\r\n", one,
                b"GET /same HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok",
                b"GET /same HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 3\r\n\r\n", one]
    got = talk(port, b"".join(requests), answers=len(requests))
    assert [b for _, b, _ in got.done] == [b"/same"] * len(requests)
    xa = [dict(seen.headers).get(b"X-A") for seen in capture.seen]
    assert xa == [b"1", b"1", b"2", b"1", b"1", b"1", b"1"]
    assert [seen.body for seen in capture.seen] == [b"", b"", b"", b"", b"ok", b"", b""]
    assert [dict(seen.headers).get(b"X-B") for seen in capture.seen][5] == b"3"
    assert capture.raw.count(b"X-Forwarded-For: 127.0.0.1\r\n") == len(requests)


def test_absolute_form_target_wins_over_host(port: int, capture: CaptureBackend) -> None:
    got = talk(port, b"GET http://good:81/p?x=1 HTTP/1.1\r\nHost: evil\r\n\r\n")
    assert got.done[0][:2] == (200, b"/p?x=1")
    assert (b"Host", b"good:81") in capture.seen[0].headers and b"evil" not in capture.raw


def test_early_answer_never_parses_the_body_as_a_request(
        port: int, capture: CaptureBackend) -> None:
    """The backend answers before the body ends; the rest of the body, which looks like a
    request, is read and dropped (bounded), never forwarded as one."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        got = Answers()
        read_answers(s, got, 1, 5)
        assert [(st, b) for st, b, _ in got.done] == [(200, b"/early")]
        assert got.done[0][2].get(b"connection") == b"close"
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled) + smuggled)
        assert closed_soon(s, 5)
    finally:
        s.close()
    assert _paths(capture) == [b"/early"]


def test_pipelined_requests_are_answered_in_order(port: int, capture: CaptureBackend) -> None:
    got = talk(port, b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: x\r\n\r\n", answers=3)
    assert [b for _, b, _ in got.done] == [b"/1", b"/2", b"/3"]
    assert _paths(capture) == [b"/1", b"/2", b"/3"] and capture.seen[1].body == b"abc"


def test_half_closed_client_still_gets_its_answer(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        got = Answers()
        read_answers(s, got, 1, 5)
    assert [(st, b) for st, b, _ in got.done] == [(200, b"/half")]


def test_expect_100_continue(port: int, capture: CaptureBackend) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4"
                  b"\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"data")
        got = Answers()
        read_answers(s, got, 1, 5)
    assert got.done[0][:2] == (200, b"/e") and capture.seen[0].body == b"data"
    assert b"Expect" not in capture.raw


def test_stalled_head_gets_408_in_time(lb: tuple[LBProcess, int]) -> None:
    with socket.create_connection(("127.0.0.1", lb[1]), timeout=5) as s:
        started = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # slowloris: the head never ends
        got = Answers()
        read_answers(s, got, 1, 5)
    assert got.done[0][0] == 408 and time.monotonic() - started < 3


def test_stalled_body_gets_408_and_leaves_the_in_flight_count(
        lb: tuple[LBProcess, int], capture: CaptureBackend) -> None:
    proc, port = lb
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx")
        wait_until(lambda: proc.admin.status()["in_flight"] == 1, timeout=5, what="in flight")
        got = Answers()
        read_answers(s, got, 1, 5)
    assert got.done[0][0] == 408
    wait_until(lambda: proc.admin.status()["in_flight"] == 0, timeout=5, what="drained")
    assert "body_timeout" in proc.admin.metrics()


def test_idle_keep_alive_connection_is_closed(lb: tuple[LBProcess, int]) -> None:
    with socket.create_connection(("127.0.0.1", lb[1]), timeout=5) as s:
        assert closed_soon(s, 5)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_memory_is_bounded_when_the_backend_does_not_read(
        lb: tuple[LBProcess, int], capture: CaptureBackend) -> None:
    """A 64 MiB upload to a backend that stops reading: the LB holds a bounded amount."""
    proc, port = lb
    before = _rss(proc.proc.pid)
    total = 64 << 20
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
        s.settimeout(0.5)
        block = b"u" * 65536
        deadline = time.monotonic() + 10
        while sent < total and time.monotonic() < deadline:
            try:
                sent += s.send(block)
            except TimeoutError:
                break  # the LB stopped reading: back-pressure reached the client
        grown = _rss(proc.proc.pid) - before
    assert sent < total  # the upload was held back, not swallowed
    assert grown < 8 << 20, f"the LB grew by {grown} bytes"


def test_memory_is_bounded_when_the_client_does_not_read(lb: tuple[LBProcess, int]) -> None:
    """A 64 MiB answer to a client that does not read: the LB holds a bounded amount."""
    proc, port = lb
    before = _rss(proc.proc.pid)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (64 << 20))
        time.sleep(0.5)  # not a synchronisation: how long the client refuses to read
        wait_until(lambda: proc.admin.status()["in_flight"] == 1, timeout=5, what="in flight")
        grown = _rss(proc.proc.pid) - before
    assert grown < 8 << 20, f"the LB grew by {grown} bytes"


def test_backend_connections_are_reused(port: int, capture: CaptureBackend) -> None:
    for path in (b"/r1", b"/r2", b"/r3"):
        assert talk(port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).done[0][1] == path
    # One pooled keep-alive connection carried all three.
    assert sum(1 for c in capture.conns if c.raw) == 1


def test_tcp_relay_cuts_idle_connections(capture: CaptureBackend) -> None:
    port = free_port()
    relay = LBProcess({"frontends": [frontend("db", port, {"a": [capture.addr]}, "a",
                                              mode="tcp", timeouts={"tunnel": 0.5})]})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /tcp HTTP/1.1\r\nHost: x\r\n\r\n")
            got = Answers()
            read_answers(s, got, 1, 5)
            assert got.done[0][1] == b"/tcp"
            started = time.monotonic()
            assert closed_soon(s, 5) and time.monotonic() - started < 3
    finally:
        relay.stop()


def test_client_that_stops_reading_is_timed_out(lb: tuple[LBProcess, int]) -> None:
    """A client that sends a request and never reads its (large) answer does not hold the
    request in flight beyond the body timeout."""
    proc, port = lb
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (64 << 20))
        wait_until(lambda: proc.admin.status()["in_flight"] == 0, timeout=10,
                   what="the stalled answer to leave the in-flight count")
    assert "client_timeout" in proc.admin.metrics()
