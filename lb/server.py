"""Running the LB: settings from flags and environment, one process or several workers.

Start-up needs no admin call: the initial routing table comes from `DANS_LB_CONFIG` (JSON
text, or a path to a JSON file) or `--config FILE`; the admin token from `DANS_LB_TOKEN`, or a
file named by `DANS_LB_TOKEN_FILE` (a Docker secret), or /run/secrets/dans_lb_token.

With one worker the process serves the frontends and the admin API itself. With N workers,
N child processes each serve every frontend on SO_REUSEPORT sockets (the kernel spreads
connections over them) and an internal admin API on a Unix socket; the parent serves the
public admin API and fans each command out to all workers (`lb.workers`).

SIGTERM or SIGINT: stop accepting, let in-flight requests finish (up to the grace period),
close, exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from lb.admin import make_admin_app
from lb.balancer import Balancer
from lb.table import RoutingTable
from upgrade_manager.errors import LBError

__all__ = ["LocalController", "Settings", "load_table", "load_token", "run", "serve"]

log = logging.getLogger("dans.lb")
DEFAULT_ADMIN_PORT = 9900
DEFAULT_SECRET = "/run/secrets/dans_lb_token"
ADMIN_IDLE = 15.0
GC_THRESHOLD = 20_000  # container allocations between two young-generation collections


@dataclass(frozen=True)
class Settings:
    """Everything one LB process needs to start."""

    table: RoutingTable
    token: str | None
    admin_host: str = "0.0.0.0"
    admin_port: int = DEFAULT_ADMIN_PORT
    admin_unix: str | None = None  # a worker's internal admin socket
    grace: float = 30.0
    workers: int = 1


def load_table(config_file: str | None, env: dict[str, str] | None = None) -> RoutingTable:
    """The initial table: `config_file`, else DANS_LB_CONFIG (JSON or a path), else empty."""
    env = dict(os.environ) if env is None else env
    if config_file:
        return _read_table(Path(config_file))
    raw = env.get("DANS_LB_CONFIG", "").strip()
    if not raw:
        return RoutingTable()
    if raw.startswith("{"):
        return RoutingTable.from_json(raw)
    return _read_table(Path(raw))


def _read_table(path: Path) -> RoutingTable:
    try:
        text = path.read_text()
    except OSError as exc:
        raise LBError(f"cannot read the routing table {path}: {exc.strerror}") from None
    try:
        return RoutingTable.from_json(text)
    except LBError as exc:
        raise LBError(f"{path}: {exc}") from None


def load_token(token_file: str | None, env: dict[str, str] | None = None) -> str | None:
    """The admin token: `token_file`, DANS_LB_TOKEN_FILE, DANS_LB_TOKEN, or the default secret."""
    env = dict(os.environ) if env is None else env
    path = token_file or env.get("DANS_LB_TOKEN_FILE")
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise LBError(f"cannot read the admin token file {path}: {exc.strerror}") from None
        if not token:
            raise LBError(f"the admin token file {path} is empty")
        return token
    if env.get("DANS_LB_TOKEN"):
        return env["DANS_LB_TOKEN"].strip()
    if Path(DEFAULT_SECRET).is_file():
        return Path(DEFAULT_SECRET).read_text().strip() or None
    return None


class LocalController:
    """Drives the balancer of this process (the admin API's Controller)."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    async def apply(self, table: RoutingTable) -> None:
        """Make `table` the routing table."""
        await self.balancer.apply(table)

    async def table(self) -> RoutingTable:
        """The routing table in force."""
        return self.balancer.table()

    async def switch(self, frontend: str, group: str) -> dict[str, Any]:
        """Make `group` the active group of `frontend`."""
        return self.balancer.switch(frontend, group)

    async def drain(self, frontend: str, group: str) -> dict[str, Any]:
        """Drain a group; report its in-flight count."""
        return self.balancer.drain(frontend, group)

    async def wait_drained(self, frontend: str, group: str, timeout: float) -> dict[str, Any]:
        """Wait until a group has nothing in flight."""
        return await self.balancer.wait_drained(frontend, group, timeout)

    async def status(self) -> dict[str, Any]:
        """Everything the balancer knows."""
        return {"workers": 1, **self.balancer.status()}

    async def metrics(self) -> str:
        """Prometheus text."""
        return self.balancer.metrics.render()


async def start_admin(app: web.Application, settings: Settings) -> web.AppRunner:
    """Serve the admin app on its TCP port, or on a Unix socket for a worker."""
    # Idle keep-alive admin connections are closed after ADMIN_IDLE seconds.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=ADMIN_IDLE)
    await runner.setup()
    site: web.BaseSite
    if settings.admin_unix:
        site = web.UnixSite(runner, settings.admin_unix)
    else:
        site = web.TCPSite(runner, settings.admin_host, settings.admin_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise LBError(f"cannot serve the admin API on port {settings.admin_port}: "
                      f"{exc.strerror}") from None
    return runner


async def serve(settings: Settings, ready: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run one LB process until SIGTERM/SIGINT, then shut down gracefully."""
    if settings.workers > 1:
        from lb.workers import serve_workers

        await serve_workers(settings)
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    balancer = Balancer()
    try:
        await balancer.start(settings.table)
        if not settings.token:
            log.warning("no admin token (DANS_LB_TOKEN, DANS_LB_TOKEN_FILE): the admin API "
                        "refuses every command")
        runner = await start_admin(make_admin_app(LocalController(balancer), settings.token),
                                   settings)
    except BaseException:
        await balancer.shutdown(0)
        raise
    log.info("admin API on %s", settings.admin_unix or f"{settings.admin_host}:"
             f"{settings.admin_port}")
    tune_gc()
    if ready is not None:
        await ready()
    try:
        await stop.wait()
        await balancer.shutdown(settings.grace)
    finally:
        await runner.cleanup()
    log.info("stopped")


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path.

    Every request allocates a few container objects that reference counting frees; with
    the default threshold (700) the collector still ran every ~100 requests and walked the
    whole young generation, and each full collection walked every module's objects.
    Freezing what start-up created and collecting the young generation less often took
    ~8% of the LB's Python time per request (measured with scripts/bench_lb.py's setup).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def run(settings: Settings) -> None:
    """Run `serve` on uvloop when it is installed, else on asyncio's loop."""
    loop_factory: Any = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings))
