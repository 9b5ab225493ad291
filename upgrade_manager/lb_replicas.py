"""Several LB replicas that switch as one: every routing change reaches each of them.

`dans deploy --lb-replicas N` (or `global`) runs the edge LB as several tasks, each with its
own table in memory. A request through the routing mesh reaches any of them, so a route step
is over only when every *running* replica serves the new table, and a *starting* one counts
as running (`admin_channel.serving`: with a host-mode port it may take requests before its
task is reported running; it is waited for until it answers):

- dans numbers the table (`RoutingTable.version`: one more than the highest version any
  replica reports) and sends it to the address of every running LB task on the edge network,
  which it reads from the swarm (not from DNS, which lags behind task starts);
- it then asks every running replica again (`GET /v1/table`), also one that started in the
  meantime, and sends the table again to each one that is behind; a replica that is running
  but does not answer is retried until `agree_timeout`, then the step fails naming it: it is
  never skipped, since it may still take requests;
- a drain is over when every running replica has nothing in flight for the group.

A replica that starts mid-upgrade takes the newest table from its peers before it opens its
frontends (`lb._admin_sync`); the check above covers the start that races with a change.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from lb.client import AdminClient
from lb.table import RoutingTable
from upgrade_manager._lb import LBFault
from upgrade_manager.errors import PlanError
from upgrade_manager.model import Spec

__all__ = ["AGREE_TIMEOUT", "Fanout", "ReplicatedAdmin", "parse_replicas", "refuse_unplaceable"]

AGREE_TIMEOUT = 60.0  # seconds every running replica has to report the new table
RETRY_PAUSE = 0.3
Answer = tuple[int, bytes] | str  # (status, body), or why there is no answer


class Fanout(Protocol):
    """How requests reach each replica (`upgrade_manager.admin_channel.AdminChannel`)."""

    where: str

    def addresses(self) -> list[str]:
        """The addresses of every running (or starting) LB task on the edge network."""

    def request_each(self, method: str, path: str, body: bytes | None, targets: list[str],
                     timeout: float) -> dict[str, Answer]:
        """Send one request to each target; each one's answer by address."""

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                timeout: float) -> tuple[int, bytes]:
        """Send one request to any replica."""

    def close(self) -> None:
        """Release what the fan-out holds."""


def _json_of(answer: Answer) -> tuple[int, Any] | str:
    """A replica's status and decoded JSON body, or why there is none."""
    if isinstance(answer, str):
        return answer
    status, body = answer
    try:
        return status, json.loads(body)
    except ValueError:
        return f"answered {status} with no JSON"


def _table_of(answer: Answer, key: str | None) -> RoutingTable | str:
    """The table in a replica's answer, or why there is none."""
    decoded = _json_of(answer)
    if isinstance(decoded, str):
        return decoded
    status, data = decoded
    if status >= 400:
        return f"answered {status}: {data.get('error', '') if isinstance(data, dict) else ''}"
    try:
        return RoutingTable.from_dict(data[key] if key else data)
    except (LBFault, KeyError, TypeError) as exc:
        return f"sent no table ({exc})"


