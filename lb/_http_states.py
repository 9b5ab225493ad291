"""The client connection's state table and limits (`lb._http_conn.ClientConnection`).

    IDLE     no request yet (keep-alive timeout)     -> HEAD, CLOSED
    HEAD     a request head is arriving (header)     -> BODY, WAIT, CLOSED
    BODY     its body is arriving (body idle)        -> WAIT, DISCARD, CLOSED
    WAIT     request complete, answer pending (read) -> IDLE, HEAD, BODY, WAIT, TUNNEL, CLOSED
    DISCARD  answered early; the rest of the body is read and dropped, bounded -> CLOSED
    TUNNEL   after a 101: bytes pass both ways (tunnel idle) -> CLOSED
"""

from __future__ import annotations

__all__ = ["BODY", "CLOSED", "DISCARD", "DISCARD_LIMIT", "DISCARD_TIME", "HEAD", "IDLE",
           "MAX_HEAD", "MAX_HEADERS", "MAX_PIPELINE", "MAX_RAW_HEAD", "MAX_TARGET", "REASONS",
           "STATES", "TRANSITIONS", "TUNNEL", "WAIT"]

IDLE, HEAD, BODY, WAIT, DISCARD, TUNNEL, CLOSED = range(7)
STATES = ("IDLE", "HEAD", "BODY", "WAIT", "DISCARD", "TUNNEL", "CLOSED")
TRANSITIONS: dict[int, frozenset[int]] = {
    IDLE: frozenset({HEAD, CLOSED}),
    HEAD: frozenset({BODY, WAIT, CLOSED}),
    BODY: frozenset({WAIT, DISCARD, CLOSED}),
    WAIT: frozenset({IDLE, HEAD, BODY, WAIT, TUNNEL, CLOSED}),
    DISCARD: frozenset({CLOSED}),
    TUNNEL: frozenset({CLOSED}),
    CLOSED: frozenset({CLOSED}),
}
# The hot path makes these three changes without the look-up (`ClientConnection._to`).
assert HEAD in TRANSITIONS[IDLE] and WAIT in TRANSITIONS[HEAD] and IDLE in TRANSITIONS[WAIT]
MAX_TARGET = 8 * 1024  # 414 beyond
MAX_HEAD = 64 * 1024  # 431 beyond (request line and headers)
MAX_HEADERS = 100  # 431 beyond
MAX_PIPELINE = 32  # requests parsed ahead of the current one; the client must wait beyond
MAX_RAW_HEAD = 4096  # longer heads are not kept as bytes for the same-request check
DISCARD_LIMIT = 1 << 20  # body bytes read and dropped after an early answer, then close
DISCARD_TIME = 5.0
REASONS = {400: b"Bad Request", 405: b"Method Not Allowed", 408: b"Request Timeout",
           414: b"URI Too Long", 417: b"Expectation Failed",
           431: b"Request Header Fields Too Large", 501: b"Not Implemented",
           502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
           505: b"HTTP Version Not Supported"}

