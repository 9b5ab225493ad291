"""Framing decisions and forwarded heads (`lb._http_heads`), table-driven and property-based."""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb._http_heads import BadMessage, request_head, response_fields, response_head

H = list[tuple[bytes, bytes]]


def _req(headers: H, method: bytes = b"POST", target: bytes = b"/", version: str = "1.1"):
    return request_head(method, target, version, headers, b"10.0.0.9", b"80")


@pytest.mark.parametrize("headers, status", [
    ([(b"Host", b"x"), (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")], 400),
    ([(b"Host", b"x"), (b"Content-Length", b"3"), (b"Content-Length", b"4")], 400),
    ([(b"Host", b"x"), (b"Content-Length", b"3, 4")], 400),
    ([(b"Host", b"x"), (b"Content-Length", b"-1")], 400),
    ([(b"Host", b"x"), (b"Content-Length", b"0x10")], 400),
    ([(b"Host", b"x"), (b"Transfer-Encoding", b"chunked, identity")], 400),
    ([(b"Host", b"x"), (b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")],
     400),
    ([(b"Host", b"x"), (b"Transfer-Encoding", b"gzip, chunked")], 501),
    ([(b"Host", b"x"), (b"Host", b"y")], 400),
    ([], 400),
    ([(b"Host", b"x y")], 400),
    ([(b"Host", b"x"), (b"Expect", b"200-ok")], 417),
    ([(b"Host", b"x"), (b"Connection", b"upgrade"), (b"Upgrade", b"ws"),
      (b"Content-Length", b"5")], 400),
], ids=["te-cl", "two-cl", "cl-list", "cl-negative", "cl-hex", "te-not-final", "te-twice",
        "te-gzip", "two-hosts", "no-host", "bad-host", "expect", "upgrade-with-body"])
def test_refused_requests(headers: H, status: int) -> None:
    with pytest.raises(BadMessage) as info:
        _req(headers)
    assert info.value.status == status


def test_http_1_0_transfer_encoding_and_versions() -> None:
    with pytest.raises(BadMessage):
        _req([(b"Transfer-Encoding", b"chunked")], version="1.0")
    for version, status in (("0.9", 505), ("2.0", 505)):
        with pytest.raises(BadMessage) as info:
            _req([(b"Host", b"x")], version=version)
        assert info.value.status == status
    with pytest.raises(BadMessage) as info:
        _req([(b"Host", b"x:443")], method=b"CONNECT", target=b"x:443")
    assert info.value.status == 405


@pytest.mark.parametrize("nominated", [b"Content-Length", b"close, Content-Length",
                                       b"Transfer-Encoding", b"Host", b"X-Forwarded-For"])
def test_connection_cannot_nominate_framing_away(nominated: bytes) -> None:
    req = _req([(b"Host", b"x"), (b"Connection", nominated), (b"Content-Length", b"5"),
                (b"X-Other", b"1")])
    assert req.length == 5
    assert b"\r\nContent-Length: 5\r\n" in req.data and b"\r\nHost: x\r\n" in req.data


def test_connection_nominated_headers_are_dropped_and_body_reframed() -> None:
    req = _req([(b"Host", b"x"), (b"Connection", b"X-Secret, keep-alive"),
                (b"X-Secret", b"1"), (b"Keep-Alive", b"5"), (b"Transfer-Encoding", b"chunked"),
                (b"X-Forwarded-For", b"1.2.3.4")])
    assert b"X-Secret" not in req.data and b"Keep-Alive" not in req.data
    assert req.data.count(b"Transfer-Encoding") == 1 and req.chunked
    assert b"X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n" in req.data


def test_absolute_form_becomes_origin_form_with_its_authority() -> None:
    req = _req([(b"Host", b"evil")], method=b"GET", target=b"http://good:8080/p?q=1")
    assert req.data.startswith(b"GET /p?q=1 HTTP/1.1\r\n")
    assert b"\r\nHost: good:8080\r\n" in req.data and b"evil" not in req.data
    with pytest.raises(BadMessage):
        _req([(b"Host", b"x")], target=b"ftp://x/")


def _raw(status_line: bytes, fields: H) -> bytes:
    return status_line + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n"


def test_response_heads() -> None:
    hdrs = [(b"Content-Length", b"2"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"),
            (b"Server", b"s")]
    resp = response_head(200, _raw(b"HTTP/1.1 200 OK", hdrs), False, True, False)
    assert resp.data == b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\n\r\n"
    resp = response_head(200, _raw(b"HTTP/1.1 200 OK", [(b"Transfer-Encoding", b"chunked")]),
                         False, False, False)
    assert resp.until_close and b"Connection: close" in resp.data
    resp = response_head(200, _raw(b"HTTP/1.1 200 OK", [(b"Content-Length", b"9")]), True, True,
                         True)
    assert resp.bodiless and b"Content-Length: 9" in resp.data


@pytest.mark.parametrize("status_line, expected", [
    (b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK\r\n"),
    (b"HTTP/1.0 404 Not Found", b"HTTP/1.1 404 Not Found\r\n"),
    (b"HTTP/1.1 204", b"HTTP/1.1 204 \r\n"),
], ids=["1.1", "1.0-rewritten", "no-reason-gets-its-SP"])
def test_response_status_line(status_line: bytes, expected: bytes) -> None:
    status = int(status_line[9:12])
    assert response_head(status, _raw(status_line, []), False, True, False).data.startswith(
        expected)


def test_response_head_keeps_fields_byte_for_byte_and_cuts_hop_by_hop() -> None:
    fields = [(b"Set-Cookie", b"a=1; Path=/"), (b"TE", b"x"), (b"Keep-Alive", b"timeout=5"),
              (b"Content-length", b"3 "), (b"X-TE", b"y"), (b"connection", b"X-Gone"),
              (b"X-Gone", b"1"), (b"Trailer", b"z"), (b"x-kept", b"te: no")]
    raw = _raw(b"HTTP/1.1 200 OK", fields)
    resp = response_head(200, raw, False, True, False)
    assert resp.data == (b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nX-TE: y\r\n"
                         b"x-kept: te: no\r\nContent-Length: 3\r\n\r\n")
    assert resp.length == 3
    assert response_fields(raw)[3] == (b"Content-length", b"3")


class _Collect:
    def __init__(self) -> None:
        self.heads: list[H] = []
        self.headers: H = []
        self.body = b""
        self.complete = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.heads.append(self.headers)
        self.headers = []

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.complete += 1


def _feed(data: bytes, cuts: list[int]) -> _Collect:
    sink = _Collect()
    parser = httptools.HttpRequestParser(sink)
    last = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        parser.feed_data(data[last:cut])
        last = cut
    return sink


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)
_value = st.binary(min_size=0, max_size=30).map(
    lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127).strip(b" \t"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_token, _value), max_size=12), st.binary(max_size=300),
       st.lists(st.integers(0, 10_000), max_size=5), st.booleans())
def test_forwarded_heads_parse_back_to_the_same_message(
        fields: list[tuple[str, bytes]], body: bytes, cuts: list[int], chunked: bool) -> None:
    """Whatever end-to-end headers a client sends, the head the LB builds parses (strictly)
    as one message with the same headers and exactly the framing the LB chose."""
    headers = [(b"X-" + n.encode(), v) for n, v in fields] + [(b"Host", b"h")]
    headers.append((b"Transfer-Encoding", b"chunked") if chunked
                   else (b"Content-Length", b"%d" % len(body)))
    req = _req(headers)
    framed = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n") \
        if chunked else body
    sink = _feed(req.data + framed, cuts)
    assert sink.complete == 1 and sink.body == body
    forwarded = [h for h in sink.heads[0] if h[0].startswith(b"X-") and
                 not h[0].startswith(b"X-Forwarded")]
    assert forwarded == headers[:-2]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=200), max_size=8),
       st.lists(st.integers(0, 10_000), max_size=6))
def test_chunked_bodies_are_decoded_and_reframed_losslessly(
        chunks: list[bytes], cuts: list[int]) -> None:
    """A chunked body split anywhere decodes to its bytes; the LB's re-chunking (one chunk per
    llhttp body callback) decodes to the same bytes and ends exactly at its last chunk."""
    data = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    sink = _feed(data + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n", cuts)
    assert sink.body == b"".join(chunks) and sink.complete == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=6), st.integers(0, 200))
