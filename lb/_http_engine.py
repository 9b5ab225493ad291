"""The HTTP data plane of one frontend: the protocol factory, its connections, the sweep.

Each client connection is a `lb._http_conn.ClientConnection` (one llhttp parser, one state
table, one `lb._http_cycle.Cycle` per request); backend connections are `lb._upstream`'s,
pooled per endpoint. Timeouts are deadlines stored on the connections and checked by one
sweep per frontend: a request costs a float store per phase, not a timer.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import TYPE_CHECKING

from lb._http_conn import IDLE, STATES, TRANSITIONS, ClientConnection
from lb._upstream import UpstreamPool

if TYPE_CHECKING:
    from lb._balancer import Balancer, FrontendRuntime

__all__ = ["STATES", "TRANSITIONS", "ClientConnection", "HttpEngine", "UpstreamPool"]


class HttpEngine:
    """The HTTP engine of one frontend: the protocol factory, its connections, the sweep."""

    def __init__(self, balancer: Balancer, fe: FrontendRuntime, pool: UpstreamPool) -> None:
        self.balancer = balancer
        self.fe = fe
        self.pool = pool
        self.conns: set[ClientConnection] = set()
        self.port = str(fe.spec.listen).encode()
        self._sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> ClientConnection:
        return ClientConnection(self)

    def start(self) -> None:
        """Start the timeout sweep (inside the running loop)."""
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def stop(self) -> None:
        """Stop the timeout sweep."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _sweep(self) -> None:
        # Deadlines, not timers: a request costs one float store per phase, and one pass
        # over the connections a tick finds every expired one.
        while True:
            t = self.fe.spec.timeouts
            shortest = min(t.header, t.body, t.keepalive, t.read, t.tunnel)
            await asyncio.sleep(min(1.0, max(0.02, shortest / 5)))
            now = monotonic()
            for conn in list(self.conns):
                if 0.0 < conn.deadline <= now:
                    conn.client_timeout()
                elif 0.0 < conn.up_deadline <= now:
                    conn.backend_timeout()

    def close_idle(self) -> None:
        """Close client connections that wait for a request."""
        for conn in list(self.conns):
            if conn.state == IDLE:
                conn.close()

    def abort_all(self) -> None:
        """Cut every connection (the end of a shutdown grace period)."""
        for conn in list(self.conns):
            conn.abort()
