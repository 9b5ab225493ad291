"""HTTP/1.x on the wire for the fast proxy: strict request parsing, response heads, chunks.

Only heads are parsed; bodies pass through verbatim, framed by Content-Length or by the
chunked coding (scanned, not decoded, to find where a message ends). Parsing is strict where
laxness enables request smuggling: one Content-Length, never with Transfer-Encoding, no
obs-fold, token-only header names, HTTP/1.0 or 1.1 only. `BadRequest` means answer 400.
"""

from __future__ import annotations

import re

__all__ = ["BadRequest", "Chunked", "Request", "Response", "parse_request", "parse_response"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# Dropped when forwarding (RFC 9110 7.6.1) and the X-Forwarded-* the LB sets itself. The
# framing headers (Content-Length, Transfer-Encoding) stay: bodies are forwarded verbatim.
REQUEST_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"upgrade", b"expect",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port", b"x-forwarded-host",
})
RESPONSE_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"upgrade",
})


class BadRequest(Exception):
    """The client's request cannot be parsed; the message says why (sent with the 400)."""


# A header block as kept here: every line preceded (not followed) by CRLF.
_HEADER_BLOCK = re.compile(rb"(?:\r\n%s:[\t\x20-\x7e\x80-\xff]*)*" % _TOKEN.pattern)
# A whole valid request head in one C-level match: method, target, version, header block.
_REQUEST_HEAD = re.compile(b"(%s) (%s) (HTTP/1\\.[01])(%s)" % (
    _TOKEN.pattern, _TARGET.pattern, _HEADER_BLOCK.pattern))
_REQUEST_NAMES = REQUEST_DROP | {b"content-length", b"transfer-encoding", b"host"}


def _lines_of(names: frozenset[bytes]) -> re.Pattern[bytes]:
    """Finds the lines of these headers, any case: (CRLF and the whole line, name, value)."""
    alternatives = b"|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rb"(\r\n(" + alternatives + rb"):([^\r]*))", re.IGNORECASE)


# One scan of a head finds every header the proxy acts on; the rest pass untouched. findall
# gives tuples of bytes, much cheaper than match objects, with values in their original case;
# a line to drop is removed by its own text.
_REQUEST_FIELDS = _lines_of(_REQUEST_NAMES)
# An answer's lines: (line, and non-empty for Content-Length, Transfer-Encoding, Connection,
# value); the other names found are hop-by-hop headers to drop.
_RESPONSE_FIELDS = re.compile(rb"(\r\n(?:(content-length)|(transfer-encoding)|(connection)|%s):"
                              rb"([^\r]*))" % b"|".join(sorted(RESPONSE_DROP - {b"connection"})),
                              re.IGNORECASE)
_PLAIN_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade", b""})
_CRLF = b"\r\n"
_PLAIN_SETS = {token: frozenset({token}) for token in _PLAIN_TOKENS}
_AFTER_CODE = (b"", b" ", b"\t", b"\r")  # what may follow the status code
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


def _cut(original: bytes, lower: bytes, key: bytes) -> tuple[bytes, bytes]:
    """Remove every line of the header `key` from the block (and its lower-case copy)."""
    pos = lower.find(key)
    while pos >= 0:
        end = lower.find(b"\r\n", pos + 2)
        if end < 0:
            end = len(lower)
        original = original[:pos] + original[end:]
        lower = lower[:pos] + lower[end:]
        pos = lower.find(key, pos)
    return original, lower


def _drop(block: bytes, lines: list[bytes], connection: frozenset[bytes]) -> bytes:
    """The block without `lines` (in the order found) and the headers `connection` names.

    Removing each line's first occurrence in order is exact: a line runs from its CRLF to the
    next CR, so its text cannot occur inside another line, and every earlier line with the
    same text is gone already.
    """
    for line in lines:
        block = block.replace(line, b"", 1)
    return _named_by_connection(block, connection)


def _connection_tokens(value: bytes) -> frozenset[bytes]:
    """The options of a Connection header (its lines joined by commas), lower-case."""
    token = value.strip(b" \t")
    if token in _PLAIN_TOKENS:
        return _PLAIN_SETS[token]  # the usual single option, without splitting
    return frozenset(t.strip(b" \t") for t in value.split(b","))


# Connection values as sent (a few spellings of keep-alive and close in practice) and their
# options: a dict lookup per message instead of lower-casing and splitting. Bounded.
_CONNECTIONS: dict[bytes, frozenset[bytes]] = {}


def _connection(raw: bytes) -> frozenset[bytes]:
    """The options of a Connection value as sent (any case), remembered for next time."""
    found = _CONNECTIONS.get(raw)
    if found is None:
        found = _connection_tokens(raw.lower())
        if len(_CONNECTIONS) < 256:
            _CONNECTIONS[raw] = found
    return found