def test_corrupt_chunk_framing_never_yields_a_second_request(junk: bytes, at: int) -> None:
    """Junk spliced into a chunked body either fails to parse or stays body: llhttp never
    starts the smuggled request inside it."""
    body = b"5\r\nhello\r\n0\r\n\r\n"
    at %= len(body)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + body[:at] + junk + smuggled + body[at:])
    try:
        sink = _feed(data, [])
    except httptools.HttpParserError:
        return
    assert sink.complete <= 1 or b"smuggled" not in b"".join(
        v for head in sink.heads[1:] for _, v in head)


def test_answer_heads_are_memoised_exactly_and_bounded() -> None:
    from lb import _http_heads as http_heads

    raw = _raw(b"HTTP/1.1 200 OK", [(b"Content-Length", b"2"), (b"Connection", b"keep-alive")])
    first = response_head(200, raw, False, True, False)
    assert response_head(200, raw, False, True, False) is first
    closing = response_head(200, raw, False, True, True)
    assert closing is not first and b"Connection: close" in closing.data
    assert response_head(200, raw, True, True, False).bodiless
    assert not response_head(200, raw, False, False, False).data.endswith(
        b"Content-Length: 2\r\n\r\n")  # an HTTP/1.0 client is told keep-alive
    for n in range(http_heads.MEMO_ENTRIES * 2):
        response_head(200, _raw(b"HTTP/1.1 200 OK", [(b"X-N", b"%d" % n)]), False, True, False)
    assert len(http_heads._MEMO) <= http_heads.MEMO_ENTRIES
    big = _raw(b"HTTP/1.1 200 OK", [(b"X-Big", b"x" * http_heads.MEMO_HEAD)])
    response_head(200, big, False, True, False)
    assert (big, False, True, False) not in http_heads._MEMO
