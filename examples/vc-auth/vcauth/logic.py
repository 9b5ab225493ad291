"""The pure part of the example: tokens per Auth version, trace context, judging answers.

Auth v1 tokens are `v1.USER.MAC` (HMAC-SHA256 of the user under v1's key, 16 hex digits);
Auth v2 changed the format incompatibly: `v2~B64(JSON)~MAC` under another key. A v1 token
fails verification in v2 and a v2 token in v1, as an incompatible API change does.

Every hop propagates W3C trace context: a call carries the caller's trace id with a new
parent (span) id (`child_traceparent`), so every service of a transaction sees one trace id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re

__all__ = ["KEYS", "TRACEPARENT", "child_traceparent", "issue", "judge", "merge_seen",
           "trace_id", "verify"]

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
KEYS = {"1": b"auth-v1-signing-key", "2": b"auth-v2-signing-key"}
_USER = re.compile(r"[A-Za-z0-9_-]{1,64}")


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a version-00 `traceparent`, else None."""
    m = TRACEPARENT.fullmatch((traceparent or "").strip())
    if m is None or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return None
    return m.group(1)


def child_traceparent(parent: str | None) -> str:
    """The `traceparent` of a call made while serving `parent`: the same trace id and a
    new parent id; a new trace when `parent` is missing or invalid."""
    trace = trace_id(parent) or os.urandom(16).hex()
    return f"00-{trace}-{os.urandom(8).hex()}-01"


def _mac(version: str, data: bytes, digits: int) -> str:
    return hmac.new(KEYS[version], data, hashlib.sha256).hexdigest()[:digits]


def issue(version: str, user: str) -> str:
    """A token for `user` as Auth `version` makes it."""
    if not _USER.fullmatch(user):
        raise ValueError(f"bad user name {user!r}")
    if version == "1":
        return f"v1.{user}.{_mac('1', user.encode(), 16)}"
    payload = base64.urlsafe_b64encode(json.dumps({"sub": user}).encode()).decode()
    return f"v2~{payload}~{_mac('2', payload.encode(), 32)}"


def verify(version: str, token: str) -> str | None:
    """The user a token was issued to, if Auth `version` accepts it; else None."""
    if version == "1":
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "v1" or not _USER.fullmatch(parts[1]):
            return None
        ok = hmac.compare_digest(parts[2], _mac("1", parts[1].encode(), 16))
        return parts[1] if ok else None
    parts = token.split("~")
    if len(parts) != 3 or parts[0] != "v2":
        return None
    if not hmac.compare_digest(parts[2], _mac("2", parts[1].encode(), 32)):
        return None
    try:
        user = json.loads(base64.urlsafe_b64decode(parts[1]))["sub"]
    except (ValueError, KeyError, TypeError):
        return None
    return user if isinstance(user, str) and _USER.fullmatch(user) else None


Seen = dict[str, list[str]]


def merge_seen(into: Seen, more: Seen) -> Seen:
    """Add what a callee reports (service -> versions it ran at) to `into`."""
    for service, versions in more.items():
        into.setdefault(service, []).extend(versions)
    return into


def judge(status: int, seen: Seen) -> str:
    """A transaction's outcome: "mixed" when one service answered it at two versions (even
    if it succeeded), else "ok" for a 200, else "failed"."""
    if any(len(set(v)) > 1 for v in seen.values()):
        return "mixed"
    return "ok" if status == 200 else "failed"
