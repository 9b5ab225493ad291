"""The L4 data plane: forward each TCP connection of a frontend to one backend endpoint.

This is the per-upgrade relay of DESIGN.md section 5: on a generation network it answers for
an unchanged service's name and forwards to the real service on the old network. Each
connection picks its group and endpoint at accept time; a refused or timed-out connect is
retried on another endpoint (nothing was sent yet). Half-closes are passed on, so protocols
that shut down their write side (e.g. a client sending EOF) still work. A connection with no
bytes in either direction for `timeouts.tunnel` seconds is cut, so none is held forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lb._backends import Endpoint, GroupRuntime
    from lb._balancer import Balancer, FrontendRuntime

__all__ = ["IdleClock", "TcpRelay", "pipe"]

log = logging.getLogger("dans.lb")
CHUNK = 1 << 16


class IdleClock:
    """When either direction of one relayed connection last moved a byte."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.last = time.monotonic()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                idle: IdleClock) -> None:
    try:
        while True:
            try:
                data = await asyncio.wait_for(reader.read(CHUNK), idle.limit)
            except TimeoutError:
                if time.monotonic() - idle.last < idle.limit:
                    continue  # the other direction is busy: the connection is not idle
                writer.transport.abort()
                return
            idle.last = time.monotonic()
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
                idle = IdleClock(fe.spec.timeouts.tunnel)
                done = await asyncio.gather(pipe(reader, up_writer, idle),
                                            pipe(up_reader, writer, idle),
                                            return_exceptions=True)
                if any(isinstance(d, BaseException) for d in done):
                    up_writer.transport.abort()
                    writer.transport.abort()
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
