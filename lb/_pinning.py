"""Version pinning at the edge: a client keeps the version it loaded while that version is kept.

The "pinned" policy (a frontend's `"policy": "pinned"`) lets every group of the frontend
carry a `version`. Every answer says which version served it, twice: a `dans-version` cookie
(for browsers) and an `X-Dans-Version` header (for API clients). A new request names the
version it wants with the `X-Dans-Version` request header, the `dans-version` cookie or a
`?dans-version=` query parameter (first found, in that order); or, when the frontend sets
`pin_header` (e.g. `Accept-Version`, from the stack's `x-dans.version_header`), with that
application header alone. The request goes to the group serving that version if the group
takes new requests, else to the active group: an unknown, retired or malformed version is
simply the current one.

The values come from clients, so they are hostile: a stamp is read from at most
`MAX_FIELD` bytes of each place, must match `lb.table.VERSION` (a short token, nothing to
decode or escape), and is only ever compared with the versions of the table in force; the
metrics count pinned requests per known version only, so a client cannot grow a label set.
"""

from __future__ import annotations

from collections.abc import Mapping
from time import time
from typing import TYPE_CHECKING

from lb.table import ACTIVE, VERSION

if TYPE_CHECKING:
    from lb._backends import GroupRuntime
    from lb._balancer import FrontendRuntime

__all__ = ["COOKIE", "HEADER", "MAX_FIELD", "QUERY", "TARGET", "PinnedPolicy", "request_target",
           "stamp", "wanted_version"]

COOKIE = "dans-version"
HEADER = "x-dans-version"
QUERY = "dans-version"
TARGET = ":target"  # the pseudo-header under which the cycle passes the request target
MAX_FIELD = 8192  # bytes of a Cookie header or target looked at; the rest is ignored


def request_target(head_data: bytes) -> str:
    """The request target of a head as the LB forwards it ("GET /x?y HTTP/1.1\\r\\n...")."""
    line = head_data[: head_data.find(b"\r\n")]
    first = line.find(b" ")
    last = line.rfind(b" ")
    return line[first + 1:last].decode("latin-1") if 0 <= first < last else ""


def _valid(value: str) -> str | None:
    value = value.strip(" \t")
    return value if VERSION.fullmatch(value) else None


def _from_cookie(header: str) -> str | None:
    for pair in header[:MAX_FIELD].split(";"):
        name, sep, value = pair.partition("=")
        if sep and name.strip(" \t") == COOKIE:
            return _valid(value.strip(' \t"'))
    return None


def _from_query(target: str) -> str | None:
    _, sep, query = target[:MAX_FIELD].partition("#")[0].partition("?")
    if not sep:
        return None
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        if sep and name == QUERY:
            return _valid(value)
    return None


def wanted_version(headers: Mapping[str, str], pin_header: str = "") -> str | None:
    """The version a request asks for, or None (no stamp, or a malformed one)."""
    if pin_header:
        value = headers.get(pin_header.lower())
        return _valid(value[:MAX_FIELD]) if value is not None else None
    value = headers.get(HEADER)
    if value is not None:
        return _valid(value[:MAX_FIELD])
    cookie = headers.get("cookie")
    found = _from_cookie(cookie) if cookie is not None else None
    if found is not None:
        return found
    return _from_query(headers.get(TARGET, ""))


def stamp(version: str) -> bytes:
    """The header lines (CRLF-ended) that tell a client which version answered."""
    v = version.encode("ascii")
    return (b"X-Dans-Version: " + v + b"\r\nSet-Cookie: " + COOKIE.encode() + b"=" + v
            + b"; Path=/; SameSite=Lax; HttpOnly\r\n")


class PinnedPolicy:
    """A request goes to the group of the version it presents, else to the active group."""

    needs_headers = True
    stamps = True

    def choose(
        self, fe: FrontendRuntime, headers: Mapping[str, str] | None
    ) -> GroupRuntime | None:
        """The group serving the requested version if it takes requests, else the active one."""
        active = fe.groups.get(fe.active)
        want = wanted_version(headers, fe.spec.pin_header) if headers is not None else None
        if want is not None and (active is None or active.spec.version != want):
            for group in fe.groups.values():
                if group.spec.version == want and group.state == ACTIVE:
                    fe.metrics.pinned(fe.name, want, time())
                    return group
        if active is None or active.state != ACTIVE:
            return None
        return active

    def answered(self, fe: FrontendRuntime, group: GroupRuntime,
                 headers: Mapping[str, str] | None) -> None:
        """Nothing to learn: the answer is stamped by `stamp_of`."""

    def stamp_of(self, group: GroupRuntime) -> bytes:
        """What to add to the answer's head of a request `group` served."""
        return stamp(group.spec.version) if group.spec.version else b""
