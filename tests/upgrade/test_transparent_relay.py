"""The transparent relay's own logic, on loopback (its redirect rule is tested on the swarm by
tests/upgrade/test_unannotated_swarm.py, where callers dial a port written nowhere)."""

from __future__ import annotations

import asyncio
import socket

from lb._transparent import RelaySettings, original_port, redirect_rule, serve
from tests.support import free_port


def test_redirect_rule_takes_every_incoming_tcp_port_but_loopback() -> None:
    rule = redirect_rule(15001)
    assert rule[:4] == ["-t", "nat", "-A", "PREROUTING"]
    assert ["!", "-i", "lo"] == rule[6:9] and rule[-2:] == ["--to-ports", "15001"]
    assert "--dport" not in rule  # no port list: every port


def test_a_connection_that_was_not_redirected_has_no_original_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        try:
            assert original_port(conn) is None
        finally:
            conn.close()
            client.close()


def test_a_direct_connection_is_closed_without_relaying() -> None:
    async def scenario() -> bytes:
        port = free_port()
        stop, started = asyncio.Event(), asyncio.Event()
        settings = RelaySettings(target="nowhere.invalid", listen=port, redirect=False,
                                 grace=0.1)
        task = asyncio.create_task(serve(settings, stop, started))
        await asyncio.wait_for(started.wait(), 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = await asyncio.wait_for(reader.read(), 5)  # EOF: the probe is just closed
        writer.close()
        stop.set()
        await asyncio.wait_for(task, 5)
        return data

    assert asyncio.run(scenario()) == b""
