"""The edge LB's admin API in memory, for executor tests on the fake gateway.

The executor talks to the LB through the narrow `LBAdmin` protocol (set_routes, wait_drained;
the facade also reads routes and waits until it is ready). `FakeLB` keeps the table in force,
parses every table with the LB's own `RoutingTable.from_dict` (so a table the real LB would
refuse is refused here), answers 404-like `lb.errors.LBError`s (as the real client does) for
unknown frontends and groups, and, with `watch=True`, checks continuity (DESIGN.md §4.2)
before every engine call: each frontend's active group must route to services that have a
running (healthy) task. No traffic is modelled, so a drain is over at once. Upgrade progress
reports are read with the LB's own `lb._progress.parse_update` and kept in `reports`.
"""

from __future__ import annotations

import json
from typing import Any

from lb._metrics import Metrics
from lb._progress import Progress, parse_update
from lb.errors import LBError
from lb.table import RoutingTable
from tests.fakegateway import FakeGateway
from upgrade_manager.errors import NotFound
from upgrade_manager.managed import lb_service_name

__all__ = ["FakeLB"]


class FakeLB:
    """One stack's edge LB: its routing table, the tables it was sent, what went wrong."""

    def __init__(self, gw: FakeGateway, stack: str, *, watch: bool = False) -> None:
        self.gw = gw
        self.stack = stack
        self.table = self._start_up_table()
        self.sent: list[RoutingTable] = []
        self.violations: list[str] = []
        self.reports: list[dict[str, Any]] = []  # the progress reports, as sent
        self.progress = Progress()
        self.metrics = Metrics()  # only its group versions are used
        if watch:
            gw.hooks.append(lambda _name, _mutating: self._check(self.table, "engine call"))

    def _start_up_table(self) -> RoutingTable:
        """The table the LB reads from its environment when it starts (DANS_LB_CONFIG)."""
        try:
            spec = self.gw.inspect_service(lb_service_name(self.stack))["Spec"]
        except NotFound:
            return RoutingTable()
        env = dict(e.split("=", 1) for e in spec["TaskTemplate"]["ContainerSpec"]["Env"])
        return RoutingTable.from_dict(json.loads(env["DANS_LB_CONFIG"]))

    # -- what the upgrade code calls ----------------------------------------------------

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Ready when the LB service has a running task."""
        if not self._running(lb_service_name(self.stack)):
            raise LBError(f"LB admin GET /healthz: the LB of {self.stack} is not running")

    def close(self) -> None:
        """Nothing to release (the real client's channel removes its helper here)."""

    def routes(self) -> RoutingTable:
        """The routing table in force."""
        return self.table

    def set_routes(self, table: RoutingTable) -> RoutingTable:
        """Replace the table (validated as the LB validates it); returns it."""
        parsed = RoutingTable.from_dict(json.loads(table.to_json()))
        self._check(parsed, "set_routes")
        self.sent.append(parsed)
        self.table = parsed
        return parsed

    def wait_drained(self, frontend: str, group: str, timeout: float = 60.0) -> None:
        """Nothing is in flight in the fake: drained once frontend and group exist."""
        fe = self.table.frontend(frontend)
        if group not in fe.groups:
            raise LBError(f"LB admin GET drained: 404 frontend {frontend} has no group {group}")

    def report_upgrade(self, progress: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Keep a progress report (checked as the LB checks it)."""
        status, versions = parse_update(json.loads(json.dumps(progress)))
        self.reports.append(progress)
        self.metrics.set_versions(versions)
        return {"upgrade": self.progress.update(status), "versions": dict(self.metrics.versions)}

    # -- checks -----------------------------------------------------------------------------

    def _check(self, table: RoutingTable, when: str) -> None:
        for fe in table.frontends:
            for backend in fe.groups[fe.active].backends:
                service = backend.split(":")[0].removeprefix("tasks.")
                if not self._running(service):
                    self.violations.append(f"{when}: frontend {fe.name} routes new requests "
                                           f"to {service}, which has no running task")

    def _running(self, service: str) -> bool:
        try:
            tasks = self.gw.tasks(service, desired_running=True)
        except NotFound:
            return False
        return any(t["Status"]["State"] == "running" for t in tasks)
