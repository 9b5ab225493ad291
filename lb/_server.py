"""Running the LB: one process or several workers, from validated `lb._settings.Settings`.

With one worker the process serves the frontends and the admin API itself. With N workers,
N child processes each serve every frontend on SO_REUSEPORT sockets (the kernel spreads
connections over them) and an internal admin API on a Unix socket; the parent serves the
public admin API and fans each command out to all workers (`lb._workers`).

SIGTERM or SIGINT: stop accepting, let in-flight requests finish (up to the grace period),
close, exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from lb._admin import make_admin_app
from lb._admin_server import start_admin
from lb._admin_sync import start_state
from lb._balancer import Balancer
from lb._progress import Progress, UpgradeStatus
from lb._settings import DEFAULT_ADMIN_PORT, Settings, load_table, load_token
from lb.table import RoutingTable

__all__ = ["DEFAULT_ADMIN_PORT", "LocalController", "Settings", "load_table", "load_token",
           "run", "serve"]

log = logging.getLogger("dans.lb")
GC_THRESHOLD = 20_000  # container allocations between two young-generation collections


class LocalController:
    """Drives the balancer of this process (the admin API's Controller).

    The process that serves the public admin API keeps the upgrade's progress (`progress`);
    a worker behind a parent (`lb._workers`) only takes the versions, since the parent adds
    its workers' samples up and exports the progress once itself.
    """

    def __init__(self, balancer: Balancer, *, progress: bool = True) -> None:
        self.balancer = balancer
        self.progress = Progress() if progress else None

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

    async def upgrade(self, status: UpgradeStatus, versions: dict[str, str]) -> dict[str, Any]:
        """Keep the upgrade's progress; count each group's requests under its version."""
        self.balancer.set_versions(versions)
        state = self.progress.update(status) if self.progress is not None else None
        return {"upgrade": state, "versions": dict(self.balancer.metrics.versions)}

    async def metrics(self) -> str:
        """Prometheus text."""
        text = self.balancer.metrics.render()
        return text + self.progress.render() if self.progress is not None else text


async def serve(settings: Settings, ready: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run one LB process until SIGTERM/SIGINT, then shut down gracefully."""
    # A replica among several starts on its peers' table when it is newer (lb._admin_sync).
    settings, state = await start_state(settings)
    if settings.workers > 1:
        from lb._workers import serve_workers

        await serve_workers(settings, state)
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A worker (its admin API on a Unix socket) shares its ports with the other workers.
    balancer = Balancer(reuse_port=settings.admin_unix is not None)
    try:
        await balancer.start(settings.table)
        if not settings.token:
            log.warning("no admin token (DANS_LB_TOKEN, DANS_LB_TOKEN_FILE): the admin API "
                        "refuses every command")
        controller = LocalController(balancer, progress=settings.admin_unix is None)
        runner = await start_admin(make_admin_app(controller, settings.token, state), settings)
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
