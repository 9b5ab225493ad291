"""Request and response heads, and chunked framing, as the fast proxy parses them."""

from __future__ import annotations

import pytest

from lb import http_wire
from lb.http_wire import BadRequest, Chunked, parse_request, parse_response


def test_request_head_for_backend_drops_hop_by_hop_and_sets_forwarded() -> None:
    req = parse_request(b"POST /a?b=1 HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, X-Tmp\r\n"
                        b"X-Tmp: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.0.0.1\r\n"
                        b"Content-Length: 3\r\nX-App: y")
    assert (req.method, req.target, req.length, req.keep_alive) == (b"POST", b"/a?b=1", 3, True)
    head = req.head_for_backend(b"127.0.0.1", b"80")
    assert head.startswith(b"POST /a?b=1 HTTP/1.1\r\nHost: shop\r\n")
    assert b"X-Tmp" not in head and b"Keep-Alive" not in head and b"Connection" not in head
    assert b"Content-Length: 3\r\n" in head and b"X-App: y\r\n" in head
    assert b"X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n" in head
    assert b"X-Forwarded-Host: shop\r\n" in head and head.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("head, keep_alive, chunked, upgrade", [
    (b"GET / HTTP/1.0", False, False, None),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive", True, False, None),
    (b"GET / HTTP/1.1\r\nConnection: close", False, False, None),
    (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked", True, True, None),
    (b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket", True, False, b"websocket"),
], ids=["http10", "http10-keepalive", "close", "chunked", "upgrade"])
def test_request_framing(head: bytes, keep_alive: bool, chunked: bool,
                         upgrade: bytes | None) -> None:
    req = parse_request(head)
    assert (req.keep_alive, req.chunked, req.upgrade) == (keep_alive, chunked, upgrade)


@pytest.mark.parametrize("head", [
    b"GET /",
    b"G@T / HTTP/1.1",
    b"GET / HTTP/2.0",
    b"GET /a b HTTP/1.1",
    b"GET / HTTP/1.1\r\n Folded: x",
    b"GET / HTTP/1.1\r\nNo colon",
    b"GET / HTTP/1.1\r\nBad Name: x",
    b"GET / HTTP/1.1\r\nX: a\x00b",
    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2",
    b"POST / HTTP/1.1\r\nContent-Length: -1",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b",
], ids=["short", "method", "version", "target", "obs-fold", "no-colon", "name", "nul",
        "two-lengths", "negative", "length-and-chunked", "coding", "two-hosts"])
def test_malformed_requests(head: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request(head)


def test_response_head() -> None:
    resp = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
                          b"Keep-Alive: timeout=5\r\nX-A: 1", upgrade=False)
    assert (resp.status, resp.length, resp.chunked, resp.reusable) == (200, 5, False, True)
    expected = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n"
    assert resp.client_head(False, False) == expected
    assert resp.client_head(True, False).endswith(b"Connection: close\r\n\r\n")
    closing = parse_response(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked", upgrade=False)
    assert (closing.chunked, closing.reusable, closing.length) == (True, False, None)
    with pytest.raises(ValueError):
        parse_response(b"SSH-2.0-OpenSSH", upgrade=False)


@pytest.mark.parametrize("split", [1, 2, 3, 7, 1000], ids=lambda n: f"pieces-of-{n}")
def test_chunked_end_is_found_across_pieces(split: int) -> None:
    body = b"5\r\nhello\r\n1a;ext=1\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer: t\r\n\r\n"
    scanner = Chunked()
    done_at = None
    data = body + b"NEXT"
    for i in range(0, len(data), split):
        piece = data[i:i + split]
        end, done = scanner.feed(piece)
        if done:
            done_at = i + end
            break
    assert done_at == len(body)


def test_chunked_rejects_bad_sizes() -> None:
    with pytest.raises(BadRequest):
        Chunked().feed(b"zz\r\n")


@pytest.mark.parametrize("head", [
    b"SSH-2.0-OpenSSH", b"HTTP/1.1 20 OK", b"HTTP/2 200 OK", b"HTTP/1.1 2000",
    b"HTTP/1.1200 OK", b"HTTP/1.1 2x0 OK", b"", b"HTTP/1.2 200 OK", b"HTTP/1.1 200X",
], ids=["not-http", "short-code", "http2", "long-code", "no-space", "not-digits", "empty",
        "http12", "letter-after-code"])
def test_malformed_status_lines(head: bytes) -> None:
    with pytest.raises(ValueError):
        parse_response(head, upgrade=False)


@pytest.mark.parametrize("head, status", [
    (b"HTTP/1.1 204", 204), (b"HTTP/1.0 404 Not Found", 404), (b"HTTP/1.1 200 \r\nX: 1", 200),
], ids=["no-reason", "http10", "empty-reason"])
def test_status_lines(head: bytes, status: int) -> None:
    assert parse_response(head, upgrade=False).status == status


def test_connection_values_are_remembered_within_a_bound() -> None:
    # Each distinct Connection value is parsed once and remembered; a backend sending ever new
    # values must not grow the memory without end, and every answer still gets its own value.
    for i in range(1000):
        resp = parse_response(b"HTTP/1.1 200 OK\r\nConnection: close, x-%d\r\nX-%d: 1" % (i, i),
                              upgrade=False)
        assert (resp.reusable, resp.head) == (False, b"HTTP/1.1 200 OK"), i
    assert len(http_wire._CONNECTIONS) <= 256
