"""The admin API: JSON over HTTP on its own port, every call authenticated by a bearer token.

    GET  /healthz                                    {"ok": true}            (no token: liveness)
    GET  /v1/status                                  frontends, groups, backends, in-flight
    GET  /v1/routes                                  the routing table in force (+ version)
    PUT  /v1/routes             body: table          {"routes": table}
    GET  /v1/table                                   {"version", "base", "routes"} (admin_sync)
    POST /v1/frontends/F/switch body: {"group": G}   {"frontend", "active", "previous"}
    POST /v1/frontends/F/groups/G/drain              {"frontend", "group", "state", "in_flight"}
    GET  /v1/frontends/F/groups/G/drained?timeout=S  {"drained": bool, "in_flight": n}
    PUT  /v1/upgrade            body: see lb._progress {"upgrade": state, "versions": {...}}
    GET  /metrics                                    Prometheus text format

A request without `Authorization: Bearer <token>` matching the LB's token gets 401 and
changes nothing. The token is compared in constant time (digests of equal length, so neither
its content nor its length leaks through timing); a header that is not text (non-ASCII bytes)
is a wrong token, not an error. Every failed attempt is logged with the peer's address, and a
peer with `FAIL_LIMIT` failures within `FAIL_WINDOW` seconds gets 429 (without a token check)
until the window has passed: a guessing client learns nothing faster than that.
Errors are {"error": message} with 400 (bad input), 404 (unknown frontend or group) or 409
(a command that contradicts the state, e.g. draining the active group).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from lb._admin_sync import TableState
from lb._progress import UpgradeStatus, parse_update
from lb.errors import LBError
from lb.table import RoutingTable, parse_json

__all__ = ["Controller", "FailedAttempts", "make_admin_app", "token_matches"]

log = logging.getLogger("dans.lb.admin")
MAX_DRAIN_WAIT = 300.0
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the Prometheus text format
FAIL_LIMIT = 10  # failed attempts per peer ...
FAIL_WINDOW = 60.0  # ... within this many seconds, then 429 until the window has passed
_MAX_PEERS = 4096  # peers tracked at once (the oldest are forgotten): bounded memory
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _app_key(name: str) -> Any:
    # aiohttp >= 3.9 wants typed AppKeys (string keys warn); Debian bookworm ships 3.8.
    factory = getattr(web, "AppKey", None)
    return factory(name, object) if factory is not None else name


CONTROLLER = _app_key("dans_lb_controller")
TOKEN = _app_key("dans_lb_token")
FAILURES = _app_key("dans_lb_auth_failures")
TABLE_STATE = _app_key("dans_lb_table_state")


def token_matches(header: str, expected: str | None) -> bool:
    """True when an Authorization header value carries `expected` as its bearer token.

    Constant-time: both sides are hashed first, so the comparison runs over equal lengths
    whatever was sent. A value that is not encodable text (aiohttp keeps undecodable bytes as
    surrogates) simply does not match.
    """
    if not expected:
        return False
    scheme, _, token = header.partition(" ")
    try:
        given = token.strip().encode("utf-8")
    except UnicodeEncodeError:
        return False
    ok = hmac.compare_digest(hashlib.sha256(given).digest(),
                             hashlib.sha256(expected.encode("utf-8")).digest())
    return ok and scheme.lower() == "bearer"


class FailedAttempts:
    """Failed token checks per peer within a sliding window; bounded in peers and entries."""

    def __init__(self, limit: int = FAIL_LIMIT, window: float = FAIL_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._peers: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, peer: str) -> deque[float]:
        times = self._peers.get(peer)
        if times is None:
            return deque()
        horizon = self.clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._peers[peer]
        return times

    def blocked_for(self, peer: str) -> float:
        """Seconds until `peer` may try again (0 when it may now)."""
        times = self._recent(peer)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window - self.clock())

    def record(self, peer: str) -> int:
        """Count one failure of `peer`; returns its failures within the window."""
        times = self._recent(peer)
        if peer not in self._peers:
            self._peers[peer] = times
            while len(self._peers) > _MAX_PEERS:
                self._peers.popitem(last=False)
        times.append(self.clock())
        while len(times) > self.limit:
            times.popleft()
        return len(times)


class Controller(Protocol):
    """What the admin API drives: one balancer, or all worker processes of one LB."""

    async def apply(self, table: RoutingTable) -> None:
        """Make `table` the routing table."""

    async def table(self) -> RoutingTable:
        """The routing table in force."""

    async def switch(self, frontend: str, group: str) -> dict[str, Any]:
        """Make `group` the active group of `frontend`."""

    async def drain(self, frontend: str, group: str) -> dict[str, Any]:
        """Drain a group; report its in-flight count."""

    async def wait_drained(self, frontend: str, group: str, timeout: float) -> dict[str, Any]:
        """Wait until a group has nothing in flight."""

    async def status(self) -> dict[str, Any]:
        """Everything the LB knows, JSON-ready."""

    async def upgrade(self, status: UpgradeStatus, versions: dict[str, str]) -> dict[str, Any]:
        """Take the upgrade manager's progress and the versions groups serve (for metrics)."""

    async def metrics(self) -> str:
        """Prometheus text."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if request.path == "/healthz":
        return await handler(request)
    failures: FailedAttempts = request.app[FAILURES]
    peer = request.remote or "local"
    wait = failures.blocked_for(peer)
    if wait > 0:
        return web.json_response({"error": "too many failed attempts; retry later"},
                                 status=429, headers={"Retry-After": str(int(wait) + 1)})
    if not token_matches(request.headers.get("Authorization", ""), request.app[TOKEN]):
        count = failures.record(peer)
        log.warning("admin API: refused %s %r from %s: missing or wrong token (%d of %d "
                    "allowed failures in %.0f s)", request.method, request.path[:100], peer,
                    count, failures.limit, failures.window)
        return _error(401, "missing or wrong admin token")
    try:
        return await handler(request)
    except LBError as exc:
        return _error(exc.http_status, str(exc))
    except web.HTTPException:
        raise
    except Exception as exc:
        # A bug, never the client's fault: one line in the log, a JSON 500, nothing else.
        log.error("admin API: internal error on %s %s: %r", request.method, request.path, exc)
        return _error(500, f"internal error: {type(exc).__name__}")


async def _body(request: web.Request) -> Any:
    """The request's JSON body; LBError (400) for anything but strict UTF-8 JSON (NaN,
    Infinity and nesting too deep to parse included)."""
    return parse_json(await request.read(), "the request body")


def _ctl(request: web.Request) -> Controller:
    ctl: Controller = request.app[CONTROLLER]
    return ctl


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _status(request: web.Request) -> web.Response:
    return web.json_response(await _ctl(request).status())


def _state(request: web.Request) -> TableState:
    state: TableState = request.app[TABLE_STATE]
    return state


async def _get_routes(request: web.Request) -> web.Response:
    table = await _ctl(request).table()
    return web.json_response(_state(request).answer(table)["routes"])


async def _get_table(request: web.Request) -> web.Response:
    return web.json_response(_state(request).answer(await _ctl(request).table()))


async def _put_routes(request: web.Request) -> web.Response:
    table = RoutingTable.from_dict(await _body(request))
    await _ctl(request).apply(table)
    _state(request).version = table.version
    return web.json_response({"routes": _state(request).answer(await _ctl(request).table())
                              ["routes"]})


async def _switch(request: web.Request) -> web.Response:
    body = await _body(request)
    group = body.get("group") if isinstance(body, dict) else None
    if not isinstance(group, str):
        raise LBError('expected {"group": NAME}')
    result = await _ctl(request).switch(request.match_info["frontend"], group)
    return web.json_response(result)


async def _drain(request: web.Request) -> web.Response:
    info = request.match_info
    return web.json_response(await _ctl(request).drain(info["frontend"], info["group"]))


async def _drained(request: web.Request) -> web.Response:
    info = request.match_info
    try:
        timeout = float(request.query.get("timeout", "0"))
    except ValueError:
        raise LBError("timeout must be a number of seconds") from None
    if not math.isfinite(timeout):
        raise LBError("timeout must be a finite number of seconds")
    timeout = max(0.0, min(timeout, MAX_DRAIN_WAIT))
    result = await _ctl(request).wait_drained(info["frontend"], info["group"], timeout)
    return web.json_response(result)


async def _upgrade(request: web.Request) -> web.Response:
    status, versions = parse_update(await _body(request))
    return web.json_response(await _ctl(request).upgrade(status, versions))


async def _metrics(request: web.Request) -> web.Response:
    text = await _ctl(request).metrics()
    return web.Response(body=text.encode(), headers={"Content-Type": METRICS_TYPE})


def make_admin_app(controller: Controller, token: str | None,
                   state: TableState | None = None) -> web.Application:
    """The admin application; with no token every call but /healthz is refused. `state`
    carries the table's version (what a PUT set, or what start-up took from a peer)."""
    app = web.Application(middlewares=[_auth], client_max_size=8 << 20)
    app[CONTROLLER] = controller
    app[TOKEN] = token
    app[FAILURES] = FailedAttempts()
    app[TABLE_STATE] = state or TableState()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/v1/status", _status)
    app.router.add_get("/v1/routes", _get_routes)
    app.router.add_put("/v1/routes", _put_routes)
    app.router.add_get("/v1/table", _get_table)
    app.router.add_post("/v1/frontends/{frontend}/switch", _switch)
    app.router.add_post("/v1/frontends/{frontend}/groups/{group}/drain", _drain)
    app.router.add_get("/v1/frontends/{frontend}/groups/{group}/drained", _drained)
    app.router.add_put("/v1/upgrade", _upgrade)
    app.router.add_get("/metrics", _metrics)
    return app

