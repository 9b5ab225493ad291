"""HTTP/1.1 message heads for the LB's engine: framing decisions and the heads it forwards.

llhttp (through `httptools`) tokenises the bytes strictly; this module decides what a parsed
head means and what goes on the wire next, following RFC 9112 section 6 and RFC 9110 7.6.1:

- a request with Transfer-Encoding and Content-Length, differing or malformed Content-Length
  values, a Transfer-Encoding whose final coding is not `chunked` (or any in HTTP/1.0), more
  than one Host, or a Host that is no authority is refused (`BadMessage`, answered and closed);
- hop-by-hop headers are dropped, and so are the headers a Connection header nominates,
  except the ones that carry framing or routing (Content-Length, Transfer-Encoding, Host):
  a client must never be able to make the LB forward a body without its framing;
- every forwarded message is re-framed: the client's framing headers never reach the
  backend; the LB writes its own Content-Length or `Transfer-Encoding: chunked` for the body
  it will send (and re-chunks a chunked body itself), so both hops agree on where a message
  ends whatever the client sent.
"""

from __future__ import annotations

import re

import httptools

from lb._trace import edge_traceparent

__all__ = ["REPLAY_LIMIT", "BadMessage", "RequestHead", "ResponseHead", "connection_options",
           "request_head", "response_fields", "response_head"]

# Request headers the LB acts on; every other header passes unchanged.
_HOST, _LENGTH, _CODING, _CONNECTION, _UPGRADE, _XFF, _EXPECT, _DROP, _TRACE = range(9)
_REQUEST_KINDS = {
    b"host": _HOST, b"content-length": _LENGTH, b"transfer-encoding": _CODING,
    b"connection": _CONNECTION, b"upgrade": _UPGRADE, b"x-forwarded-for": _XFF,
    b"expect": _EXPECT,
    # Hop-by-hop (RFC 9110 7.6.1) and the X-Forwarded-* the LB sets itself.
    b"keep-alive": _DROP, b"proxy-connection": _DROP, b"proxy-authenticate": _DROP,
    b"proxy-authorization": _DROP, b"te": _DROP, b"trailer": _DROP,
    b"x-forwarded-proto": _DROP, b"x-forwarded-port": _DROP, b"x-forwarded-host": _DROP,
}
# At the edge (a frontend with `trace`), `traceparent` is the LB's to check or give (lb._trace).
_EDGE_KINDS = {**_REQUEST_KINDS, b"traceparent": _TRACE}
# A Connection header may not nominate these away (they frame or route the message).
PROTECTED = frozenset({b"content-length", b"transfer-encoding", b"host", b"x-forwarded-for",
                       b"x-forwarded-proto", b"x-forwarded-port", b"x-forwarded-host"})
