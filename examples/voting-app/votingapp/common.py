"""What every voting-app service shares: its identity, releases, ballots, serving and the db.

Each image bakes `APP_SERVICE` and `APP_VERSION`; the version selects the release's behaviour
(`RELEASES`), so one source tree builds every version of every service. Every response carries
`X-Served-By`, the chain of `service@version` it passed through, caller first.

Written for Debian bookworm's aiohttp 3.8 (no `web.AppKey` there; used when present).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import string
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

SERVICE = os.environ.get("APP_SERVICE", "unknown")
VERSION = os.environ.get("APP_VERSION", "0")
SERVED_BY = "X-Served-By"
ME = f"{SERVICE}@{VERSION}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def app_key(name: str, kind: type = object) -> Any:
    """A typed application key where aiohttp has them (>= 3.9), a plain string on 3.8."""
    maker = getattr(web, "AppKey", None)
    return maker(name, kind) if maker else name


DRAINING = app_key("draining", bool)
READY = app_key("ready", bool)


@dataclass(frozen=True)
class Release:
    """What one version of the app does.

    worker_api: how vote reaches the worker and which endpoints the worker serves:
      "v1"         POST /api/votes {voter_id, vote, ballot}
      "v2"         POST /api/v2/votes {voter: {id}, choice, ballot}; /api/votes is 410 Gone
      "v1+voters"  v1 plus PUT /api/voters/{voter_id}/vote {vote, ballot} -> {previous, ...}
    max_options: how many OPTION_x variables (OPTION_A, OPTION_B, ...) the release reads.
    """

    worker_api: str
    max_options: int


RELEASES: dict[str, Release] = {
    "1": Release(worker_api="v1", max_options=2),
    "2-change-api": Release(worker_api="v2", max_options=2),
    "2-add-api": Release(worker_api="v1+voters", max_options=2),
    "2-candidates": Release(worker_api="v1", max_options=26),
}
RELEASE = RELEASES.get(VERSION, RELEASES["1"])


def log(message: str) -> None:
    """One line on stdout, prefixed with who says it."""
    print(f"{time.strftime('%H:%M:%S')} {ME}: {message}", file=sys.stdout, flush=True)


# -- ballots ----------------------------------------------------------------------------------


def options_from_env(max_options: int | None = None) -> dict[str, str]:
    """The ballot's options, key -> label, from OPTION_A, OPTION_B, ... (keys "a", "b", ...).

    Older releases read only the first two variables, whatever else the stack sets.
    """
    limit = RELEASE.max_options if max_options is None else max_options
    defaults = {"a": "Cats", "b": "Dogs"}
    found: dict[str, str] = {}
    for letter in string.ascii_lowercase[:limit]:
        label = os.environ.get(f"OPTION_{letter.upper()}", defaults.get(letter, ""))
        if label:
            found[letter] = label
    return found


def ballot_id(options: dict[str, str]) -> str:
    """A short id of a ballot (its options in order): a vote cast on one ballot is refused by
    a service holding another, so no vote is ever counted for a candidate the voter never saw."""
    text = "\n".join(f"{k}={v}" for k, v in options.items())
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- responses --------------------------------------------------------------------------------


def json_response(body: Any, status: int = 200, chain: str | None = None) -> web.Response:
    """A JSON response carrying the served-by chain (this service alone by default)."""
    return web.json_response(body, status=status, headers={SERVED_BY: chain or ME})


def error(status: int, message: str, chain: str | None = None, **extra: Any) -> web.Response:
    """A JSON error response: {"error": message, "service": "svc@ver", ...}."""
    return json_response({"error": message, "service": ME, **extra}, status, chain)


@web.middleware
async def served_by_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stamp X-Served-By on every response, errors and aiohttp's own 404/405 included."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.setdefault(SERVED_BY, ME)
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a bug: answer 500 visibly, with the chain, and log it
        log(f"error in {request.method} {request.path}: {exc!r}")
        return error(500, f"internal error: {type(exc).__name__}")
    response.headers.setdefault(SERVED_BY, ME)
    return response


async def health(request: web.Request) -> web.Response:
    """200 while ready and not draining; 503 otherwise (Swarm's healthcheck calls this)."""
    app = request.app
    if app.get(DRAINING):
        return error(503, "draining")
    if not app.get(READY):
        return error(503, "starting")
    return json_response({"status": "ok", "service": SERVICE, "version": VERSION})


def base_app() -> web.Application:
    """An application with the served-by middleware and /healthz; ready unless told otherwise."""
    app = web.Application(middlewares=[served_by_middleware])
    app[DRAINING] = False
    app[READY] = True
    app.router.add_get("/healthz", health)
    return app


def read_json(raw: bytes) -> dict[str, Any] | None:
    """A JSON object from a request body, or None when it is not one."""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


# -- serving ----------------------------------------------------------------------------------


def serve(app: web.Application, port: int | None = None) -> None:
    """Run `app` until SIGTERM/SIGINT, then drain: /healthz says 503, accept DRAIN_DELAY (1 s)
    more, stop accepting, let in-flight requests finish (up to SHUTDOWN_TIMEOUT, 10 s), run
    cleanups, exit."""
    asyncio.run(_serve(app, port or int(os.environ.get("PORT", "8080"))))


async def _serve(app: web.Application, port: int) -> None:
    grace = float(os.environ.get("SHUTDOWN_TIMEOUT", "10"))
    newer = tuple(int(p) for p in aiohttp.__version__.split(".")[:2]) >= (3, 9)
    runner = web.AppRunner(app, shutdown_timeout=grace) if newer else web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", port) if newer else web.TCPSite(
        runner, "0.0.0.0", port, shutdown_timeout=grace
    )
    await site.start()
    log(f"listening on :{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    app[DRAINING] = True
    # Swarm takes a stopping task out of DNS before signalling it, but a caller may have
    # looked it up a moment earlier: keep accepting briefly so that caller is served too,
    # instead of being reset from the listen backlog.
    delay = float(os.environ.get("DRAIN_DELAY", "1"))
    log(f"draining: accepting for {delay:g} s more, then finishing in-flight requests")
    await asyncio.sleep(delay)
    await runner.cleanup()
    log("stopped")


# -- database ---------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    voter_id   text PRIMARY KEY,
    vote       text NOT NULL,
    ballot     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""


def db_dsn() -> dict[str, Any]:
    """asyncpg connection arguments from DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD."""
    return {
        "host": os.environ.get("DB_HOST", "db"),
        "port": int(os.environ.get("DB_PORT", "5432")),
        "database": os.environ.get("DB_NAME", "votes"),
        "user": os.environ.get("DB_USER", "postgres"),
        "password": os.environ.get("DB_PASSWORD", "votes"),
    }


async def connect_db(app: web.Application, pool_key: Any, *, schema: bool) -> None:
    """Create the asyncpg pool under `pool_key`, retrying until db answers; mark app ready.

    Runs in the background so the service starts at once; /healthz says 503 until then, so
    Swarm sends no traffic to a task that cannot serve it yet.
    """
    import asyncpg  # only the db-backed services need it

    while True:
        try:
            pool = await asyncpg.create_pool(min_size=1, max_size=8, timeout=5, **db_dsn())
            if schema:
                async with pool.acquire() as conn, conn.transaction():
                    # Two workers starting together must not race on CREATE TABLE.
                    await conn.execute("SELECT pg_advisory_xact_lock(4242)")
                    await conn.execute(SCHEMA)
            app[pool_key] = pool
            app[READY] = True
            log("connected to db")
            return
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            log(f"db not ready ({type(exc).__name__}: {exc}); retrying")
            await asyncio.sleep(1)


def db_context(pool_key: Any, *, schema: bool) -> Callable[[web.Application], Any]:
    """A cleanup_ctx entry: connect in the background at start-up, close the pool at exit."""

    async def ctx(app: web.Application) -> Any:
        app[pool_key] = None
        app[READY] = False
        task = asyncio.create_task(connect_db(app, pool_key, schema=schema))
        yield
        task.cancel()
        pool = app[pool_key]
        if pool is not None:
            await pool.close()

    return ctx


async def run_db(app: web.Application, pool_key: Any, query: str, *args: Any) -> list[Any]:
    """Run one statement, retrying once when a pooled connection died (e.g. db restarted)."""
    import asyncpg

    pool = app[pool_key]
    if pool is None:
        raise DbUnavailable("database not connected yet")
    for attempt in (1, 2):
        try:
            return list(await pool.fetch(query, *args))
        except (TimeoutError, OSError, asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError, asyncpg.OperatorInterventionError) as exc:
            if attempt == 2:
                raise DbUnavailable(f"database unavailable: {type(exc).__name__}") from exc
    raise AssertionError("unreachable")


class DbUnavailable(Exception):
    """The database cannot be reached; handlers answer 503."""
