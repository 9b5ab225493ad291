"""Writes of one event-loop turn, sent together once the turn's reads are handled.

A proxy under load handles many ready sockets per turn of the loop. Writing each answer
the moment it is ready interleaves one `send` with each request's work, and every `send`
wakes a peer (the client, the backend) that has gone back to sleep meanwhile: that wake-up
cost the LB more CPU than its own Python code did. An `Outbox` keeps the bytes each
connection writes during a turn, in order, and sends them in one burst right after the
turn's I/O callbacks (`loop.call_soon`): a peer woken by the first of them finds the rest
ready, one `write` per connection and turn.

Order is kept per connection: every write of a `Queued` protocol goes through `send`, and
`close` / `write_eof` send what is queued first. Memory stays bounded: what a connection
queues in one turn is what one read produced, and it reaches the transport (and its
high-water mark, which pauses the other side) before the loop reads again.
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["Outbox", "Queued"]

log = logging.getLogger("dans.lb")


class Queued(asyncio.Protocol):
    """A protocol whose writes wait in its `outbox` until the end of the loop's turn."""

    transport: asyncio.Transport | None = None
    outbox: Outbox
    queued: list[bytes] | None = None  # bytes written this turn, not yet on the transport

    def send(self, data: bytes) -> None:
        """Write `data` after what this connection wrote before."""
        queued = self.queued
        if queued is None:
            self.queued = [data]
            self.outbox.mark(self)
        else:
            queued.append(data)

    def flush(self) -> None:
        """Hand what is queued to the transport now."""
        queued = self.queued
        if queued is None:
            return
        self.queued = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(queued[0] if len(queued) == 1 else b"".join(queued))

    def drop_queued(self) -> None:
        """Forget what is queued (the connection is cut)."""
        self.queued = None


class Outbox:
    """The connections that wrote during this turn of the loop; flushed once per turn."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Queued] = []
        self._scheduled = False

    def mark(self, conn: Queued) -> None:
        """`conn` queued its first bytes of this turn."""
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send what every connection queued (runs after the turn's I/O callbacks)."""
        self._scheduled = False
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
            try:
                conn.flush()
            except Exception:  # one broken transport must not hold the others' bytes
                log.exception("writing to a connection failed")
                conn.drop_queued()
