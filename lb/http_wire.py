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
_HEADER_BLOCK = re.compile(rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*)*")
_REQUEST_DROP_KEYS = tuple(b"\r\n" + name + b":" for name in sorted(REQUEST_DROP))
_RESPONSE_DROP_KEYS = tuple(b"\r\n" + name + b":" for name in sorted(RESPONSE_DROP))
_PLAIN_TOKENS = {b"close", b"keep-alive", b"upgrade", b""}
# One C-level search tells whether any header must go: the common request has none.
_REQUEST_DROP_ANY = re.compile(b"|".join(re.escape(k) for k in _REQUEST_DROP_KEYS))
_RESPONSE_DROP_ANY = re.compile(b"|".join(re.escape(k) for k in _RESPONSE_DROP_KEYS))


def _values(lower: bytes, original: bytes, key: bytes) -> list[bytes]:
    """Every value of the header whose "\r\nname:" (lower-case) is `key`."""
    found = []
    pos = lower.find(key)
    while pos >= 0:
        start = pos + len(key)
        end = lower.find(b"\r\n", start)
        if end < 0:
            end = len(lower)
        found.append(original[start:end].strip(b" \t"))
        pos = lower.find(key, end)
    return found


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


def _tokens(lower: bytes) -> set[bytes]:
    if b"\r\nconnection:" not in lower:
        return set()
    value = b",".join(_values(lower, lower, b"\r\nconnection:"))
    return {t.strip() for t in value.split(b",")}


def _map(block: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            found[name.decode("latin-1").strip().lower()] = value.strip().decode("latin-1")
    return found


class Request:
    """A parsed request head and what the proxy needs from it."""

    __slots__ = ("method", "target", "version", "block", "length", "chunked", "keep_alive",
                 "host", "forwarded_for", "upgrade", "expect_continue", "idempotent")

    def __init__(self, method: bytes, target: bytes, version: bytes) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.block = b""  # header lines to forward, each preceded by CRLF
        self.length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.host: bytes | None = None
        self.forwarded_for: bytes | None = None
        self.upgrade: bytes | None = None
        self.expect_continue = False
        self.idempotent = False

    def header_map(self) -> dict[str, str]:
        """The forwarded headers as {lower-case name: value} (for routing policies)."""
        return _map(self.block)

    @property
    def has_body(self) -> bool:
        """True when a body follows the head."""
        return self.chunked or bool(self.length)

    def head_for_backend(self, peer: bytes, port: bytes) -> bytes:
        """The request head to send to a backend, hop-by-hop headers out, X-Forwarded-* in."""
        xff = self.forwarded_for + b", " + peer if self.forwarded_for else peer
        out = [self.method, b" ", self.target, b" ", self.version, self.block,
               b"\r\nX-Forwarded-For: ", xff, b"\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: ",
               port]
        if self.host is not None:
            out += (b"\r\nX-Forwarded-Host: ", self.host)
        if self.upgrade is not None:
            out += (b"\r\nConnection: upgrade\r\nUpgrade: ", self.upgrade)
        out.append(b"\r\n\r\n")
        return b"".join(out)


def parse_request(head: bytes) -> Request:
    """Parse a request head (without its final CRLF CRLF); BadRequest when malformed."""
    line_end = head.find(b"\r\n")
    if line_end < 0:
        request_line, original = head, b""
    else:
        request_line, original = head[:line_end], head[line_end:]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise BadRequest("malformed request line")
    req = Request(*parts)
    if not _TOKEN.fullmatch(req.method):
        raise BadRequest("invalid method")
    if req.version != b"HTTP/1.1" and req.version != b"HTTP/1.0":
        raise BadRequest("unsupported HTTP version")
    if not _TARGET.fullmatch(req.target):
        raise BadRequest("invalid request target")
    if original and not _HEADER_BLOCK.fullmatch(original):
        raise BadRequest("malformed header line")
    lower = original.lower()
    if b"\r\ncontent-length:" in lower:
        lengths = _values(lower, original, b"\r\ncontent-length:")
        if not all(v.isdigit() for v in lengths) or len(set(map(int, lengths))) != 1:
            raise BadRequest("invalid Content-Length")
        req.length = int(lengths[0])
    if b"\r\ntransfer-encoding:" in lower:
        transfer = b",".join(_values(lower, lower, b"\r\ntransfer-encoding:"))
        if req.length is not None:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        if transfer.split(b",")[-1].strip() != b"chunked":
            raise BadRequest("unsupported Transfer-Encoding")
        req.chunked = True
    if b"\r\nhost:" in lower:
        hosts = _values(lower, original, b"\r\nhost:")
        if len(hosts) > 1:
            raise BadRequest("more than one Host header")
        req.host = hosts[0]
    if b"\r\nx-forwarded-for:" in lower:
        req.forwarded_for = b", ".join(_values(lower, original, b"\r\nx-forwarded-for:"))
    tokens = _tokens(lower)
    if b"upgrade" in tokens and b"\r\nupgrade:" in lower:
        req.upgrade = _values(lower, original, b"\r\nupgrade:")[0]
    if b"\r\nexpect:" in lower:
        req.expect_continue = b"100-continue" in _values(lower, lower, b"\r\nexpect:")
    if req.version == b"HTTP/1.1":
        req.keep_alive = b"close" not in tokens
    else:
        req.keep_alive = b"keep-alive" in tokens
    if _REQUEST_DROP_ANY.search(lower):
        for key in _REQUEST_DROP_KEYS:
            if key in lower:
                original, lower = _cut(original, lower, key)
    if tokens:
        for token in tokens - _PLAIN_TOKENS:
            original, lower = _cut(original, lower, b"\r\n" + token + b":")
    req.block = original
    req.idempotent = req.method in (b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE")
    return req


class Response:
    """A parsed response head: status, framing, reuse, and the head to send to the client."""

    __slots__ = ("status", "length", "chunked", "reusable", "head")

    def __init__(self, status: int) -> None:
        self.status = status
        self.length: int | None = None
        self.chunked = False
        self.reusable = False
        self.head = b""  # the status line and the kept header lines, each preceded by CRLF

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


def parse_response(head: bytes, upgrade: bool) -> Response:
    """Parse a backend's response head; ValueError when it is not HTTP/1.x."""
    line_end = head.find(b"\r\n")
    status_line = head if line_end < 0 else head[:line_end]
    original = b"" if line_end < 0 else head[line_end:]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"malformed status line {status_line[:80]!r}")
    resp = Response(int(parts[1]))
    lower = original.lower()
    if b"\r\ntransfer-encoding:" in lower:
        coding = _values(lower, lower, b"\r\ntransfer-encoding:")[-1]
        resp.chunked = coding.endswith(b"chunked")
    if not resp.chunked and b"\r\ncontent-length:" in lower:
        value = _values(lower, lower, b"\r\ncontent-length:")[0]
        if not value.isdigit():
            raise ValueError("invalid Content-Length in the answer")
        resp.length = int(value)
    tokens = _tokens(lower)
    if parts[0] == b"HTTP/1.1":
        resp.reusable = b"close" not in tokens
    else:
        resp.reusable = b"keep-alive" in tokens
    if not (resp.status == 101 and upgrade) and _RESPONSE_DROP_ANY.search(lower):
        for key in _RESPONSE_DROP_KEYS:
            if key in lower:
                original, lower = _cut(original, lower, key)
        for token in tokens - _PLAIN_TOKENS:
            original, lower = _cut(original, lower, b"\r\n" + token + b":")
    resp.head = status_line + original
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
