"""Raw-socket test peers for the LB: a byte-capturing backend and a client that parses answers."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

import httptools

from tests.lb.support import LoopThread


@dataclass
class Seen:
    """One request as the backend parsed it (strictly, with llhttp)."""

    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""


@dataclass
class _Conn:
    raw: bytearray = field(default_factory=bytearray)


class CaptureBackend:
    """Records every byte it receives and every request llhttp finds in them.

    Answers each request with its path as the body. `/early...` is answered as soon as its
    head arrives (an early answer); `/hold...` is never answered and never read further
    (a backend that does not read); `/big?n=N` answers N bytes.
    """

    def __init__(self, loops: LoopThread) -> None:
        self.loops = loops
        self.conns: list[_Conn] = []
        self.seen: list[Seen] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server = loops.run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def raw(self) -> bytes:
        return b"".join(bytes(c.raw) for c in self.conns)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn()
        self.conns.append(conn)
        self.writers.append(writer)
        backend = self
        current: list[Seen] = []
        hold = False

        class Proto:
            url = b""
            headers: list[tuple[bytes, bytes]]  # set by on_message_begin, llhttp's first call

            def on_message_begin(self) -> None:
                self.url = b""
                self.headers = []

            def on_url(self, url: bytes) -> None:
                self.url += url

            def on_header(self, name: bytes, value: bytes) -> None:
                self.headers.append((name, value))

            def on_headers_complete(self) -> None:
                nonlocal hold
                seen = Seen(parser.get_method(), self.url, self.headers)
                current.append(seen)
                backend.seen.append(seen)
                if self.url.startswith(b"/early"):
                    _answer(writer, self.url)
                if self.url.startswith(b"/hold"):
                    hold = True

            def on_body(self, data: bytes) -> None:
                current[-1].body += data

            def on_message_complete(self) -> None:
                path = current[-1].path
                if not path.startswith((b"/early", b"/hold")):
                    if path.startswith(b"/big"):
                        n = int(path.split(b"=")[1])
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                        writer.write(b"x" * n)
                    else:
                        _answer(writer, path)

        parser = httptools.HttpRequestParser(Proto())
        try:
            while not hold:
                data = await reader.read(65536)
                if not data:
                    break
                conn.raw += data
                parser.feed_data(data)
                await writer.drain()
            if hold:
                await asyncio.sleep(30)  # cut short by close()
        except (httptools.HttpParserError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for writer in self.writers:
                writer.transport.abort()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task() and "_serve" in repr(task.get_coro()):
                    task.cancel()
        self.loops.run(stop())


def _answer(writer: asyncio.StreamWriter, path: bytes) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))


class Answers:
    """Parses what the LB sends to one client: statuses, bodies, interim answers, close."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, bytes, dict[bytes, bytes]]] = []
        self.body = b""
        self.headers: dict[bytes, bytes] = {}
        self.closed = False

    def on_message_begin(self) -> None:
        self.body = b""
        self.headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            self.done.append((status, self.body, self.headers))


def talk(port: int, data: bytes, answers: int = 1, timeout: float = 5.0,
         sock: socket.socket | None = None) -> Answers:
    """Send `data`, read until `answers` final answers arrived or the LB closed."""
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = Answers()
    try:
        if data:
            s.sendall(data)
        read_answers(s, got, answers, timeout)
    finally:
        if sock is None:
            s.close()
    return got


def read_answers(s: socket.socket, got: Answers, answers: int, timeout: float) -> None:
    """Read from `s` into `got` until `answers` answers are complete, EOF, or `timeout`."""
    deadline = time.monotonic() + timeout
    while len(got.done) < answers and time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            got.closed = True
            break
        if not chunk:
            got.closed = True
            break
        got.parser.feed_data(chunk)


def closed_soon(s: socket.socket, timeout: float) -> bool:
    """True when the peer closes `s` within `timeout` (bytes before that are read)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not s.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False
