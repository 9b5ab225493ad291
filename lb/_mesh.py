"""The waypoint: the LB program in mesh mode, standing in for one meshed service (DESIGN §9).

A waypoint holds a service's short name and aliases on the service's networks, so its
callers reach it instead of the service, and forwards every call to the real service by its
full name (`tasks.STACK_svc`, resolved every second; the service's endpoint mode is the
waypoint's own, so callers see what they saw before). Nothing in the application changes:
- on the service's HTTP ports (the ones dans could read: published targets, URLs in callers'
  environments, `x-dans.ports`) it is the LB's HTTP engine, which counts every call per hop
  (requests by status, errors, latency: `render_hops`) and reads each call's trace id
  (`lb._trace`), counting the calls that carry none;
- every other TCP port goes through the transparent relay (`lb._transparent`: one redirect
  rule, the dialled port read back), so a port dans does not know still works.

Per-hop metrics are labelled by callee only: the caller's service is not known cheaply
(a reverse lookup per client address would sit on the request path), so `caller` is "-".
They are served with the LB's own families on `METRICS_PORT` (read-only, no token, like a
mesh sidecar's stats port) at /metrics; /healthz answers there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lb._balancer import Balancer
from lb._metrics import Metrics, Series, head, histogram, sample
from lb._server import tune_gc
from lb._transparent import DEFAULT_LISTEN, RelaySettings, install_redirect, serve
from lb.table import Frontend, FrontendTimeouts, Group, RoutingTable

__all__ = ["METRICS_PORT", "READY_FILE", "WaypointSettings", "render_hops", "run_waypoint",
           "waypoint_table"]

log = logging.getLogger("dans.waypoint")
METRICS_PORT = 15090
READY_FILE = Path("/tmp/dans-waypoint-ready")
NO_CALLER = "-"
MAX_HEAD = 8192  # bytes of a /metrics request head


@dataclass(frozen=True)
class WaypointSettings:
    """What one waypoint does: whom it stands in for, which ports it speaks HTTP on."""

    target: str  # the real service's full name, e.g. shop_api
    callee: str  # its short name (the metrics' callee)
    http_ports: tuple[int, ...] = ()
    trace_header: str = ""  # an application header that names a trace (lb._trace)
    redirect: bool = True  # install the redirect rule for the other ports (needs NET_ADMIN)
    relay_listen: int = DEFAULT_LISTEN
    metrics_port: int = METRICS_PORT
    metrics_host: str = "0.0.0.0"
    listen_host: str = "0.0.0.0"
    grace: float = 10.0
    backend_host: str = ""  # default tasks.TARGET (an address in tests)
    timeouts: FrontendTimeouts = field(default_factory=FrontendTimeouts)


def waypoint_table(s: WaypointSettings) -> RoutingTable:
    """One HTTP frontend per known port, forwarding to the same port of the real service."""
    return RoutingTable(tuple(
        Frontend(name=f"{s.callee}-{port}", listen=port, host=s.listen_host,
                 groups={"main": Group(backends=(f"{s.backend_host or 'tasks.' + s.target}"
                                                 f":{port}",))},
                 active="main", hop=s.callee, trace=False, trace_header=s.trace_header,
                 timeouts=s.timeouts)
        for port in s.http_ports))


def redirect_rules(s: WaypointSettings) -> list[list[str]]:
    """iptables argument lists: the HTTP ports and the metrics port stay where they are,
    every other incoming TCP connection goes to the relay's listener."""
    return [["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", str(p), "-j", "RETURN"]
            for p in (*s.http_ports, s.metrics_port)]


