"""Several LB replicas on one table: its version, and a replica's start from its peers.

dans numbers every table it sends (`RoutingTable.version`) and checks that every running
replica reports the same number before its route step is over (`upgrade_manager.lb_replicas`).
A replica that starts while an upgrade is under way (a restart, a rescheduled task) must not
serve the table of its spec: that one routes to the canonical services, which the upgrade may
be converging. So before it opens its frontends, a replica asks its peers (`DANS_LB_PEERS`,
`tasks.{{.Service.Name}}` in the spec dans deploys) for their table with `GET /v1/table`
and takes the newest one that was started from the same spec table as itself (the same
`base`, a digest of that table): a peer from an older `dans deploy`, whose spec was another,
never passes its table on. With no peer answering (the first start, a lone replica) the spec's
table holds, as before; dans's check then finds the replica behind and sends it the current
table.

    GET /v1/table  ->  {"version": n, "base": "sha256 hex", "routes": table}
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, replace
from typing import Any

from lb._settings import Settings
from lb.errors import LBError
from lb.table import RoutingTable

__all__ = ["PEERS_ENV", "TableState", "base_digest", "newest_from_peers", "start_state"]

log = logging.getLogger("dans.lb.sync")
PEERS_ENV = "DANS_LB_PEERS"
PEER_TIMEOUT = 2.0  # seconds for one peer's answer
SYNC_BUDGET = 6.0  # seconds the whole look at the peers may take at start


def base_digest(table: RoutingTable) -> str:
    """The digest of a start-up table (its version left out)."""
    text = replace(table, version=0).to_json()
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class TableState:
    """The version of the table in force and the digest of the spec table this LB began with."""

    version: int = 0
    base: str = ""

    def answer(self, table: RoutingTable) -> dict[str, Any]:
        """The body of GET /v1/table."""
        return {"version": self.version, "base": self.base,
                "routes": replace(table, version=self.version).to_dict()}


def _peer_table(addr: str, port: int, token: str, timeout: float) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection(addr, port, timeout=timeout)
    try:
        conn.request("GET", "/v1/table", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return None
        data = json.loads(body)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _addresses(name: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def newest_from_peers(name: str, port: int, token: str, base: str,
                      budget: float = SYNC_BUDGET) -> tuple[RoutingTable, list[str]] | None:
    """The newest table of a peer started from the same spec table (`base`), and who was
    asked; None when no such peer answered within `budget` seconds."""
    deadline = time.monotonic() + budget
    addrs = _addresses(name, port)
    best: RoutingTable | None = None
    for addr in addrs:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        data = _peer_table(addr, port, token, min(PEER_TIMEOUT, left))
        if data is None or data.get("base") != base:
            continue
        try:
            table = RoutingTable.from_dict(data.get("routes"))
        except LBError:
            continue
        if best is None or table.version > best.version:
            best = table
    return None if best is None else (best, addrs)


async def start_state(settings: Settings) -> tuple[Settings, TableState]:
    """The settings to start with (the table taken from a peer when one is newer than the
    spec's) and the table state the admin API reports."""
    state = TableState(settings.table.version, base_digest(settings.table))
    peers = os.environ.get(PEERS_ENV, "").strip()
    if not peers or not settings.token or settings.admin_unix is not None:
        return settings, state
    found = await asyncio.to_thread(newest_from_peers, peers, settings.admin_port,
                                    settings.token, state.base)
    if found is None:
        log.info("no peer at %s answered with a table of this spec: starting on the spec's",
                 peers)
        return settings, state
    table, asked = found
    if table.version <= state.version:
        return settings, state
    log.info("starting on table version %d from a peer (asked %s)", table.version,
             ", ".join(asked))
    state.version = table.version
    return replace(settings, table=table), state
