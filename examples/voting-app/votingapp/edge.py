"""edge: a stand-in for Swarm's routing mesh on engines without IPVS (the test swarm).

A TCP proxy owning the published ports: each client connection goes to one running task of
the target service, picked at random from `tasks.NAME` looked up per connection (a task
leaves that list before it is stopped, like it leaves the ingress load balancer), trying
the next task when one refuses. Routes come from ROUTES="8080=vote:8080,8081=result:8080".
GET /healthz on HEALTH_PORT (8079) for the healthcheck. Not part of the app: see stacks/edge.yml.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from votingapp.common import base_app, log

CONNECT_TIMEOUT = 2.0


def routes() -> list[tuple[int, str, int]]:
    """(listen port, service, target port) from ROUTES."""
    found = []
    for item in os.environ.get("ROUTES", "8080=vote:8080").split(","):
        listen, _, target = item.strip().partition("=")
        service, _, port = target.partition(":")
        found.append((int(listen), service, int(port or listen)))
    return found


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _connect(service: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(f"tasks.{service}", port, type=socket.SOCK_STREAM)
    addrs = list({str(info[4][0]) for info in infos})
    random.shuffle(addrs)
    last: Exception = OSError(f"no task of {service}")
    for addr in addrs:
        try:
            return await asyncio.wait_for(asyncio.open_connection(addr, port), CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            last = exc
    raise last


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def handler(service: str, port: int, live: set[asyncio.Task[None]]) -> Handler:
    """The connection handler for one route."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        live.add(task)  # type: ignore[arg-type]
        try:
            try:
                up_reader, up_writer = await _connect(service, port)
            except (TimeoutError, OSError) as exc:
                log(f"no backend for {service}: {exc}")
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            up_writer.close()
        finally:
            writer.close()
            live.discard(task)

    return handle


async def run() -> None:
    """Serve every route and the health endpoint until SIGTERM; then drain open connections."""
    live: set[asyncio.Task[None]] = set()
    servers = [
        await asyncio.start_server(handler(service, port, live), "0.0.0.0", listen)
        for listen, service, port in routes()
    ]
    runner = web.AppRunner(base_app())
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", int(os.environ.get("HEALTH_PORT", "8079"))).start()
    log(f"routing {routes()}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    if live:
        await asyncio.wait(list(live), timeout=float(os.environ.get("SHUTDOWN_TIMEOUT", "10")))
    await runner.cleanup()


def main() -> None:
    """Run the edge proxy."""
    asyncio.run(run())
