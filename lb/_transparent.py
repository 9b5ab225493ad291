"""The transparent relay: answers on every TCP port for one service, learns none of them.

During an upgrade the new chain reaches an unchanged service (a database, a cache, an API
whose URL is baked into an image) through a relay that holds the service's short name on the
generation network (DESIGN.md §8). Which ports the callers use is written in their images,
not in the Compose file, so the relay does what mesh sidecars do: one rule in its own network
namespace redirects every incoming TCP connection to one listener, which reads the port the
caller dialled (SO_ORIGINAL_DST) and connects to the same port of the real service
(`tasks.NAME`, resolved per connection with a one-second cache). A port the service does not
listen on is refused at the real service, so the caller sees what it would have seen.

The rule needs CAP_NET_ADMIN in the relay's container only; it applies to connections that
arrive from other containers (PREROUTING), never to the relay's own connections out, and not
to loopback, so the health probe and the relay's DNS lookups are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lb._tcp_relay import IdleClock, pipe

__all__ = ["RelaySettings", "original_port", "redirect_rule", "run_relay"]

log = logging.getLogger("dans.relay")

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; the socket module does not name it
CHUNK = 1 << 16  # the stream buffer per direction: back-pressure keeps it bounded
DEFAULT_LISTEN = 15001
READY_FILE = Path("/tmp/dans-relay-ready")


@dataclass(frozen=True)
class RelaySettings:
    """What one relay does: where it forwards, where it listens, how long it waits."""

    target: str  # host name of the real service's tasks, e.g. tasks.shop_db
    listen: int = DEFAULT_LISTEN
    redirect: bool = True  # install the redirect rule (off in tests without NET_ADMIN)
    connect_timeout: float = 5.0
    idle_timeout: float = 3600.0  # database pools keep idle connections for long
    grace: float = 10.0


def redirect_rule(listen: int) -> list[str]:
    """The iptables arguments that send every incoming TCP connection to `listen`."""
    return ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "!", "-i", "lo",
            "-j", "REDIRECT", "--to-ports", str(listen)]


def install_redirect(listen: int) -> None:
    """Install the redirect rule in this network namespace; a clear error when it cannot."""
    iptables = shutil.which("iptables")
    if iptables is None:
        raise RuntimeError("the relay image has no iptables; rebuild it (dans lb build-image)")
    proc = subprocess.run([iptables, *redirect_rule(listen)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("cannot install the relay's redirect rule (needs CAP_NET_ADMIN): "
                           + (proc.stderr or proc.stdout).strip())


def original_port(sock: socket.socket) -> int | None:
    """The port the peer dialled before the redirect; None for a direct connection."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port = int(struct.unpack("!H", raw[2:4])[0])
    local = sock.getsockname()
    return None if port == local[1] else port


class _Resolver:
    """`tasks.NAME` to addresses, cached for one second (tasks come and go)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._addrs: list[str] = []
        self._at = -1.0

    async def addresses(self) -> list[str]:
        now = time.monotonic()
        if now - self._at > 1.0 or not self._addrs:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(self.host, None, type=socket.SOCK_STREAM)
                self._addrs = sorted({str(i[4][0]) for i in infos})
            except OSError:
                self._addrs = []
            self._at = now
        return list(self._addrs)


class TransparentRelay:
    """Accepts redirected connections and forwards each to the dialled port of the target."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.resolver = _Resolver(settings.target)
        self.open: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one connection until both sides have closed."""
        sock = writer.get_extra_info("socket")
        port = original_port(sock) if sock is not None else None
        if port is None:  # a direct connection (the health probe): nothing to relay
            writer.close()
            return
        upstream = await self._connect(port)
        if upstream is None:
            writer.transport.abort()  # the caller sees a reset, as from a closed port
            return
        up_reader, up_writer = upstream
        self.open.add(writer)
        idle = IdleClock(self.settings.idle_timeout)
        try:
            await asyncio.gather(pipe(reader, up_writer, idle), pipe(up_reader, writer, idle))
        finally:
            self.open.discard(writer)
            up_writer.close()
            writer.close()

    async def _connect(self, port: int
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        addrs = await self.resolver.addresses()
        random.shuffle(addrs)
        for addr in addrs:
            try:
                return await asyncio.wait_for(asyncio.open_connection(addr, port, limit=CHUNK),
                                              self.settings.connect_timeout)
            except (TimeoutError, OSError) as exc:
                log.info("cannot connect to %s:%d: %r", addr, port, exc)
        log.warning("no task of %s answers on port %d", self.settings.target, port)
        return None


async def serve(settings: RelaySettings, stop: asyncio.Event,
                started: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set, then give open connections `grace` seconds."""
    relay = TransparentRelay(settings)
    server = await asyncio.start_server(relay.handle, "0.0.0.0", settings.listen,
                                        limit=CHUNK, reuse_address=True)
    if started is not None:
        started.set()
    async with server:
        await stop.wait()
        server.close()
        deadline = time.monotonic() + settings.grace
        while relay.open and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for writer in list(relay.open):
            writer.transport.abort()


def run_relay(settings: RelaySettings) -> None:
    """The relay's process: install the redirect, listen, mark ready, stop on SIGTERM."""
    if settings.redirect:
        install_redirect(settings.listen)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        started = asyncio.Event()
        task = asyncio.create_task(serve(settings, stop, started))
        await started.wait()
        with contextlib.suppress(OSError):
            READY_FILE.write_text("ready\n")
        log.info("relaying every TCP port to %s (listener %d)", settings.target,
                 settings.listen)
        await task

    asyncio.run(main())