_PLAIN = frozenset({b"close", b"keep-alive", b"upgrade", b""})
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# RFC 3986 authority: reg-name or IP literal, optional port.
_AUTHORITY = re.compile(rb"(?:[A-Za-z0-9\-._~%!$&'()*+,;=]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
REPLAY_LIMIT = 64 * 1024  # request bodies up to this size are kept for a resend
MAX_LENGTH_DIGITS = 18  # Content-Length values that fit in 63 bits
_GOOD_HOSTS: set[bytes] = set()  # Host values that matched _AUTHORITY (bounded)


class BadMessage(Exception):
    """A request the LB refuses; `status` is the answer (400, 414, 431, 501, 505)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def connection_options(values: list[bytes]) -> frozenset[bytes]:
    """The options of the Connection header lines, lower-case."""
    if len(values) == 1:
        single = values[0].strip(b" \t").lower()
        if single in _PLAIN:
            return frozenset((single,))
    return frozenset(t.strip(b" \t").lower() for v in values for t in v.split(b","))


def _length(values: list[bytes]) -> int:
    """The one Content-Length these header lines state; BadMessage when they do not."""
    if len(values) == 1:
        single = values[0]
        if single.isdigit() and len(single) <= MAX_LENGTH_DIGITS:
            return int(single)  # the usual case: one plain number
    found: int | None = None
    for value in values:
        for part in value.split(b","):
            part = part.strip(b" \t")
            if not part.isdigit() or len(part) > MAX_LENGTH_DIGITS:
                raise BadMessage(400, "invalid Content-Length")
            n = int(part)
            if found is not None and n != found:
                raise BadMessage(400, "conflicting Content-Length values")
            found = n
    assert found is not None
    return found


def _chunked_request(values: list[bytes], http11: bool) -> None:
    """Accept only `Transfer-Encoding: chunked` (RFC 9112 6.1); BadMessage otherwise."""
    if not http11:
        raise BadMessage(400, "Transfer-Encoding in an HTTP/1.0 request")
    codings = [c.strip(b" \t").lower() for v in values for c in v.split(b",")]
    if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
        raise BadMessage(400, "the final transfer coding must be chunked")
    if len(codings) != 1:
        raise BadMessage(501, "transfer codings other than chunked are not supported")


class RequestHead:
    """A client's request as the LB forwards it: the backend's head and the framing."""

    __slots__ = (
        "chunked",
        "data",
        "expect_continue",
        "fresh_trace",
        "has_body",
        "headers",
        "http11",
        "idempotent",
        "keep_alive",
        "length",
        "method",
        "replayable",
        "upgrade",
    )

    def __init__(self) -> None:
        self.method = b""
        self.data = b""  # the head for the backend, final CRLF included
        self.length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.upgrade: bytes | None = None
        self.expect_continue = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.http11 = True
        self.has_body = False  # a body follows the head
        self.idempotent = False  # a method a client may send twice (RFC 9110 9.2.2)
        self.fresh_trace = False  # the LB gave it a new traceparent (never reuse this head)
        self.replayable = False  # idempotent, and a body short enough to keep for a resend

    def header_map(self) -> dict[str, str]:
        """The client's headers as {lower-case name: value} (for routing policies)."""
        return {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in self.headers}


def _origin(method: bytes, target: bytes) -> tuple[bytes, bytes | None]:
    """(origin-form target, authority from an absolute-form target or None)."""
    if target[:1] == b"/":
        return target, None
    if target == b"*" and method == b"OPTIONS":
        return target, None
    lower = target[:8].lower()
    if lower.startswith(b"http://") or lower.startswith(b"https://"):
        # RFC 9112 3.2.2: the authority of an absolute-form target replaces Host.
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            raise BadMessage(400, "invalid request target") from None
        if not url.host or url.userinfo:
            raise BadMessage(400, "invalid request target")
        authority = url.host if url.port is None else b"%s:%d" % (url.host, url.port)
        path = url.path or b"/"
        return (path + b"?" + url.query if url.query else path), authority
    raise BadMessage(400, "invalid request target")


def request_head(method: bytes, target: bytes, version: str,
                 headers: list[tuple[bytes, bytes]], peer: bytes, port: bytes,
                 trace: bool = False) -> RequestHead:
    """Decide a request's framing and build the head to send to a backend (HTTP/1.1).

    With `trace` (the edge), the head carries the client's valid `traceparent` or a new one.
    """
    if version != "1.1" and version != "1.0":
        raise BadMessage(505, "HTTP version not supported")
    if method == b"CONNECT":
        raise BadMessage(405, "CONNECT is not supported")
    http11 = version == "1.1"
    authority = None
    if target[:1] != b"/":
        target, authority = _origin(method, target)
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    traces: list[bytes] | None = [] if trace else None
    host, lengths, codings, connection, upgrade, forwarded, expect = _fields(headers, lines,
                                                                             traces)
    host = _checked_host(host, http11, authority)
    req = RequestHead()
    req.method = method
    req.headers = headers
    req.http11 = http11
    req.idempotent = method in _IDEMPOTENT
    req.expect_continue = expect and http11
    lines = _request_framing(req, lines, lengths, codings, connection, upgrade)
    if traces is not None:
        parent, req.fresh_trace = edge_traceparent(traces or None)
        lines += (b"traceparent: ", parent, b"\r\n")
    xff = forwarded + b", " + peer if forwarded else peer
    lines += (b"Host: ", host, b"\r\nX-Forwarded-For: ", xff,
              b"\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: ", port, b"\r\n")
    if host:
        lines += (b"X-Forwarded-Host: ", host, b"\r\n")
    if req.chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    elif req.length is not None:
        lines.append(b"Content-Length: %d\r\n" % req.length)
    if req.upgrade is not None:
        lines += (b"Connection: upgrade\r\nUpgrade: ", req.upgrade, b"\r\n")
    lines.append(b"\r\n")
    req.data = b"".join(lines)
    req.replayable = req.idempotent and (not req.has_body or (req.length or 0) <= REPLAY_LIMIT)
    return req


_Fields = tuple[bytes | None, list[bytes] | None, list[bytes] | None, list[bytes] | None,
                bytes | None, bytes | None, bool]


def _fields(headers: list[tuple[bytes, bytes]], lines: list[bytes],
            traces: list[bytes] | None = None) -> _Fields:
    """Copy the end-to-end fields to `lines` (name, ": ", value, CRLF each); return the ones
    the LB acts on: Host, Content-Length, Transfer-Encoding, Connection, Upgrade,
    X-Forwarded-For and whether 100-continue is expected. With `traces` (a list), the
    `traceparent` values go there instead of to `lines`."""
    host: bytes | None = None
    # Lists only for the headers a request has (most have none of them).
    lengths: list[bytes] | None = None
    codings: list[bytes] | None = None
    connection: list[bytes] | None = None
    upgrade = forwarded = None
    expect = False
    kinds = _REQUEST_KINDS if traces is None else _EDGE_KINDS
    for name, value in headers:
        kind = kinds.get(name.lower())
        if kind is None:
            lines += (name, b": ", value, b"\r\n")
        elif kind == _HOST:
            if host is not None:
                raise BadMessage(400, "more than one Host header")
            host = value
        elif kind == _LENGTH:
            lengths = [value] if lengths is None else [*lengths, value]
        elif kind == _CODING:
            codings = [value] if codings is None else [*codings, value]
        elif kind == _CONNECTION:
            connection = [value] if connection is None else [*connection, value]
        elif kind == _UPGRADE:
            if upgrade is None:
                upgrade = value
        elif kind == _XFF:
            forwarded = value if forwarded is None else forwarded + b", " + value
        elif kind == _EXPECT:
            if value.lower() != b"100-continue":
                raise BadMessage(417, "unsupported expectation")
            expect = True
        elif kind == _TRACE:
            assert traces is not None
            traces.append(value)
    return host, lengths, codings, connection, upgrade, forwarded, expect


def _checked_host(host: bytes | None, http11: bool, authority: bytes | None) -> bytes:
    """The Host to forward: the absolute-form target's authority if there was one, else
    the one Host field, which must be an RFC 3986 authority (and present in HTTP/1.1)."""
    if host is None:
        if http11 and authority is None:
            raise BadMessage(400, "no Host header")
        host = b""
    elif host not in _GOOD_HOSTS:
        if not _AUTHORITY.fullmatch(host):
            raise BadMessage(400, "invalid Host header")
        if len(_GOOD_HOSTS) < 1024:
            _GOOD_HOSTS.add(host)  # a client sends the same Host again and again
    return host if authority is None else authority


def _request_framing(req: RequestHead, lines: list[bytes], lengths: list[bytes] | None,
                     codings: list[bytes] | None, connection: list[bytes] | None,
                     upgrade: bytes | None) -> list[bytes]:
    """Set the request's framing, keep-alive and upgrade (RFC 9112 6, 9.3); return `lines`
    without the fields its Connection header nominates."""
    http11 = req.http11
    if codings:
        if lengths:
            raise BadMessage(400, "both Content-Length and Transfer-Encoding")
        _chunked_request(codings, http11)
        req.chunked = req.has_body = True
    elif lengths:
        req.length = _length(lengths)
        req.has_body = req.length > 0
    options = connection_options(connection) if connection else _PLAIN
    if connection:
        req.keep_alive = b"close" not in options if http11 else b"keep-alive" in options
        extra = options - _PLAIN - PROTECTED
        if extra:
            lines = _without(lines, extra, 4)
    elif not http11:
        req.keep_alive = False
    if upgrade is not None and b"upgrade" in options and http11:
        if req.has_body:
            # The body would be taken for the new protocol's bytes if the backend switched.
            raise BadMessage(400, "an Upgrade request cannot have a body")
        req.upgrade = upgrade
    return lines


def _without(parts: list[bytes], names: frozenset[bytes], start: int) -> list[bytes]:
    """The head parts (`start` parts of the first line, then name, ": ", value, CRLF per
    header) without the headers `names` (lower-case)."""
    kept = parts[:start]
    for i in range(start, len(parts), 4):
        if parts[i].lower() not in names:
            kept += parts[i:i + 4]
    return kept


# The response header lines the LB acts on (hop-by-hop and framing), found and cut from the
# raw head in one pass: llhttp has validated it, so every line is `token ":" value CRLF`
# (no obs-fold, no bare CR or LF, no space before the colon).
_RESPONSE_HOP = re.compile(
    rb"\r\n(connection|keep-alive|proxy-connection|proxy-authenticate|proxy-authorization"
    rb"|te|trailer|transfer-encoding|upgrade|content-length):[ \t]*([^\r]*)", re.IGNORECASE)


class ResponseHead:
    """A backend's answer as the LB forwards it: the client's head and the framing."""

    __slots__ = ("bodiless", "chunked", "data", "length", "until_close")

    def __init__(self) -> None:
        self.data = b""
        self.length: int | None = None
        self.chunked = False  # the client gets the body re-chunked by the LB
        self.until_close = False  # the body ends when the backend closes
        self.bodiless = False


def response_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a raw answer head (status line to the empty line, as llhttp
    accepted it) as (name, value) pairs."""
    fields = []
    for line in raw[raw.index(b"\r\n") + 2:-4].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name:
            fields.append((name, value.strip(b" \t")))
    return fields


# Answer heads already built, by (raw head, HEAD request, HTTP/1.1 client, close): a backend
# sends the same head again and again (its Date changes once a second), and a ResponseHead
# is never changed once built. Bounded in entries and in the size of the heads kept.
_MEMO: dict[tuple[bytes, bool, bool, bool], ResponseHead] = {}
MEMO_ENTRIES = 512
MEMO_HEAD = 2048  # bytes; longer heads are built every time


def response_head(status: int, raw: bytes, head_request: bool, client_http11: bool,
                  close: bool, switching: bool = False) -> ResponseHead:
    """Decide an answer's framing (RFC 9112 6.3) and build the head for the client from the
    raw head the backend sent (status line to the empty line, validated by llhttp).

    The client's head is the backend's, byte for byte, less the hop-by-hop and framing
    fields (and those its Connection header nominates), with the LB's own framing added:
    the common answer costs one regular-expression pass and a join, no per-field work, and
    a head seen before (same bytes, same request kind) costs one dictionary look-up."""
    if switching or len(raw) > MEMO_HEAD:
        return _response_head(status, raw, head_request, client_http11, close, switching)
    key = (raw, head_request, client_http11, close)
    resp = _MEMO.get(key)
    if resp is None:
        resp = _response_head(status, raw, head_request, client_http11, close, False)
        if len(_MEMO) >= MEMO_ENTRIES:
            _MEMO.clear()  # a new second's Date: the old heads will not come again
        _MEMO[key] = resp
    return resp


def _response_head(status: int, raw: bytes, head_request: bool, client_http11: bool,
                   close: bool, switching: bool) -> ResponseHead:
    line, fields, length, chunked, upgrade = _end_to_end(status, raw)
    parts = [line, fields, b"\r\n"]
    resp = ResponseHead()
    if switching:
        parts.append(b"Connection: upgrade\r\n")
        if upgrade is not None:
            parts += (b"Upgrade: ", upgrade, b"\r\n")
        parts.append(b"\r\n")
        resp.data = b"".join(parts)
        resp.bodiless = True
        return resp
    if head_request or status < 200 or status == 204 or status == 304:
        resp.bodiless = True
        if length is not None and status != 204 and status >= 200:
            parts += (b"Content-Length: ", length, b"\r\n")
    elif chunked:
        if client_http11:
            resp.chunked = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            resp.until_close = True  # an HTTP/1.0 client gets the decoded body, then EOF
    elif length is not None:
        resp.length = int(length) if length.isdigit() and len(length) <= MAX_LENGTH_DIGITS \
            else _length([length])
        parts.append(b"Content-Length: %d\r\n" % resp.length)
    else:
        resp.until_close = True
    if close or resp.until_close:
        parts.append(b"Connection: close\r\n")
    elif not client_http11:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    resp.data = b"".join(parts)
    return resp


def _end_to_end(status: int, raw: bytes
                ) -> tuple[bytes, bytes, bytes | None, bool, bytes | None]:
    """(HTTP/1.1 status line, the end-to-end fields CRLF-led, Content-Length, chunked,
    Upgrade) of a raw answer head: hop-by-hop and framing fields cut, and the ones its
    Connection header nominates."""
    eol = raw.index(b"\r\n")
    line = raw[:eol]
    if eol == 12 or line[:9] != b"HTTP/1.1 ":
        # "HTTP/1.x NNN reason": the client speaks to an HTTP/1.1 proxy; SP before the
        # (possibly empty) reason is not optional (RFC 9112 4).
        line = b"HTTP/1.1 %d %s" % (status, line[13:])
    fields = raw[eol:-4]  # CRLF-led fields, no final CRLF
    length: bytes | None = None
    chunked = False
    connection: list[bytes] | None = None
    upgrade = None
    pieces = _RESPONSE_HOP.split(fields)  # kept, name, value, kept, name, value, ..., kept
    if len(pieces) > 1:
        fields = b"".join(pieces[::3])
        for i in range(1, len(pieces), 3):
            lname = pieces[i].lower()
            if lname == b"content-length":
                length = pieces[i + 1].rstrip(b" \t")
            elif lname == b"connection":
                value = pieces[i + 1].rstrip(b" \t")
                connection = [value] if connection is None else [*connection, value]
            elif lname == b"transfer-encoding":
                chunked = True  # llhttp accepted it: chunked is the final coding
            elif lname == b"upgrade":
                upgrade = pieces[i + 1].rstrip(b" \t")
    if connection is not None and (len(connection) > 1 or connection[0].lower() not in _PLAIN):
        extra = connection_options(connection) - _PLAIN - PROTECTED
        if extra:
            fields = b"".join(b"\r\n" + f for f in fields.split(b"\r\n")[1:]
                              if f.partition(b":")[0].lower() not in extra)
    return line, fields, length, chunked, upgrade
