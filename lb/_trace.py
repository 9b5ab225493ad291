"""Trace identity: the W3C `traceparent` the edge LB gives a request, and the trace id a
waypoint reads back (DESIGN.md §9).

The version-consistency backend keeps one distributed transaction on one version of each
service; a transaction is named by its trace id. Applications only propagate trace context,
as OpenTelemetry-instrumented ones do: the edge makes sure there is some.

- `edge_traceparent(value)`: what the edge forwards: the client's `traceparent` when it is a
  valid one (W3C Trace Context level 1, §3.2), else a new one (version 00, a random 16-byte
  trace id, a random 8-byte parent id, flags 01: sampled).
- `trace_id(headers, extra)`: the trace id of a call: the trace-id field of `traceparent`
  (never the whole header: every hop sends a new parent id), else `x-b3-traceid` (16 or 32
  hex digits, a 16-digit id widened to 32 as B3 interop does), else the value of the header
  named `extra` (an application's own correlation id; printable, at most MAX_EXTRA bytes).

Pure functions on bytes; no allocation beyond the result on the usual paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

__all__ = ["MAX_EXTRA", "edge_traceparent", "new_traceparent", "trace_id",
           "traceparent_trace_id", "valid_traceparent"]

MAX_EXTRA = 128  # bytes of an application's own trace header taken as a trace id
_HEX = frozenset(b"0123456789abcdef")
_ZERO_TRACE = b"0" * 32
_ZERO_PARENT = b"0" * 16
_B3 = re.compile(rb"(?:[0-9a-fA-F]{16}){1,2}")
_PRINTABLE = re.compile(rb"[\x21-\x7e]+")  # visible ASCII, no spaces (a token)


def _hex(part: bytes) -> bool:
    return _HEX.issuperset(part)


def traceparent_trace_id(value: bytes) -> bytes | None:
    """The trace-id field of a valid `traceparent` value, else None.

    Valid (W3C Trace Context §3.2): `VV-TTTT...(32)-PPPP...(16)-FF`, lower-case hex, version
    not ff, trace id and parent id not all zeros; version 00 is exactly 55 characters, a
    later version may carry more fields after a '-' (§3.2.4, "future versions").
    """
    value = value.strip(b" \t")
    if len(value) < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = value[:2]
    if not _hex(version) or version == b"ff":
        return None
    if version == b"00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55:56] != b"-":
        return None
    trace, parent, flags = value[3:35], value[36:52], value[53:55]
    if not (_hex(trace) and _hex(parent) and _hex(flags)):
        return None
    if trace == _ZERO_TRACE or parent == _ZERO_PARENT:
        return None
    return trace


def valid_traceparent(value: bytes) -> bool:
    """True when `value` is a `traceparent` the LB keeps."""
    return traceparent_trace_id(value) is not None


def new_traceparent() -> bytes:
    """A fresh `traceparent`: version 00, random trace and parent ids, sampled."""
    raw = os.urandom(24).hex().encode()
    # os.urandom cannot realistically give 16 zero bytes; the check keeps the value valid.
    if raw[:32] == _ZERO_TRACE or raw[32:] == _ZERO_PARENT:
        return new_traceparent()
    return b"00-" + raw[:32] + b"-" + raw[32:] + b"-01"


def edge_traceparent(values: list[bytes] | None) -> tuple[bytes, bool]:
    """The `traceparent` the edge forwards for the request's `traceparent` lines, and whether
    it is new. One valid line is kept; none, an invalid one or several (§3.2: a repeated
    header is invalid) get a new one."""
    if values is not None and len(values) == 1:
        value = values[0].strip(b" \t")
        if traceparent_trace_id(value) is not None:
            return value, False
    return new_traceparent(), True


def _b3(value: bytes) -> bytes | None:
    value = value.strip(b" \t")
    if not _B3.fullmatch(value):
        return None
    value = value.lower()
    if len(value) == 16:
        value = b"0" * 16 + value
    return None if value == _ZERO_TRACE else value


def trace_id(headers: Iterable[tuple[bytes, bytes]], extra: bytes = b"") -> str | None:
    """The trace id of a request with these header lines (names in any case), or None.

    `traceparent` first (its trace-id field), then `x-b3-traceid`, then the header named
    `extra` (lower-case name; b"" for none). An invalid value of one is skipped, not fatal:
    the next source may still name the trace.
    """
    parent = b3 = own = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"traceparent":
            parent = value if parent is None else b""  # twice: invalid (§3.2)
        elif lower == b"x-b3-traceid":
            b3 = value if b3 is None else b3
        elif extra and lower == extra and own is None:
            own = value
    if parent:
        found = traceparent_trace_id(parent)
        if found is not None:
            return found.decode()
    if b3 is not None:
        found = _b3(b3)
        if found is not None:
            return found.decode()
    if own is not None:
        own = own.strip(b" \t")
        if 0 < len(own) <= MAX_EXTRA and _PRINTABLE.fullmatch(own):
            return own.decode()
    return None
