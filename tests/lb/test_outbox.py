"""The per-turn write queue (`lb.outbox`): order, one write per connection and turn, closes."""

from __future__ import annotations

import asyncio

import pytest

from lb.outbox import Outbox, Queued
from lb.upstream import Upstream, UpstreamPool


class Recorder(asyncio.Transport):
    """A transport that records what happens to it, in order."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.events: list[tuple[str, bytes]] = []
        self.closing = False
        self.fail = fail

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.fail:
            raise RuntimeError("broken transport")
        self.events.append(("write", bytes(data)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append(("close", b""))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class Peer(Queued):
    def __init__(self, outbox: Outbox, transport: Recorder) -> None:
        self.outbox = outbox
        self.transport = transport


async def after_this_turn() -> None:
    """Return once the callbacks scheduled so far (the outbox's flush) have run: call_soon
    runs callbacks in the order they were scheduled."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


def test_writes_of_a_turn_go_out_after_it_in_order_one_write_per_connection() -> None:
    async def scenario() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], bool]:
        box = Outbox()
        one, two = Peer(box, Recorder()), Peer(box, Recorder())
        one.send(b"HTTP/1.1 200 OK\r\n")
        two.send(b"GET / HTTP/1.1\r\n\r\n")
        one.send(b"Content-Length: 0\r\n\r\n")
        nothing_yet = not one.transport.events and not two.transport.events  # type: ignore[union-attr]
        await after_this_turn()
        return one.transport.events, two.transport.events, nothing_yet  # type: ignore[union-attr]

    first, second, nothing_yet = asyncio.run(scenario())
    assert nothing_yet
    assert first == [("write", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]
    assert second == [("write", b"GET / HTTP/1.1\r\n\r\n")]


def test_each_turn_flushes_again() -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        box = Outbox()
        peer = Peer(box, Recorder())
        for part in (b"a", b"b", b"c"):
            peer.send(part)
            await after_this_turn()
        return peer.transport.events  # type: ignore[union-attr]

    assert asyncio.run(scenario()) == [("write", b"a"), ("write", b"b"), ("write", b"c")]


def test_closing_an_upstream_sends_what_it_queued_first() -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        up = Upstream(UpstreamPool(), ("127.0.0.1", 1))
        transport = Recorder()
        up.connection_made(transport)
        up.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        up.close()
        await after_this_turn()  # the scheduled flush finds nothing left to write
        return transport.events

    assert asyncio.run(scenario()) == [("write", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                                       ("close", b"")]


@pytest.mark.parametrize("how", ["connection_lost", "transport_closing"])
def test_nothing_is_written_to_a_connection_that_is_gone(how: str) -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        up = Upstream(UpstreamPool(), ("127.0.0.1", 1))
        transport = Recorder()
        up.connection_made(transport)
        up.send(b"late bytes")
        if how == "connection_lost":
            up.connection_lost(None)
        else:
            transport.closing = True
        await after_this_turn()
        return transport.events

    assert asyncio.run(scenario()) == []


def test_a_broken_transport_does_not_hold_back_the_others() -> None:
    async def scenario() -> tuple[list[tuple[str, bytes]], list[bytes] | None]:
        box = Outbox()
        broken, fine = Peer(box, Recorder(fail=True)), Peer(box, Recorder())
        broken.send(b"x")
        fine.send(b"y")
        await after_this_turn()
        return fine.transport.events, broken.queued  # type: ignore[union-attr]

    events, left = asyncio.run(scenario())
    assert events == [("write", b"y")]
    assert left is None