def render_hops(metrics: Metrics, hops: dict[str, str]) -> str:
    """Per-hop families from the series of the waypoint's frontends (`hops`: frontend ->
    callee), summed over its ports; caller "-" (see the module's docstring)."""
    by_callee: dict[str, Series] = {}
    for (fe, _group, _version), s in metrics.by_group.items():
        callee = hops.get(fe)
        if callee is None:
            continue
        total = by_callee.setdefault(callee, Series())
        for code, n in s.codes.items():
            total.codes[code] = total.codes.get(code, 0) + n
        for kind, n in s.errors.items():
            total.errors[kind] = total.errors.get(kind, 0) + n
        total.counts = [a + b for a, b in zip(total.counts, s.counts, strict=True)]
        total.sum += s.sum
        total.count += s.count
    out = head("dans_mesh_requests_total")
    rows = sorted(by_callee.items())
    for callee, s in rows:
        out += [sample("dans_mesh_requests_total", n,
                       [("caller", NO_CALLER), ("callee", callee), ("code", str(code))])
                for code, n in sorted(s.codes.items())]
    out += head("dans_mesh_errors_total")
    for callee, s in rows:
        out += [sample("dans_mesh_errors_total", n,
                       [("caller", NO_CALLER), ("callee", callee), ("kind", kind)])
                for kind, n in sorted(s.errors.items())]
    out += head("dans_mesh_request_duration_seconds")
    for callee, s in rows:
        out += histogram("dans_mesh_request_duration_seconds", s,
                         [("caller", NO_CALLER), ("callee", callee)])
    out += head("dans_mesh_untraced_total")
    out += [sample("dans_mesh_untraced_total", n, [("callee", callee)])
            for callee, n in sorted(metrics.untraced.items())]
    return "\n".join(out) + "\n"


class _MetricsPort:
    """GET /metrics and /healthz, one request per connection, read-only, no token."""

    def __init__(self, balancer: Balancer, hops: dict[str, str]) -> None:
        self.balancer = balancer
        self.hops = hops

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            writer.close()
            return
        parts = raw.split(b" ", 2)
        path = parts[1] if len(parts) == 3 and parts[0] == b"GET" else b""
        if path == b"/metrics":
            body = (self.balancer.metrics.render()
                    + render_hops(self.balancer.metrics, self.hops)).encode()
            status, kind = b"200 OK", b"text/plain; version=0.0.4; charset=utf-8"
        elif path == b"/healthz":
            status, kind, body = b"200 OK", b"application/json", b'{"ok": true}'
        else:
            status, kind, body = b"404 Not Found", b"text/plain", b"not found\n"
        writer.write(b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (status, kind, len(body), body))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def serve_waypoint(s: WaypointSettings, stop: asyncio.Event,
                         started: asyncio.Event | None = None) -> None:
    """Serve the HTTP ports, the relay and the metrics port until `stop`, then drain."""
    table = waypoint_table(s)
    balancer = Balancer()
    await balancer.start(table)
    relay_started = asyncio.Event()
    relay_stop = asyncio.Event()
    relay = asyncio.create_task(serve(
        RelaySettings(target=f"tasks.{s.target}", listen=s.relay_listen, redirect=False,
                      grace=s.grace), relay_stop, relay_started))
    port = _MetricsPort(balancer, {fe.name: s.callee for fe in table.frontends})
    server = await asyncio.start_server(port.handle, s.metrics_host, s.metrics_port,
                                        limit=MAX_HEAD, reuse_address=True)
    await relay_started.wait()
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        server.close()
        relay_stop.set()
        await balancer.shutdown(s.grace)
        await relay


def run_waypoint(s: WaypointSettings) -> None:
    """The waypoint's process: redirect rules, serve, mark ready, stop on SIGTERM."""
    if s.redirect:
        iptables = shutil.which("iptables")
        if iptables is None:
            raise RuntimeError("the LB image has no iptables; rebuild it (dans lb build-image)")
        for rule in redirect_rules(s):  # before the redirect: the first match wins
            proc = subprocess.run([iptables, *rule], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError("cannot install the waypoint's rules (needs CAP_NET_ADMIN): "
                                   + (proc.stderr or proc.stdout).strip())
        install_redirect(s.relay_listen)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        started = asyncio.Event()
        task = asyncio.create_task(serve_waypoint(s, stop, started))
        await started.wait()
        tune_gc()
        with contextlib.suppress(OSError):
            READY_FILE.write_text("ready\n")
        log.info("waypoint for %s: HTTP on %s, every other TCP port relayed", s.target,
                 ", ".join(map(str, s.http_ports)) or "no port")
        await task

    asyncio.run(main())
