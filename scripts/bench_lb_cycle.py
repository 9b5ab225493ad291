#!/usr/bin/env python3
"""CPU of the fast HTTP engine's own code per proxied request, without sockets.

    .venv/bin/python scripts/bench_lb_cycle.py [--requests 5000] [--rounds 40]

Drives one client connection and one pooled backend connection of `lb.fast_proxy` with
in-memory transports: a GET arrives, goes to the backend, a typical nginx answer comes back
and goes to the client. No system calls, so what is left is the Python work per request: the
best of --rounds timed rounds is printed. Timings on a shared machine move by tens of percent;
for a figure that does not, count instructions with valgrind (Debian package), once with
--requests 0 and once with N requests, and divide the difference by N:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python scripts/bench_lb_cycle.py --rounds 1 --requests 4000
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lb.balancer import Balancer  # noqa: E402
from lb.table import RoutingTable  # noqa: E402
from lb.upstream import Upstream  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
ANSWER = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 05:40:00 GMT\r\n"
          b"Content-Type: text/plain\r\nContent-Length: 23\r\nConnection: keep-alive\r\n\r\n"
          b"hello from the backend\n")


class MemoryTransport:
    """Just enough of asyncio.Transport for the engine: counts writes, keeps nothing."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def run(requests: int, rounds: int) -> None:
    balancer = Balancer()
    with socket.socket() as probe:  # the frontend listens, though nothing connects to it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    table = RoutingTable.from_dict({"frontends": [{
        "name": "bench", "listen": port, "host": "127.0.0.1", "mode": "http", "active": "g",
        "groups": {"g": {"backends": ["127.0.0.1:8080"]}}}]})
    await balancer.start(table)
    engine = balancer.frontends["bench"].fast
    assert engine is not None
    client, backend = engine(), Upstream(engine.pool, ("127.0.0.1", 8080))
    to_client, to_backend = MemoryTransport(), MemoryTransport()
    client.connection_made(to_client)  # type: ignore[arg-type]
    backend.connection_made(to_backend)  # type: ignore[arg-type]
    engine.pool.put(backend, time.monotonic())
    for _ in range(1000):  # warm-up; also checks every request went through
        client.data_received(REQUEST)
        backend.data_received(ANSWER)
    if (to_client.writes, to_backend.writes) != (1000, 1000):
        raise SystemExit(f"the cycle is broken: {to_client.writes} answers, "
                         f"{to_backend.writes} requests forwarded for 1000")
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(requests):
            client.data_received(REQUEST)
            backend.data_received(ANSWER)
        best = min(best, time.perf_counter() - started)
    if requests:
        print(f"{best / requests * 1e6:.2f} us of Python per proxied request "
              f"(best of {rounds} rounds of {requests})")
    await balancer.shutdown(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=40, help="timed rounds (the best is kept)")
    args = ap.parse_args()
    asyncio.run(run(args.requests, args.rounds))


if __name__ == "__main__":
    main()