class ReplicatedAdmin(AdminClient):
    """The admin client of a stack whose LB may run several replicas (see above)."""

    def __init__(self, fanout: Fanout, timeout: float = 10.0, *,
                 agree_timeout: float = AGREE_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__("", None, timeout, transport=fanout)
        self.fanout = fanout
        self.agree_timeout = agree_timeout
        self.clock = clock
        self.sleep = sleep

    def _each(self, method: str, path: str, body: Any, targets: list[str],
              timeout: float | None = None) -> dict[str, Answer]:
        data = None if body is None else json.dumps(body).encode()
        return self.fanout.request_each(method, path, data, targets, timeout or self.timeout)

    def _running(self) -> list[str]:
        addrs = self.fanout.addresses()
        if not addrs:
            raise LBFault("the LB has no running replica")
        return addrs

    def tables(self) -> dict[str, RoutingTable | str]:
        """Each running replica's table (with its version), or why it did not answer."""
        addrs = self._running()
        return {a: _table_of(ans, "routes")
                for a, ans in self._each("GET", "/v1/table", None, addrs).items()}

    def routes(self) -> RoutingTable:
        """The newest table any replica serves (a replica that lags is set right later)."""
        found = [t for t in self.tables().values() if isinstance(t, RoutingTable)]
        if not found:
            raise LBFault("no LB replica answered with its routing table")
        return max(found, key=lambda t: t.version)

    def set_routes(self, table: RoutingTable) -> RoutingTable:
        """Give every running replica `table` under a new version; returns the table in force
        once all of them report that version (LBFault naming the replicas that do not)."""
        now = self.tables()
        version = 1 + max((t.version for t in now.values() if isinstance(t, RoutingTable)),
                          default=0)
        stamped = replace(table, version=version)
        deadline = self.clock() + self.agree_timeout
        behind: dict[str, str] = {a: "not sent yet" for a in now}
        while True:
            answers = self._each("PUT", "/v1/routes", stamped.to_dict(), sorted(behind))
            for addr, answer in answers.items():
                got = _table_of(answer, "routes")
                if isinstance(got, RoutingTable) and got.version == version:
                    behind.pop(addr)
                else:
                    behind[addr] = got if isinstance(got, str) else f"has version {got.version}"
            if not behind:
                behind = self._not_at(version)
                if not behind:
                    return stamped
            if self.clock() > deadline:
                raise LBFault(f"LB replicas do not serve table version {version} after "
                              f"{self.agree_timeout:.0f} s: " +
                              "; ".join(f"{a}: {why}" for a, why in sorted(behind.items())))
            self.sleep(RETRY_PAUSE)

    def _not_at(self, version: int) -> dict[str, str]:
        """The running replicas (asked afresh) that do not report `version`, and why."""
        behind = {}
        for addr, got in self.tables().items():
            if isinstance(got, str):
                behind[addr] = got
            elif got.version != version:
                behind[addr] = f"has version {got.version}"
        return behind

    def wait_drained(self, frontend: str, group: str, timeout: float = 60.0) -> None:
        """Wait until no running replica has a request of `group` in flight."""
        deadline = self.clock() + timeout
        path = f"/v1/frontends/{_q(frontend)}/groups/{_q(group)}/drained"
        while True:
            step = max(0.0, min(deadline - self.clock(), 20.0))
            answers = self._each("GET", f"{path}?timeout={step:.3f}", None, self._running(),
                                 timeout=step + 10.0)
            busy = {a: why for a, ans in answers.items() if (why := _busy(ans))}
            if not busy:
                return
            if self.clock() >= deadline:
                raise LBFault(f"group {group} of frontend {frontend} is not drained after "
                              f"{timeout:.0f} s: " +
                              "; ".join(f"{a}: {why}" for a, why in sorted(busy.items())))
            self.sleep(RETRY_PAUSE)

    def report_upgrade(self, progress: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send the upgrade's progress to every replica; the first one's answer."""
        answers = self._each("PUT", "/v1/upgrade", progress, self._running(), timeout)
        for answer in answers.values():
            if not isinstance(answer, str) and answer[0] < 400:
                result: dict[str, Any] = json.loads(answer[1])
                return result
        raise LBFault("no LB replica took the upgrade's progress: " +
                      "; ".join(f"{a}: {ans if isinstance(ans, str) else ans[0]}"
                                for a, ans in sorted(answers.items())))


def parse_replicas(given: str | None, running: Spec | None) -> int | None:
    """How many LB tasks: `given` ("N" or "global"), else the running LB's, else 1."""
    if given is None:
        mode = (running or {}).get("Mode") or {}
        if "Global" in mode:
            return None
        return int((mode.get("Replicated") or {}).get("Replicas", 1))
    if given.strip().lower() == "global":
        return None
    if not given.strip().isdigit() or not 1 <= int(given) <= 64:
        raise PlanError(f"--lb-replicas {given!r}: a number from 1 to 64, or 'global'")
    return int(given)


def refuse_unplaceable(nodes: int, lb: Spec) -> None:
    """Refuse an LB whose replicas cannot all run: with host-mode ports each replica needs a
    node of its own (`MaxReplicas 1`), so more replicas than schedulable nodes would leave
    some pending, and every route step would wait for them until it fails."""
    placement = lb["TaskTemplate"].get("Placement") or {}
    replicas = (lb["Mode"].get("Replicated") or {}).get("Replicas")
    if placement.get("MaxReplicas") != 1 or replicas is None or replicas <= nodes:
        return
    ports = sorted(str(p["PublishedPort"]) for p in (lb.get("EndpointSpec") or {}).get("Ports", [])
                   if p.get("PublishMode") == "host")
    raise PlanError(
        f"--lb-replicas {replicas}: the LB publishes port(s) {', '.join(ports)} in host mode, "
        f"so each replica needs a node of its own, and the swarm has {nodes} node(s) that can "
        f"take tasks; use --lb-replicas {nodes} (or 'global': one per node), add nodes, or "
        f"publish the port(s) in ingress mode"
    )


def _busy(answer: Answer) -> str:
    """Why a replica is not drained ("" when it is)."""
    decoded = _json_of(answer)
    if isinstance(decoded, str):
        return decoded
    status, data = decoded
    if status >= 400 or not isinstance(data, dict):
        return f"answered {status}"
    return "" if data.get("drained") else f"{data.get('in_flight')} in flight"


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")
