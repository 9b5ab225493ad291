"""Live backends: DNS resolution with a short refresh, and the runtime state of groups.

Swarm's DNS answers `tasks.NAME` with a TTL of 600 s while tasks come and go in seconds, so
names are re-resolved at most `refresh` seconds apart by one background loop, whatever the
TTL says; requests only read the last answer. An endpoint that refused a connection is
skipped for a short while (passive health), unless nothing else is left.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from lb._metrics import Series
from lb.table import ACTIVE, DRAINING, Group, is_ip, split_target

__all__ = ["Endpoint", "GroupRuntime", "Resolver"]

log = logging.getLogger("dans.lb")

# How long an endpoint that failed to connect is skipped while others are available.
DOWN_SECONDS = 2.0


@dataclass(eq=False)
class Endpoint:
    """One resolved backend address and what the LB knows of it."""

    host: str
    port: int
    in_flight: int = 0
    down_until: float = 0.0
    failures: int = 0
    key: tuple[str, int] = field(init=False, repr=False)

    @property
    def addr(self) -> str:
        """"ip:port" (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __post_init__(self) -> None:
        self.key = (self.host, self.port)  # the key of its pooled connections

    def healthy(self, now: float) -> bool:
        """False while the endpoint is skipped after a connect failure."""
        return now >= self.down_until

    def mark_down(self) -> None:
        """Skip this endpoint for a moment: it refused or timed out a connection."""
        self.failures += 1
        self.down_until = time.monotonic() + DOWN_SECONDS

    def mark_up(self) -> None:
        """The endpoint answered."""
        self.down_until = 0.0


class Resolver:
    """Resolves host names to addresses, refreshing each name at most `refresh` s apart."""

    def __init__(self, refresh: float = 1.0) -> None:
        self.refresh = min(refresh, 1.0)
        self._answers: dict[str, list[str]] = {}
        self._errors: dict[str, str] = {}
        self.generation = 0  # changes whenever an answer changes
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the refresh loop (inside a running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop the refresh loop."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def cached(self, host: str) -> list[str] | None:
        """The last answer for `host`, or None when it was never resolved."""
        if is_ip(host):
            return [host]
        return self._answers.get(host)

    def error(self, host: str) -> str | None:
        """Why the last resolution of `host` gave nothing, if it did."""
        return self._errors.get(host)

    def watch(self, hosts: set[str]) -> None:
        """Make sure these names are refreshed from now on; forget names no longer used."""
        self.generation += 1
        for host in hosts:
            if not is_ip(host):
                self._answers.setdefault(host, [])
        for host in list(self._answers):
            if host not in hosts:
                del self._answers[host]
                self._errors.pop(host, None)

    async def resolve(self, host: str) -> list[str]:
        """Resolve `host` now and remember the answer."""
        if is_ip(host):
            return [host]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            # No answer at all (a service with no running task gives NXDOMAIN) means no
            # backend; any other failure keeps the previous answer for the next round.
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                if self._answers.get(host):
                    self.generation += 1
                self._answers[host] = []
            self._errors[host] = str(exc)
            return self._answers.get(host, [])
        addrs = sorted({str(info[4][0]) for info in infos})
        if self._answers.get(host) != addrs:
            self.generation += 1
        self._answers[host] = addrs
        self._errors.pop(host, None)
        return addrs

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            hosts = list(self._answers)
            if hosts:
                await asyncio.gather(*(self.resolve(h) for h in hosts), return_exceptions=True)
            await asyncio.sleep(max(0.05, self.refresh - (time.monotonic() - started)))


@dataclass(eq=False)
class GroupRuntime:
    """A group as the data plane sees it: endpoints, state, in-flight and totals."""

    frontend: str
    name: str
    spec: Group
    resolver: Resolver
    series: Series = field(default_factory=Series)  # its metrics (the Metrics' own object)
    state: str = ACTIVE
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    _endpoints: dict[tuple[str, int], Endpoint] = field(default_factory=dict)
    _rr: int = 0
    _drained: asyncio.Event | None = None
    _targets: list[tuple[str, int]] = field(default_factory=list)
    _list: list[Endpoint] = field(default_factory=list)
    _generation: int = -1

    def __post_init__(self) -> None:
        self.update(self.spec)

    @property
    def targets(self) -> list[tuple[str, int]]:
        """The configured backends as (host, port)."""
        return self._targets

    def update(self, spec: Group) -> None:
        """Take a new spec (backends and state) without losing counters."""
        self.spec = spec
        self.state = spec.state
        self._targets = [split_target(t) for t in spec.backends]
        self._generation = -1

    def endpoints(self) -> list[Endpoint]:
        """The current endpoints, from the resolver's last answers (cheap, no I/O).

        Rebuilt only when an answer changed since the last call; requests read the cache.
        """
        if self._generation == self.resolver.generation:
            return self._list
        self._generation = self.resolver.generation
        live: dict[tuple[str, int], Endpoint] = {}
        for host, port in self._targets:
            for addr in self.resolver.cached(host) or ():
                key = (addr, port)
                live[key] = self._endpoints.get(key) or Endpoint(addr, port)
        self._list = list(live.values())
        # Endpoints gone from DNS stay listed while requests are in flight on them.
        for key, ep in self._endpoints.items():
            if key not in live and ep.in_flight:
                live[key] = ep
        self._endpoints = live
        return self._list

    async def refresh_now(self) -> None:
        """Resolve every backend name now (used when the cache has nothing yet)."""
        hosts = {host for host, _ in self._targets}
        await asyncio.gather(*(self.resolver.resolve(h) for h in hosts), return_exceptions=True)

    async def pick_or_refresh(self, tried: set[Endpoint]) -> Endpoint | None:
        """`pick`, but on a first try with nothing known, resolve the names again first."""
        ep = self.pick(tried)
        if ep is None and not tried:
            await self.refresh_now()
            ep = self.pick(tried)
        return ep

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """Round-robin over healthy endpoints not in `exclude`; an unhealthy one as last resort.

        Endpoints kept only for their in-flight requests (gone from DNS) are never picked.
        """
        eps = self._list if self._generation == self.resolver.generation else self.endpoints()
        n = len(eps)
        if not n:
            return None
        # The usual case first: the next endpoint in turn is healthy and not tried yet.
        rr = self._rr = (self._rr + 1) % n
        ep = eps[rr]
        if not ep.down_until and not (exclude and ep in exclude):
            return ep
        self._rr = (rr - 1) % n  # the full scan below starts from the same place
        now = 0.0
        fallback = None
        for _ in range(n):
            self._rr = (self._rr + 1) % n
            ep = eps[self._rr]
            if exclude and ep in exclude:
                continue
            if ep.down_until:
                now = now or time.monotonic()
                if ep.down_until > now:
                    fallback = fallback or ep
                    continue
            return ep
        return fallback

    def begin(self) -> None:
        """A request or connection entered this group."""
        self.in_flight += 1
        self.requests += 1
        self.series.in_flight += 1

    def done(self, status: int, seconds: float) -> None:
        """A request or connection of this group finished with `status` after `seconds`.

        Status 0 is a TCP connection or a request that got no status; 5xx count as errors.
        """
        self.in_flight -= 1
        series = self.series
        series.in_flight -= 1
        series.observe(status, seconds)  # a few additions and one bisect
        if status >= 500:
            self.errors += 1
        if self.in_flight == 0 and self._drained is not None:
            self._drained.set()

    def drain(self) -> int:
        """Take no new requests from now on; returns how many are still in flight."""
        self.state = DRAINING
        return self.in_flight

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until nothing is in flight; False when `timeout` passed first."""
        if self.in_flight == 0:
            return True
        if self._drained is None:
            self._drained = asyncio.Event()
        self._drained.clear()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return self.in_flight == 0
        return True

    def status(self) -> dict[str, object]:
        """JSON-ready state: backends with their endpoints and health, counters."""
        self.endpoints()
        now = time.monotonic()
        backends = []
        for target in self.spec.backends:
            host, port = split_target(target)
            eps = [ep for ep in self._endpoints.values()
                   if ep.port == port and ep.host in (self.resolver.cached(host) or ())]
            backends.append({
                "target": target,
                "endpoints": [
                    {"addr": ep.addr, "healthy": ep.healthy(now), "in_flight": ep.in_flight,
                     "failures": ep.failures}
                    for ep in eps
                ],
                "dns_error": self.resolver.error(host),
            })
        return {
            "state": self.state,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "errors": self.errors,
            "backends": backends,
        }
