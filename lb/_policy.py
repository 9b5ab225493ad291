"""How a new request or connection picks a group of its frontend.

The proxy asks the frontend's policy once per request, before anything is sent; a policy that
sets `needs_headers` sees the request's headers (lower-case names; None for TCP and for
policies that do not ask, which keeps the hot path free of header maps) and the answer's
(`answered`). The
"active" policy sends everything to the active group. A trace-pinning policy (the
version-consistency backend of DESIGN.md section 2) is a second implementation of the same
two methods: `choose` reads the trace id, returns the group the trace is pinned to if it is
not draining, else the active group, and stamps a trace id when there is none; `answered`
records which group a trace used so the admin API can report the DiffSet. Registering it in
`POLICIES` (and in `lb.table.POLICIES`) is all the rest of the LB needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from lb._pinning import PinnedPolicy
from lb.table import ACTIVE

if TYPE_CHECKING:
    from lb._backends import GroupRuntime
    from lb._balancer import FrontendRuntime

__all__ = ["POLICIES", "ActivePolicy", "Policy"]


class Policy(Protocol):
    """Chooses the group for one request and may learn from its answer."""

    needs_headers: bool
    stamps: bool  # whether `stamp_of` adds header lines to answers

    def choose(
        self, fe: FrontendRuntime, headers: Mapping[str, str] | None
    ) -> GroupRuntime | None:
        """The group for a new request, or None when no group may take it (503)."""

    def answered(self, fe: FrontendRuntime, group: GroupRuntime,
                 headers: Mapping[str, str] | None) -> None:
        """Called after a group answered a request (nothing to do for most policies)."""

    def stamp_of(self, group: GroupRuntime) -> bytes:
        """Header lines (CRLF-ended) to add to an answer `group` gave (with `stamps`)."""


class ActivePolicy:
    """Every new request goes to the frontend's active group, unless it is draining."""

    needs_headers = False
    stamps = False

    def choose(
        self, fe: FrontendRuntime, headers: Mapping[str, str] | None
    ) -> GroupRuntime | None:
        """The active group when it takes new requests."""
        group = fe.groups.get(fe.active)
        if group is None or group.state != ACTIVE:
            return None
        return group

    def answered(self, fe: FrontendRuntime, group: GroupRuntime,
                 headers: Mapping[str, str] | None) -> None:
        """Nothing to remember."""

    def stamp_of(self, group: GroupRuntime) -> bytes:
        """No stamp."""
        return b""


POLICIES: dict[str, Policy] = {"active": ActivePolicy(), "pinned": PinnedPolicy()}
