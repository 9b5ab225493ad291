"""One table for several LB replicas (lb._admin_sync): its version through the admin API, and a
starting replica that takes the newest table of its peers, only from the same spec table."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from lb._admin_sync import PEERS_ENV, base_digest, newest_from_peers, start_state
from lb._settings import Settings
from lb.errors import LBError
from lb.table import RoutingTable
from tests.lb.support import TOKEN, LBProcess, free_port, frontend


def spec_table() -> dict[str, object]:
    return {"frontends": [frontend("web", free_port(), {"main": ["127.0.0.1:1"],
                                                         "next": ["127.0.0.1:2"]}, "main")]}


def test_the_version_round_trips_and_is_checked() -> None:
    table = RoutingTable.from_dict({"frontends": [], "version": 4})
    assert table.version == 4 and RoutingTable.from_json(table.to_json()) == table
    assert "version" not in RoutingTable().to_dict()  # old tables look as before
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(LBError, match="version"):
            RoutingTable.from_dict({"frontends": [], "version": bad})
    assert base_digest(table) == base_digest(RoutingTable())


def test_a_replica_starts_on_the_newest_peer_table_of_its_own_spec(
        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_table()
    peer = LBProcess(spec)
    try:
        start = peer.admin._call("GET", "/v1/table")
        assert start["version"] == 0 and start["base"] == base_digest(
            RoutingTable.from_dict(spec))
        switched = json.loads(json.dumps(spec))
        switched["frontends"][0]["active"] = "next"
        peer.admin.set_routes(RoutingTable.from_dict({**switched, "version": 3}))
        assert peer.admin.routes().version == 3  # GET /v1/routes shows it too
        mine = replace(RoutingTable.from_dict(spec), version=0)
        found = newest_from_peers("127.0.0.1", peer.admin_port, TOKEN, base_digest(mine))
        assert found is not None and found[0].version == 3
        assert found[0].frontend("web").active == "next"
        # A peer started from another spec (an older deploy) passes nothing on.
        assert newest_from_peers("127.0.0.1", peer.admin_port, TOKEN, "other") is None
        assert newest_from_peers("127.0.0.1", peer.admin_port, "wrong", base_digest(mine)) \
            is None
        monkeypatch.setenv(PEERS_ENV, "127.0.0.1")
        settings = Settings(table=mine, token=TOKEN, admin_port=peer.admin_port)
        started, state = asyncio.run(start_state(settings))
        assert state.version == 3 and started.table.frontend("web").active == "next"
        monkeypatch.setenv(PEERS_ENV, "")
        alone, state = asyncio.run(start_state(settings))
        assert alone.table == mine and state.version == 0
    finally:
        peer.stop()
