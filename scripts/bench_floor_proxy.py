#!/usr/bin/env python3
"""The thinnest uvloop + httptools HTTP forwarding proxy: a floor for `bench_lb.py --floors`.

    python scripts/bench_floor_proxy.py --port 8081 --backend 8080 [--mode raw|head]

Not a proxy to use: one backend on 127.0.0.1, one backend connection per client connection
(kept alive both ways, opened with the client's), no timeouts, no pipelining, no limits, no
pool, no metrics, no group choice. It does only what any HTTP-aware proxy must do per
request: llhttp parses every request and every answer, and the bytes are forwarded.

- `raw`: the client's bytes go to the backend as they came, the answer's as they came
  (what Python plus uvloop plus llhttp cost at all, the floor of floors);
- `head`: the request head is taken field by field from llhttp's callbacks and rebuilt
  with an X-Forwarded-For, as the nginx of the benchmark does (the floor of a proxy that
  rewrites heads).

What it measures: how many requests per CPU-second Python can forward on this machine, so
the LB's figures can be read against it and against nginx.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import uvloop


class Backend(asyncio.Protocol):
    """The backend connection of one client: answers are parsed and passed on."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class Client(asyncio.Protocol):
    """One client connection, `raw` mode: parsed, forwarded byte for byte."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.up: Backend | None = None
        self.waiting: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, up = await loop.create_connection(lambda: Backend(self), "127.0.0.1", self.backend)
        self.up = up
        if self.waiting:
            self.to_backend(b"".join(self.waiting))
            self.waiting = []

    def to_backend(self, data: bytes) -> None:
        up = self.up
        if up is None or up.transport is None:
            self.waiting.append(data)
        else:
            up.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        self.to_backend(data)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()


class HeadClient(Client):
    """`head` mode: the request head is rebuilt from llhttp's fields, X-Forwarded-For added."""

    def __init__(self, backend: int) -> None:
        super().__init__(backend)
        self.url = b""
        self.lines: list[bytes] = []
        self.peer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peer = str(transport.get_extra_info("peername")[0]).encode()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.lines += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        head = b"".join([method, b" ", self.url, b" HTTP/1.1\r\n", *self.lines,
                         b"X-Forwarded-For: ", self.peer, b"\r\n\r\n"])
        self.url = b""
        self.lines = []
        self.to_backend(head)

    def on_body(self, data: bytes) -> None:
        self.to_backend(data)


async def serve(port: int, backend: int, mode: str) -> None:
    """Listen on 127.0.0.1:`port` until cancelled."""
    kind = HeadClient if mode == "head" else Client
    server = await asyncio.get_running_loop().create_server(
        lambda: kind(backend), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend", type=int, required=True, help="port on 127.0.0.1")
    ap.add_argument("--mode", choices=("raw", "head"), default="raw")
    args = ap.parse_args()
    uvloop.run(serve(args.port, args.backend, args.mode))


if __name__ == "__main__":
    main()
