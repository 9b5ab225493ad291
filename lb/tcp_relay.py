"""The L4 data plane: forward each TCP connection of a frontend to one backend endpoint.

This is the per-upgrade relay of DESIGN.md section 5: on a generation network it answers for
an unchanged service's name and forwards to the real service on the old network. Each
connection picks its group and endpoint at accept time; a refused or timed-out connect is
retried on another endpoint (nothing was sent yet). Half-closes are passed on, so protocols
that shut down their write side (e.g. a client sending EOF) still work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lb.backends import Endpoint, GroupRuntime
    from lb.balancer import Balancer, FrontendRuntime

__all__ = ["TcpRelay"]

log = logging.getLogger("dans.lb")
CHUNK = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


class TcpRelay:
    """The connection handler of one TCP frontend."""

    def __init__(self, balancer: Balancer, fe: FrontendRuntime) -> None:
        self.balancer = balancer
        self.fe = fe
        self.connections: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one client connection until both sides have closed."""
        fe = self.fe
        metrics = self.balancer.metrics
        started = time.perf_counter()
        group = fe.policy.choose(fe, None)
        if group is None:
            metrics.error(fe.name, "-", "no_group")
            writer.transport.abort()
            return
        group.begin()
        self.connections.add(writer)
        code = 0
        try:
            connected = await self._connect(fe, group)
            if connected is None:
                code = 502
                writer.transport.abort()
                return
            ep, (up_reader, up_writer) = connected
            ep.in_flight += 1
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                ep.in_flight -= 1
                up_writer.close()
        finally:
            self.connections.discard(writer)
            writer.close()
            group.done(code, time.perf_counter() - started)

    async def _connect(self, fe: FrontendRuntime, group: GroupRuntime
                       ) -> tuple[Endpoint, tuple[asyncio.StreamReader,
                                                  asyncio.StreamWriter]] | None:
        tried: set[Endpoint] = set()
        for _attempt in range(fe.spec.retries + 1):
            ep = await group.pick_or_refresh(tried)
            if ep is None:
                break
            tried.add(ep)
            try:
                streams = await asyncio.wait_for(
                    asyncio.open_connection(ep.host, ep.port, limit=CHUNK),
                    fe.spec.timeouts.connect,
                )
            except (TimeoutError, OSError) as exc:
                ep.mark_down()
                group.series.error("connect")
                log.info("frontend %s: cannot connect to %s: %r", fe.name, ep.addr, exc)
                continue
            ep.mark_up()
            return ep, streams
        if not tried:
            group.series.error("no_backend")
        return None

    def abort_all(self) -> None:
        """Cut every relayed connection (at the end of a shutdown grace period)."""
        for writer in list(self.connections):
            writer.transport.abort()
