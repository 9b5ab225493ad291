"""Real sockets for LB tests: backends in a thread, the LB as a process, a bounded load loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from lb.client import AdminClient
from tests import support
from tests.support import wait_until as _wait_until

TOKEN = "test-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]


def wait_until(check: Callable[[], Any], *, interval: float = 0.02, **kw: Any) -> Any:
    """`tests.support.wait_until` polling every 20 ms: on loopback a condition changes within
    milliseconds and a check (one admin call) costs about one, where the swarm's 0.3 s
    default would add a third of a second to every wait."""
    return _wait_until(check, interval=interval, **kw)


def free_port() -> int:
    """A TCP port nothing listens on right now, outside the ephemeral range (see tests.support)."""
    return support.free_port(swarm=False)


def listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LoopThread:
    """An asyncio loop in a daemon thread; `run` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Backend:
    """An aiohttp server on 127.0.0.1 that names itself in every answer.

    GET /            -> "NAME"
    GET /hold        -> waits until `release()` (bounded to 30 s), then "NAME"
    GET /sleep?s=X   -> sleeps X seconds (cut short when the backend stops)
    GET /big?n=N     -> N bytes, streamed in chunks without a length
    ANY /echo        -> JSON: method, path, headers, body length
    GET /ws          -> a WebSocket that echoes "NAME:message"
    """

    def __init__(self, loops: LoopThread, name: str) -> None:
        self.loops = loops
        self.name = name
        self.port = 0
        self.hits = 0
        self._gate: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        loops.run(self._start())

    async def _start(self) -> None:
        self._gate = asyncio.Event()
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=16 << 20)
        app.router.add_get("/", self._root)
        app.router.add_get("/hold", self._hold)
        app.router.add_get("/sleep", self._sleep)
        app.router.add_get("/big", self._big)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port or 0, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _root(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text=self.name)

    async def _hold(self, request: web.Request) -> web.Response:
        assert self._gate is not None
        self.hits += 1
        await asyncio.wait_for(self._gate.wait(), 30)
        return web.Response(text=self.name)

    async def _sleep(self, request: web.Request) -> web.Response:
        assert self._stopping is not None
        # Stopping the backend waits for its handlers: a sleeper must not hold the teardown.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), float(request.query.get("s", "1")))
        return web.Response(text=self.name)

    async def _big(self, request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "0"))
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"x" * 65536
        while n > 0:
            await resp.write(chunk[:n])
            n -= len(chunk)
        await resp.write_eof()
        return resp

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"name": self.name, "method": request.method,
                                  "path": request.path_qs, "headers": dict(request.headers),
                                  "length": len(body)})

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(f"{self.name}:{msg.data}")
        return ws

    def release(self) -> None:
        """Let every /hold request (now and later) finish."""
        assert self._gate is not None
        self.loops.loop.call_soon_threadsafe(self._gate.set)

    def stop(self) -> None:
        """Close the listening socket and all connections."""
        if self._stopping is not None:
            self.loops.loop.call_soon_threadsafe(self._stopping.set)
        if self._runner is not None:
            self.loops.run(self._runner.cleanup())
            self._runner = None


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawBackend:
    """A hand-written backend on 127.0.0.1: `serve` gets every connection.

    `close` ends the connections still open too, as a stopping server does (asyncio's
    `Server.close` leaves them be): an LB outlives its test and keeps idle ones pooled.
    """

    def __init__(self, loops: LoopThread, serve: Serve) -> None:
        self.loops = loops
        self._serve = serve
        self._open: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.server: asyncio.Server = loops.run(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port: int = self.server.sockets[0].getsockname()[1]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        try:
            await self._serve(reader, writer)
        finally:
            self._open.pop(task, None)

    def close(self) -> None:
        """Stop listening, close every connection and wait for its handler to end."""
        self.loops.run(self._close())  # in the loop's own thread: servers are not thread-safe

    async def _close(self) -> None:
        self.server.close()
        for writer in self._open.values():
            writer.close()
        await asyncio.wait_for(asyncio.gather(*self._open, return_exceptions=True), 10)
        await self.server.wait_closed()


def frontend(name: str, port: int, groups: dict[str, list[str]], active: str, *,
             mode: str = "http", **extra: Any) -> dict[str, Any]:
    return {"name": name, "listen": port, "host": "127.0.0.1", "mode": mode, "active": active,
            "groups": {g: {"backends": b} for g, b in groups.items()}, **extra}


class LBProcess:
    """`python -m lb.cli` with a routing table, a token and a free admin port."""

    def __init__(self, table: dict[str, Any], *, workers: int = 1, grace: float = 20.0,
                 token: str | None = TOKEN, args: tuple[str, ...] = ()) -> None:
        self.admin_port = free_port()
        self.log = tempfile.TemporaryFile()
        self.output_start = 0  # where `output` starts reading (see `mark_output`)
        env = dict(os.environ, DANS_LB_CONFIG=json.dumps(table), PYTHONPATH=str(ROOT))
        env.pop("DANS_LB_TOKEN_FILE", None)
        if token:
            env["DANS_LB_TOKEN"] = token
        else:
            env.pop("DANS_LB_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lb.cli", "--admin-host", "127.0.0.1", "--admin-port",
             str(self.admin_port), "--workers", str(workers), "--grace", str(grace),
             "--log-level", "warning", *args],
            env=env, cwd=ROOT, stderr=self.log,
        )
        self.admin = AdminClient(f"http://127.0.0.1:{self.admin_port}", token or "none")
        try:
            # A cheap connect first: the client's health probe, refused, retries after
            # half a second (its real-world habit), which every test would pay.
            wait_until(lambda: self.proc.poll() is not None
                       or (listening(self.admin_port) and self.admin.healthy()),
                       timeout=30, what="the LB's admin API")
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            output = self.output()
            self.log.close()
            raise AssertionError(f"the LB exited: {output}")

    def output(self) -> str:
        """What the LB wrote to stderr so far (since `mark_output`, when it was called)."""
        self.log.seek(self.output_start)
        return self.log.read().decode(errors="replace")

    def mark_output(self) -> None:
        """Make `output` start at what the LB writes from now on (an LB shared by tests)."""
        self.log.seek(0, os.SEEK_END)
        self.output_start = self.log.tell()

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
        finally:
            self.log.close()


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)


async def load(url: str, *, count: int, seconds: float, concurrency: int = 8,
               on_progress: Callable[[int], None] | None = None) -> LoadResult:
    """Send up to `count` GETs for at most `seconds` over keep-alive connections."""
    result = LoadResult()
    deadline = time.monotonic() + seconds
    sent = 0
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            nonlocal sent
            while sent < count and time.monotonic() < deadline:
                sent += 1
                try:
                    async with session.get(url) as resp:
                        text = await resp.text()
                        result.statuses[resp.status] += 1
                        result.bodies[text] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.errors.append(repr(exc))
                if on_progress:
                    on_progress(sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


def get(url: str, timeout: float = 10.0, **kw: Any) -> tuple[int, str]:
    """One blocking request with the standard library; (status, body)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, **kw)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read the answer until close or timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)
