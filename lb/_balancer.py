"""The LB's state and lifecycle: routing table, frontends' listeners, commands, shutdown.

`Balancer` is what the admin API drives: `apply` a table, `switch` a frontend's active group,
`drain` a group, read `status`. A new table keeps the runtime state (in-flight counters,
endpoint health) of every group and frontend it still names; a request always holds its own
group, so groups removed from the table finish their in-flight requests undisturbed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from typing import Any

from lb._backends import GroupRuntime, Resolver
from lb._http_engine import HttpEngine, UpstreamPool
from lb._metrics import Metrics
from lb._policy import POLICIES, Policy
from lb._tcp_relay import TcpRelay
from lb.errors import LBError
from lb.table import ACTIVE, DRAINING, Frontend, RoutingTable, split_target

__all__ = ["Balancer", "FrontendRuntime", "check_free", "listen_socket"]

log = logging.getLogger("dans.lb")


def _bound(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError, UnicodeError) as exc:
        sock.close()
        why = getattr(exc, "strerror", None) or str(exc)
        raise LBError(f"cannot listen on {host}:{port}: {why} (is another LB or program "
                      "using it?)") from None
    return sock


def listen_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket that holds the port alone, or with `reuse_port` (SO_REUSEPORT)
    shared with the other worker processes of the same LB, which bind it the same way.

    Without `reuse_port` a port that any other socket listens on is refused (EADDRINUSE):
    a second `dans lb` never silently takes part of another's traffic.
    """
    sock = _bound(host, port, reuse_port and hasattr(socket, "SO_REUSEPORT"))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def check_free(host: str, port: int) -> None:
    """LBError when something listens on host:port already (even with SO_REUSEPORT).

    A multi-worker LB calls this before its workers bind a port with SO_REUSEPORT, so the
    group refuses a port held by another program as a single-process LB does."""
    _bound(host, port, reuse_port=False).close()


class FrontendRuntime:
    """A frontend as the data plane sees it: spec, live groups, active group, listener."""

    def __init__(self, spec: Frontend, resolver: Resolver, metrics: Metrics) -> None:
        self.name = spec.name
        self.spec = spec
        self.active = spec.active
        self.groups: dict[str, GroupRuntime] = {}
        self.policy: Policy = POLICIES[spec.policy]
        self.port = spec.listen
        self.server: asyncio.AbstractServer | None = None
        self.relay: TcpRelay | None = None
        self.http: HttpEngine | None = None
        self.metrics = metrics
        self.update(spec, resolver)

    def update(self, spec: Frontend, resolver: Resolver) -> None:
        """Take a new spec, keeping the runtime state of groups that stay."""
        self.spec = spec
        self.active = spec.active
        self.policy = POLICIES[spec.policy]
        groups: dict[str, GroupRuntime] = {}
        for name, gspec in spec.groups.items():
            group = self.groups.get(name)
            if group is None:
                group = GroupRuntime(frontend=spec.name, name=name, spec=gspec, resolver=resolver,
                                     series=self.metrics.series(spec.name, name))
            else:
                group.update(gspec)
            groups[name] = group
        for name, gone in self.groups.items():
            if name not in groups:
                self.metrics.retire(gone.series)
        self.groups = groups

    def recount(self) -> None:
        """Move each group whose version changed to the series of its new version.

        What is in flight moves along (it finishes under the new series), so the in-flight
        gauges stay right; the upgrade manager changes a version only while its group
        serves nothing (drained, or not yet routed to).
        """
        for name, group in self.groups.items():
            series = self.metrics.series(self.name, name)
            if series is not group.series:
                series.in_flight += group.series.in_flight
                group.series.in_flight = 0
                self.metrics.retire(group.series)
                group.series = series

    def same_listener(self, spec: Frontend) -> bool:
        """True when `spec` can keep this frontend's listening socket."""
        return (spec.listen, spec.host, spec.mode) == (
            self.spec.listen, self.spec.host, self.spec.mode)

    def current_spec(self) -> Frontend:
        """The spec with the live active group and group states (for GET routes)."""
        groups = {name: dataclasses.replace(g.spec, state=g.state)
                  for name, g in self.groups.items()}
        return dataclasses.replace(self.spec, active=self.active, groups=groups)

    def in_flight(self) -> int:
        """Requests or connections in flight in all groups."""
        return sum(g.in_flight for g in self.groups.values())

    def status(self) -> dict[str, Any]:
        """JSON-ready status of the frontend and its groups."""
        return {
            "listen": self.spec.listen,
            "port": self.port,
            "mode": self.spec.mode,
            "active": self.active,
            "in_flight": self.in_flight(),
            "groups": {name: g.status() for name, g in self.groups.items()},
        }


