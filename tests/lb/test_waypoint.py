"""The waypoint (`lb._mesh`) on real sockets: it forwards to the real service's port, counts
each hop and the calls without trace context, and serves /metrics without a token.

The relay half (every other port, through an iptables redirect) needs NET_ADMIN in a network
namespace of its own: the swarm test (tests/mesh) covers it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from lb._mesh import WaypointSettings, redirect_rules, serve_waypoint, waypoint_table
from tests.lb.raw import CaptureBackend
from tests.lb.support import LoopThread, free_port, get, wait_until

GOOD = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def capture(loops: LoopThread) -> Iterator[CaptureBackend]:
    b = CaptureBackend(loops)
    yield b
    b.close()


@pytest.fixture(scope="module")
def waypoint(loops: LoopThread, capture: CaptureBackend) -> Iterator[WaypointSettings]:
    settings = WaypointSettings(target="shop_api", callee="api", http_ports=(capture.port,),
                                redirect=False, relay_listen=free_port(),
                                metrics_port=free_port(), metrics_host="127.0.0.1",
                                listen_host="127.0.0.2", backend_host="127.0.0.1",
                                trace_header="X-Request-Id", grace=1.0)
    stop = asyncio.Event()
    started = asyncio.Event()

    async def begin() -> asyncio.Task[None]:
        t = asyncio.get_running_loop().create_task(serve_waypoint(settings, stop, started))
        await asyncio.wait_for(started.wait(), 10)
        return t

    running = loops.run(begin())
    yield settings

    async def end() -> None:
        stop.set()
        await asyncio.wait_for(running, 10)

    loops.run(end())


def _call(port: int, path: bytes, extra: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.2", port), timeout=5) as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: api\r\n" + extra
                  + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _flat(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_the_table_forwards_each_http_port_to_the_same_port_of_the_service() -> None:
    s = WaypointSettings(target="shop_api", callee="api", http_ports=(80, 8080))
    table = waypoint_table(s)
    assert [(fe.listen, fe.groups["main"].backends, fe.hop) for fe in table.frontends] == [
        (80, ("tasks.shop_api:80",), "api"), (8080, ("tasks.shop_api:8080",), "api")]
    assert not any(fe.trace for fe in table.frontends)  # the edge gives traces, not a hop
    # The HTTP ports and the metrics port are kept from the redirect, in that order.
    assert [r[r.index("--dport") + 1] for r in redirect_rules(s)] == ["80", "8080", "15090"]


def test_calls_are_forwarded_and_counted_per_hop(waypoint: WaypointSettings,
                                                 capture: CaptureBackend) -> None:
    port = waypoint.http_ports[0]
    capture.seen.clear()
    assert b"200 OK" in _call(port, b"/a", b"traceparent: " + GOOD + b"\r\n")
    assert b"200 OK" in _call(port, b"/b", b"X-Request-Id: order-1\r\n")
    assert b"200 OK" in _call(port, b"/c")
    wait_until(lambda: len(capture.seen) >= 3, timeout=10, what="three calls at the service")
    assert [s.path for s in capture.seen] == [b"/a", b"/b", b"/c"]
    # The waypoint forwards trace context as it came (the edge gives it, not a waypoint).
    assert [v for k, v in capture.seen[0].headers if k.lower() == b"traceparent"] == [GOOD]
    got = _flat(get(f"http://127.0.0.1:{waypoint.metrics_port}/metrics")[1])
    assert got['dans_mesh_requests_total{caller="-",callee="api",code="200"}'] == 3
    assert got['dans_mesh_request_duration_seconds_count{caller="-",callee="api"}'] == 3
    assert got['dans_mesh_untraced_total{callee="api"}'] == 1  # /c alone had none


def test_metrics_port_answers_health_and_nothing_else(waypoint: WaypointSettings) -> None:
    base = f"http://127.0.0.1:{waypoint.metrics_port}"
    assert get(base + "/healthz") == (200, '{"ok": true}')
    assert get(base + "/v1/routes")[0] == 404
