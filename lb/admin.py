"""The admin API: JSON over HTTP on its own port, every call authenticated by a bearer token.

    GET  /healthz                                    {"ok": true}            (no token: liveness)
    GET  /v1/status                                  frontends, groups, backends, in-flight
    GET  /v1/routes                                  the routing table in force
    PUT  /v1/routes             body: table          {"routes": table}
    POST /v1/frontends/F/switch body: {"group": G}   {"frontend", "active", "previous"}
    POST /v1/frontends/F/groups/G/drain              {"frontend", "group", "state", "in_flight"}
    GET  /v1/frontends/F/groups/G/drained?timeout=S  {"drained": bool, "in_flight": n}
    GET  /metrics                                    Prometheus text format

A request without `Authorization: Bearer <token>` matching the LB's token gets 401 and
changes nothing. Errors are {"error": message} with 400 (bad input), 404 (unknown frontend or
group) or 409 (a command that contradicts the state, e.g. draining the active group).
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from lb.table import RoutingTable, parse_json
from upgrade_manager.errors import LBError

__all__ = ["Controller", "make_admin_app", "status_of"]

log = logging.getLogger("dans.lb")
MAX_DRAIN_WAIT = 300.0
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _app_key(name: str) -> Any:
    # aiohttp >= 3.9 wants typed AppKeys (string keys warn); Debian bookworm ships 3.8.
    factory = getattr(web, "AppKey", None)
    return factory(name, object) if factory is not None else name


CONTROLLER = _app_key("dans_lb_controller")
TOKEN = _app_key("dans_lb_token")


def status_of(exc: LBError) -> int:
    """The HTTP status for an LBError raised by a command (404, 409 or 400)."""
    return int(getattr(exc, "http_status", 400))


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

    async def metrics(self) -> str:
        """Prometheus text."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if request.path == "/healthz":
        return await handler(request)
    expected: str | None = request.app[TOKEN]
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if (not expected or scheme.lower() != "bearer"
            or not hmac.compare_digest(token.strip().encode(), expected.encode())):
        return _error(401, "missing or wrong admin token")
    try:
        return await handler(request)
    except LBError as exc:
        return _error(status_of(exc), str(exc))
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


async def _get_routes(request: web.Request) -> web.Response:
    return web.json_response((await _ctl(request).table()).to_dict())


async def _put_routes(request: web.Request) -> web.Response:
    table = RoutingTable.from_dict(await _body(request))
    await _ctl(request).apply(table)
    return web.json_response({"routes": (await _ctl(request).table()).to_dict()})


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


async def _metrics(request: web.Request) -> web.Response:
    text = await _ctl(request).metrics()
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type": "version=0.0.4"})


def make_admin_app(controller: Controller, token: str | None) -> web.Application:
    """The admin application; with no token every call but /healthz is refused."""
    app = web.Application(middlewares=[_auth], client_max_size=8 << 20)
    app[CONTROLLER] = controller
    app[TOKEN] = token
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/v1/status", _status)
    app.router.add_get("/v1/routes", _get_routes)
    app.router.add_put("/v1/routes", _put_routes)
    app.router.add_post("/v1/frontends/{frontend}/switch", _switch)
    app.router.add_post("/v1/frontends/{frontend}/groups/{group}/drain", _drain)
    app.router.add_get("/v1/frontends/{frontend}/groups/{group}/drained", _drained)
    app.router.add_get("/metrics", _metrics)
    return app

