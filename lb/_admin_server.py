"""Serving the admin API: aiohttp's handler behind a guard that times every request head.

aiohttp's server closes idle keep-alive connections, but it gives a client that sends a
request head (or a body) byte by byte all the time it wants: one slow client per admin
connection could hold sockets and handlers forever. The data path times every phase
(`lb._http_engine`); the admin API does the same here. `TimedAdmin` wraps aiohttp's protocol,
hands it every byte unchanged, and feeds a copy to llhttp only to see where messages begin
and end: a head must be complete within `timeout` seconds of its first byte (or of the
connection, for the first one), and a body may pause at most `timeout` seconds between two
reads. A head that misses its deadline gets 408 with a JSON error (aiohttp has not seen the
request, so nothing else was written for it) and the connection is closed; a stalled body
only closes the connection, since aiohttp may have answered already (a 401 is sent before
the body is read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import httptools
from aiohttp import web

from lb._settings import Settings
from lb.errors import LBError

__all__ = ["ADMIN_IDLE", "AdminServer", "TimedAdmin", "start_admin"]

log = logging.getLogger("dans.lb")
ADMIN_IDLE = 15.0  # seconds an idle keep-alive admin connection stays open
_TIMED_OUT = (b'{"error": "the request did not arrive in time"}')
_ANSWER_408 = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
               % (len(_TIMED_OUT), _TIMED_OUT))


class TimedAdmin(asyncio.Protocol):
    """One admin connection: aiohttp's protocol inside, the head and body deadlines outside."""

    def __init__(self, inner: asyncio.Protocol, timeout: float) -> None:
        self.inner = inner
        self.timeout = timeout
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.in_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._arm()  # the first head must come in time too
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.parser is not None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                # aiohttp answers what it cannot parse itself (400) and closes; an upgrade
                # (none of the admin routes takes one) ends the tracking too.
                self.parser = None
                self._disarm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.parser = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- llhttp callbacks: where requests begin and end --------------------------------------

    def on_message_begin(self) -> None:
        self._arm()

    def on_headers_complete(self) -> None:
        self.in_body = True
        self._arm()  # now the body's idle time (a bodiless request completes at once)

    def on_body(self, data: bytes) -> None:
        self._arm()

    def on_message_complete(self) -> None:
        self.in_body = False
        self._disarm()  # aiohttp answers; its keep-alive timeout takes the idle time after

    # -- deadlines ---------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            log.info("admin API: a client did not send its request in time; closed")
            if not self.in_body:
                transport.write(_ANSWER_408)
            transport.close()


class AdminServer:
    """The admin API's listening socket and its aiohttp runner."""

    def __init__(self, runner: web.AppRunner, server: asyncio.AbstractServer) -> None:
        self.runner = runner
        self.server = server

    async def cleanup(self) -> None:
        """Stop listening, close the connections, clean the application up."""
        self.server.close()
        await self.runner.cleanup()


async def start_admin(app: web.Application, settings: Settings) -> AdminServer:
    """Serve the admin app on its TCP port, or on a Unix socket for a worker."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=ADMIN_IDLE)
    await runner.setup()
    handler = cast(Callable[[], Any], runner.server)
    timeout = settings.admin_timeout

    def factory() -> TimedAdmin:
        return TimedAdmin(handler(), timeout)

    loop = asyncio.get_running_loop()
    try:
        if settings.admin_unix:
            server = await loop.create_unix_server(factory, settings.admin_unix)
        else:
            # No SO_REUSEPORT: a second LB on the same admin port is refused.
            server = await loop.create_server(factory, settings.admin_host,
                                              settings.admin_port, reuse_address=True)
    except (OSError, OverflowError, UnicodeError) as exc:
        await runner.cleanup()
        where = settings.admin_unix or f"{settings.admin_host}:{settings.admin_port}"
        why = getattr(exc, "strerror", None) or str(exc)
        raise LBError(f"cannot serve the admin API on {where}: {why}") from None
    return AdminServer(runner, server)
