"""Backend connections of the fast HTTP engine and their keep-alive pool.

An `Upstream` belongs to one client connection while it carries that client's request and
answer, then goes back to the pool. Idle connections are reused newest first and dropped
after POOL_IDLE seconds, shorter than the idle timeout of common backends (5 s and up), so
the LB seldom sends into a connection the backend is closing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lb.fast_proxy import ClientConn

__all__ = ["POOL_IDLE", "Upstream", "UpstreamPool"]

POOL_IDLE = 4.0


class Upstream(asyncio.Protocol):
    """One connection to a backend endpoint; idle in the pool or serving one client."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.owner: ClientConn | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.owner is not None:
            self.owner.upstream_data(data)
        elif self.transport is not None:
            self.transport.close()  # bytes on an idle connection: not reusable

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.owner is not None:
            self.owner.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.pause_client()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.resume_client()

    def close(self) -> None:
        self.owner = None
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Idle keep-alive connections per endpoint; closed after POOL_IDLE seconds unused."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int], list[Upstream]] = {}

    def get(self, key: tuple[str, int], now: float) -> Upstream | None:
        """The newest idle connection to `key` still fresh at `now` (monotonic), or None."""
        conns = self.idle.get(key)
        while conns:
            up = conns.pop()
            if not up.closed and now - up.idle_since < POOL_IDLE:
                return up
            up.close()
        return None

    def put(self, up: Upstream, now: float) -> None:
        """Keep `up` for reuse; `now` is the monotonic time it became idle."""
        up.owner = None
        up.idle_since = now
        self.idle.setdefault(up.key, []).append(up)

    def close(self) -> None:
        for conns in self.idle.values():
            for up in conns:
                up.close()
        self.idle.clear()