def _named_by_connection(block: bytes, tokens: frozenset[bytes]) -> bytes:
    """Remove the headers that Connection names besides its plain options (rare)."""
    extra = tokens - _PLAIN_TOKENS
    if extra:
        lower = block.lower()
        for token in extra:
            block, lower = _cut(block, lower, b"\r\n" + token + b":")
    return block


def _map(block: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            found[name.decode("latin-1").strip().lower()] = value.strip().decode("latin-1")
    return found


class Request:
    """A parsed request head and what the proxy needs from it."""

    # Class-level defaults: a request sets only what it differs in (one per request, on the
    # hot path, created without an __init__ call).
    method = target = version = b""
    kept = b""  # the request line and the header lines to forward (each preceded by CRLF)
    line_end = 0  # where the request line ends in `kept`
    keep_alive = True
    length: int | None = None
    chunked = False
    host: bytes | None = None
    forwarded_for: bytes | None = None
    upgrade: bytes | None = None
    expect_continue = False

    @property
    def block(self) -> bytes:
        """The header lines to forward, each preceded by CRLF."""
        return self.kept[self.line_end:]

    @property
    def idempotent(self) -> bool:
        """True for methods a client may send twice with the same effect (RFC 9110 9.2.2)."""
        return self.method in _IDEMPOTENT

    def header_map(self) -> dict[str, str]:
        """The forwarded headers as {lower-case name: value} (for routing policies)."""
        return _map(self.block)

    def head_for_backend(self, peer: bytes, port: bytes) -> bytes:
        """The request head to send to a backend, hop-by-hop headers out, X-Forwarded-* in."""
        xff = self.forwarded_for + b", " + peer if self.forwarded_for else peer
        out = [self.kept, b"\r\nX-Forwarded-For: ", xff,
               b"\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: ", port]
        if self.host is not None:
            out += (b"\r\nX-Forwarded-Host: ", self.host)
        if self.upgrade is not None:
            out += (b"\r\nConnection: upgrade\r\nUpgrade: ", self.upgrade)
        out.append(b"\r\n\r\n")
        return b"".join(out)


def _diagnose(head: bytes) -> str:
    """Why a request head that failed the whole-head match is malformed."""
    request_line, _, block = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return "malformed request line"
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        return "invalid method"
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        return "unsupported HTTP version"
    if not _TARGET.fullmatch(target):
        return "invalid request target"
    return "malformed header line"


def parse_request(head: bytes) -> Request:
    """Parse a request head (without its final CRLF CRLF); BadRequest when malformed."""
    match = _REQUEST_HEAD.fullmatch(head)
    if match is None:
        raise BadRequest(_diagnose(head))
    method, target, version, block = match.groups()
    req = Request()
    req.method = method
    req.target = target
    req.version = version
    if version == b"HTTP/1.0":
        req.keep_alive = False
    req.kept = head
    req.line_end = line_end = len(head) - len(block)
    if not block:
        return req
    dropped: list[bytes] | None = None
    length = transfer = tokens = upgrade = None
    for line, name, value in _REQUEST_FIELDS.findall(head, line_end):
        name = name.lower()
        if name == b"host":
            if req.host is not None:
                raise BadRequest("more than one Host header")
            req.host = value.strip(b" \t")
            continue
        if name == b"content-length":
            value = value.strip(b" \t")
            if not value.isdigit() or length is not None and int(value) != int(length):
                raise BadRequest("invalid Content-Length")
            length = value
            continue
        if name == b"transfer-encoding":  # kept: the body is forwarded as it came
            transfer = value if transfer is None else transfer + b"," + value
            continue
        if dropped is None:
            dropped = [line]
        else:
            dropped.append(line)
        if name == b"connection":
            tokens = value if tokens is None else tokens + b"," + value
        elif name == b"x-forwarded-for":
            value = value.strip(b" \t")
            forwarded = req.forwarded_for
            req.forwarded_for = value if forwarded is None else forwarded + b", " + value
        elif name == b"upgrade":
            if upgrade is None:
                upgrade = value.strip(b" \t")
        elif name == b"expect" and value.strip(b" \t").lower() == b"100-continue":
            req.expect_continue = True
    if length is not None:
        req.length = int(length)
    if transfer is not None:
        if length is not None:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        if transfer.rsplit(b",", 1)[-1].strip(b" \t").lower() != b"chunked":
            raise BadRequest("unsupported Transfer-Encoding")
        req.chunked = True
    if dropped is not None:
        connection = _PLAIN_SETS[b""] if tokens is None else _connection(tokens)
        if tokens is not None:
            if b"upgrade" in connection:
                req.upgrade = upgrade
            req.keep_alive = b"close" not in connection if version == b"HTTP/1.1" \
                else b"keep-alive" in connection
        # A line to drop starts with CRLF, so it cannot match inside the request line.
        req.kept = _drop(head, dropped, connection)
    return req


class Response:
    """A parsed response head: status, framing, reuse, and the head to send to the client."""

    length: int | None = None
    chunked = False
    reusable = False
    head = b""  # the status line and the kept header lines, each preceded by CRLF

    status = 0

    def header_map(self) -> dict[str, str]:
        """The answer's headers as {lower-case name: value} (for routing policies)."""
        return _map(self.head.partition(b"\r\n")[2])

    def client_head(self, close: bool, keep_alive_1_0: bool) -> bytes:
        """The head for the client; `close` adds Connection: close."""
        if close:
            return self.head + b"\r\nConnection: close\r\n\r\n"
        if keep_alive_1_0:
            return self.head + b"\r\nConnection: keep-alive\r\n\r\n"
        return self.head + b"\r\n\r\n"


def _status_line(head: bytes) -> tuple[int, bool]:
    """(status, HTTP/1.1?) of an answer head; ValueError when its status line is malformed."""
    # "HTTP/1.x NNN reason": fixed positions, checked without a regex.
    code = head[9:12]
    if head[:7] != b"HTTP/1." or head[7:8] not in (b"0", b"1") or head[8:9] != b" " \
            or not code.isdigit() or head[12:13] not in _AFTER_CODE:
        raise ValueError(f"malformed status line {head.split(_CRLF, 1)[0][:80]!r}")
    return int(code), head[7:8] == b"1"


# Valid status lines seen, by their first 13 bytes ("HTTP/1.1 200 "): a dict lookup per
# answer instead of the checks. At most 2 versions x 1000 codes x 4 endings.
_STATUS_LINES: dict[bytes, tuple[int, bool]] = {}


def parse_response(head: bytes, upgrade: bool) -> Response:
    """Parse a backend's response head; ValueError when it is not HTTP/1.0 or 1.1."""
    prefix = head[:13]
    try:
        status, http11 = _STATUS_LINES[prefix]
    except KeyError:
        status, http11 = _STATUS_LINES[prefix] = _status_line(head)
    resp = Response()
    resp.status = status
    tokens: bytes | None = None
    coding = length = None
    dropped: list[bytes] | None = None
    for line, is_length, is_coding, is_connection, value in _RESPONSE_FIELDS.findall(head, 12):
        if is_length:
            if length is None:
                length = value
        elif is_coding:
            coding = value
        else:
            if dropped is None:
                dropped = [line]
            else:
                dropped.append(line)
            if is_connection:
                tokens = value if tokens is None else tokens + b"," + value
    if coding is not None and coding.rstrip(b" \t").lower().endswith(b"chunked"):
        resp.chunked = True
    elif length is not None:
        length = length.strip(b" \t")
        if not length.isdigit():
            raise ValueError("invalid Content-Length in the answer")
        resp.length = int(length)
    if tokens is None:
        connection = _PLAIN_SETS[b""]
        resp.reusable = http11
    else:
        connection = _connection(tokens)
        resp.reusable = b"close" not in connection if http11 else b"keep-alive" in connection
    if dropped is None or status == 101 and upgrade:
        resp.head = head
    else:
        resp.head = _drop(head, dropped, connection)
    return resp


class Chunked:
    """Finds the end of a chunked body without decoding it."""

    __slots__ = ("state", "left", "line")

    def __init__(self) -> None:
        self.state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailer lines
        self.left = 0
        self.line = b""

    def feed(self, data: bytes | bytearray, start: int = 0) -> tuple[int, bool]:
        """Scan `data[start:]`; returns (end index scanned, whether the body ended there)."""
        i, n = start, len(data)
        while i < n:
            state = self.state
            if state == 1 or state == 2:
                take = min(self.left, n - i)
                i += take
                self.left -= take
                if self.left == 0:
                    if state == 1:
                        self.state, self.left = 2, 2
                    else:
                        self.state = 0
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self.line += bytes(data[i:])
                if len(self.line) > 8192:
                    raise BadRequest("chunk header line too long")
                return n, False
            line = (self.line + bytes(data[i:j])).rstrip(b"\r")
            self.line = b""
            i = j + 1
            if state == 3:
                if not line:
                    return i, True
                continue
            size = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size):
                raise BadRequest("invalid chunk size")
            self.left = int(size, 16)
            self.state = 1 if self.left else 3
        return i, False
