"""One role of the example, served with aiohttp (Debian bookworm's 3.8 is enough).

    portal  GET  /tx?user=U     token from auth, then proc with it; 200 or 502, with "seen"
    auth    POST /token {user}  -> {token};  POST /verify {token} -> {user} or 403
    proc    POST /process {token}  verify at auth, record at db
    db      POST /record {user}    counts transactions per user (in memory)
    every   GET  /health

Each answer carries `seen` (service -> versions that served this transaction) and `traces`
(service -> the trace id it saw), so a client can tell a mixed-version or an untraced
transaction. Every outgoing call carries the incoming trace id with a new span id.
Settings come from the environment: APP_SERVICE, APP_VERSION, PORT, AUTH_URL, PROC_URL,
DB_URL.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from vcauth.logic import child_traceparent, issue, merge_seen, trace_id, verify

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Role:
    """One service's identity, its callees and its HTTP client."""

    def __init__(self, service: str, version: str, env: dict[str, str]) -> None:
        self.service, self.version = service, version
        self.urls = {k: env.get(f"{k.upper()}_URL", f"http://{k}:8080") for k in
                     ("auth", "proc", "db")}
        self.session: aiohttp.ClientSession | None = None
        self.counts: dict[str, int] = {}

    def mark(self, request: web.Request) -> dict[str, Any]:
        """The start of an answer: this service's version and the trace id it saw."""
        return {"seen": {self.service: [self.version]},
                "traces": {self.service: [trace_id(request.headers.get("traceparent")) or ""]}}

    async def call(self, request: web.Request, callee: str, path: str,
                   body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST to a callee with the request's trace context; (status, its JSON)."""
        assert self.session is not None
        headers = {"traceparent": child_traceparent(request.headers.get("traceparent"))}
        try:
            async with self.session.post(self.urls[callee] + path, json=body,
                                         headers=headers) as answer:
                return answer.status, await answer.json(content_type=None)
        except (aiohttp.ClientError, ValueError, TimeoutError) as exc:
            return 599, {"error": f"{callee}: {exc!r}"}


# A typed application key where aiohttp has them (>= 3.9), a plain string on bookworm's 3.8.
ROLE: Any = web.AppKey("role", Role) if hasattr(web, "AppKey") else "role"


def _merge(out: dict[str, Any], got: dict[str, Any]) -> None:
    merge_seen(out["seen"], got.get("seen") or {})
    merge_seen(out["traces"], got.get("traces") or {})


async def _tx(request: web.Request) -> web.Response:
    role: Role = request.app[ROLE]
    out = role.mark(request)
    user = request.query.get("user", "alice")
    status, got = await role.call(request, "auth", "/token", {"user": user})
    _merge(out, got)
    if status == 200:
        status, got = await role.call(request, "proc", "/process", {"token": got["token"]})
        _merge(out, got)
    if status != 200:
        out["error"] = got.get("error", f"HTTP {status}")
        return web.json_response(out, status=502)
    return web.json_response(out)


async def _token(request: web.Request) -> web.Response:
    role: Role = request.app[ROLE]
    body = await request.json()
    try:
        token = issue(role.version, str(body.get("user", "")))
    except ValueError as exc:
        return web.json_response({**role.mark(request), "error": str(exc)}, status=400)
    return web.json_response({**role.mark(request), "token": token})


async def _verify(request: web.Request) -> web.Response:
    role: Role = request.app[ROLE]
    user = verify(role.version, str((await request.json()).get("token", "")))
    out = role.mark(request)
    if user is None:
        out["error"] = f"auth v{role.version} rejects the token"
        return web.json_response(out, status=403)
    return web.json_response({**out, "user": user})


async def _process(request: web.Request) -> web.Response:
    role: Role = request.app[ROLE]
    out = role.mark(request)
    status, got = await role.call(request, "auth", "/verify", (await request.json()))
    _merge(out, got)
    if status == 200:
        status, got = await role.call(request, "db", "/record", {"user": got["user"]})
        _merge(out, got)
    if status != 200:
        out["error"] = got.get("error", f"HTTP {status}")
        return web.json_response(out, status=status if status < 599 else 502)
    return web.json_response(out)


async def _record(request: web.Request) -> web.Response:
    role: Role = request.app[ROLE]
    user = str((await request.json()).get("user", ""))
    role.counts[user] = role.counts.get(user, 0) + 1
    return web.json_response({**role.mark(request), "count": role.counts[user]})


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


ROUTES: dict[str, list[tuple[str, str, Handler]]] = {
    "portal": [("GET", "/tx", _tx)],
    "auth": [("POST", "/token", _token), ("POST", "/verify", _verify)],
    "proc": [("POST", "/process", _process)],
    "db": [("POST", "/record", _record)],
}


def make_app(service: str, version: str, env: dict[str, str] | None = None) -> web.Application:
    """The application of one role (a KeyError for an unknown one)."""
    role = Role(service, version, dict(os.environ if env is None else env))
    app = web.Application()
    app[ROLE] = role
    for method, path, handler in ROUTES[service]:
        app.router.add_route(method, path, handler)
    app.router.add_get("/health", _health)

    async def session(_app: web.Application) -> Any:
        # A new connection per call: a pooled one to a task that stopped would fail a call.
        role.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, use_dns_cache=False),
            timeout=aiohttp.ClientTimeout(total=10))
        yield
        await role.session.close()

    app.cleanup_ctx.append(session)
    return app