class Balancer:
    """All frontends of one LB process and the commands that change them."""

    def __init__(self, refresh: float = 1.0, reuse_port: bool = False) -> None:
        self.reuse_port = reuse_port  # a worker: share ports with the LB's other workers
        self.resolver = Resolver(refresh)
        self.metrics = Metrics()
        self.frontends: dict[str, FrontendRuntime] = {}
        self.closing = False
        self.started = time.time()
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self.pool = UpstreamPool()

    async def start(self, table: RoutingTable | None = None) -> None:
        """Start DNS refresh, and apply `table` if given."""
        self.resolver.start()
        if table is not None:
            await self.apply(table)

    def table(self) -> RoutingTable:
        """The routing table in force, with live active groups and group states."""
        return RoutingTable(tuple(fe.current_spec() for fe in self.frontends.values()))

    async def apply(self, table: RoutingTable) -> None:
        """Make `table` the routing table: open, keep, re-open or close listeners."""
        async with self._lock:
            self.resolver.watch({split_target(t)[0] for fe in table.frontends
                                 for g in fe.groups.values() for t in g.backends})
            wanted = {fe.name: fe for fe in table.frontends}
            for name in [n for n in self.frontends if n not in wanted]:
                await self._close_frontend(self.frontends.pop(name))
            for name, spec in wanted.items():
                fe = self.frontends.get(name)
                if fe is not None and fe.same_listener(spec):
                    fe.update(spec, self.resolver)
                    continue
                if fe is not None:
                    await self._close_frontend(self.frontends.pop(name))
                fe = FrontendRuntime(spec, self.resolver, self.metrics)
                await self._open_frontend(fe)
                self.frontends[name] = fe
            # Resolve names now so the first requests find their backends.
            await asyncio.gather(*(g.refresh_now() for fe in self.frontends.values()
                                   for g in fe.groups.values()))

    def set_versions(self, versions: dict[str, str]) -> None:
        """Count the requests of each named group under its version from now on."""
        self.metrics.set_versions(versions)
        for fe in self.frontends.values():
            fe.recount()

    def frontend(self, name: str) -> FrontendRuntime:
        """The runtime frontend of that name; LBError (404) when there is none."""
        fe = self.frontends.get(name)
        if fe is None:
            raise LBError(f"no frontend named {name!r}", 404)
        return fe

    def switch(self, frontend: str, group: str) -> dict[str, Any]:
        """Send new requests of `frontend` to `group` (which becomes active, not draining)."""
        fe = self.frontend(frontend)
        target = fe.groups.get(group)
        if target is None:
            raise LBError(f"frontend {frontend} has no group named {group!r}", 404)
        previous = fe.active
        target.state = ACTIVE
        fe.active = group
        log.info("frontend %s: active group %s -> %s", frontend, previous, group)
        return {"frontend": frontend, "active": group, "previous": previous}

    def drain(self, frontend: str, group: str) -> dict[str, Any]:
        """Stop sending new requests to a non-active group; report what is still in flight."""
        fe = self.frontend(frontend)
        target = fe.groups.get(group)
        if target is None:
            raise LBError(f"frontend {frontend} has no group named {group!r}", 404)
        if fe.active == group:
            raise LBError(f"group {group} is the active group of {frontend}: switch first",
                           409)
        in_flight = target.drain()
        log.info("frontend %s: draining group %s (%d in flight)", frontend, group, in_flight)
        return {"frontend": frontend, "group": group, "state": DRAINING, "in_flight": in_flight}

    async def wait_drained(self, frontend: str, group: str, timeout: float) -> dict[str, Any]:
        """Wait up to `timeout` s until the group has nothing in flight."""
        target = self.frontend(frontend).groups.get(group)
        if target is None:
            raise LBError(f"frontend {frontend} has no group named {group!r}", 404)
        drained = await target.wait_drained(timeout)
        return {"frontend": frontend, "group": group, "drained": drained,
                "in_flight": target.in_flight}

    def status(self) -> dict[str, Any]:
        """JSON-ready status of every frontend, group and backend."""
        return {
            "closing": self.closing,
            "uptime": round(time.time() - self.started, 3),
            "in_flight": sum(fe.in_flight() for fe in self.frontends.values()),
            "frontends": {name: fe.status() for name, fe in self.frontends.items()},
        }

    async def _open_frontend(self, fe: FrontendRuntime) -> None:
        loop = asyncio.get_running_loop()
        sock = listen_socket(fe.spec.host, fe.spec.listen, self.reuse_port)
        fe.port = sock.getsockname()[1]
        if fe.spec.mode == "http":
            fe.http = HttpEngine(self, fe, self.pool)
            fe.http.start()
            fe.server = await loop.create_server(fe.http, sock=sock)
        else:
            fe.relay = TcpRelay(self, fe)
            fe.server = await asyncio.start_server(fe.relay.handle, sock=sock)
        log.info("frontend %s: %s on %s:%d", fe.name, fe.spec.mode, fe.spec.host, fe.port)

    async def _close_frontend(self, fe: FrontendRuntime, grace: float = 30.0) -> None:
        """Stop accepting; let in-flight work finish in the background, then close."""
        if fe.server is not None:
            fe.server.close()
        for group in fe.groups.values():
            self.metrics.retire(group.series)
        log.info("frontend %s: closed (%d in flight)", fe.name, fe.in_flight())

        async def finish() -> None:
            await _wait_idle(fe.in_flight, grace)
            await _close_connections(fe)

        task = asyncio.get_running_loop().create_task(finish())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def shutdown(self, grace: float = 30.0) -> None:
        """Stop accepting everywhere, wait up to `grace` s for in-flight work, close all."""
        self.closing = True
        for fe in self.frontends.values():
            if fe.server is not None:
                fe.server.close()
            if fe.http is not None:
                fe.http.close_idle()  # keep-alive clients go now; busy ones after answers
        total = sum(fe.in_flight() for fe in self.frontends.values())
        log.info("shutting down: %d in flight, grace %.0f s", total, grace)
        await _wait_idle(lambda: sum(fe.in_flight() for fe in self.frontends.values()), grace)
        await asyncio.gather(*(_close_connections(fe) for fe in self.frontends.values()))
        for task in list(self._background):
            task.cancel()
        self.pool.close()
        await self.resolver.close()


async def _wait_idle(in_flight: Any, grace: float) -> None:
    deadline = time.monotonic() + grace
    while in_flight() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _close_connections(fe: FrontendRuntime) -> None:
    # Idle keep-alive connections are closed; whatever still runs after the grace is cut.
    if fe.relay is not None:
        fe.relay.abort_all()
    if fe.http is not None:
        fe.http.close_idle()
        fe.http.abort_all()
        fe.http.stop()
