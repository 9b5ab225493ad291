"""vote: the ballot page and POST /api/vote, forwarded to the worker over HTTP.

Public API (the same in every release):
- GET /            the ballot page (a form; the voter id lives in a cookie)
- POST /           the form's vote; answers the page with what was recorded
- GET /api/options {ballot, options}
- POST /api/vote   {voter_id, vote} -> 200 {voter_id, vote, label, ...};
                   400/422 refused here; 502 the worker refused (its status and error inside);
                   503 no worker reachable. X-Served-By: vote@V[,worker@W].
How vote calls the worker depends on the release (common.RELEASES, worker.py).
"""

from __future__ import annotations

import asyncio
import html
import os
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from votingapp.common import (
    ME,
    RELEASE,
    SERVED_BY,
    VERSION,
    app_key,
    ballot_id,
    base_app,
    error,
    json_response,
    log,
    options_from_env,
    read_json,
)

SESSION = app_key("session", aiohttp.ClientSession)
OPTIONS = options_from_env()
BALLOT = ballot_id(OPTIONS)
WORKER_URL = os.environ.get("WORKER_URL", "http://worker:8080").rstrip("/")
# Connection failures only (a stopping worker task is not a refusal); storing a vote is an
# upsert, so sending it twice is harmless.
ATTEMPTS = 3


def worker_call(voter_id: str, vote: str) -> tuple[str, str, dict[str, Any]]:
    """(method, url, body) of the worker call this release makes for one vote."""
    if RELEASE.worker_api == "v2":
        body = {"voter": {"id": voter_id}, "choice": vote, "ballot": BALLOT}
        return "POST", f"{WORKER_URL}/api/v2/votes", body
    if RELEASE.worker_api == "v1+voters":
        url = f"{WORKER_URL}/api/voters/{voter_id}/vote"
        return "PUT", url, {"vote": vote, "ballot": BALLOT}
    return "POST", f"{WORKER_URL}/api/votes", {"voter_id": voter_id, "vote": vote, "ballot": BALLOT}


async def cast(app: web.Application, voter_id: Any, vote: Any) -> web.Response:
    """Validate a vote, forward it to the worker, answer with the whole served-by chain."""
    if not isinstance(voter_id, str) or not 0 < len(voter_id) <= 64:
        return error(400, "voter_id must be a string of 1 to 64 characters")
    if vote not in OPTIONS:
        return error(422, f"unknown option {vote!r}", options=OPTIONS)
    method, url, body = worker_call(voter_id, vote)
    session: aiohttp.ClientSession = app[SESSION]
    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            async with session.request(method, url, json=body) as resp:
                chain = f"{ME},{resp.headers.get(SERVED_BY, 'worker@?')}"
                raw = await resp.read()
                answer = read_json(raw)
                if resp.status >= 400 or answer is None:
                    why = answer.get("error") if answer else raw[:200].decode(errors="replace")
                    return error(502, f"worker refused the vote: {resp.status} {why}",
                                 chain, worker_status=resp.status)
                return json_response(answer, 200, chain)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:  # connect, reset
            last = exc
            await asyncio.sleep(0.05 * (attempt + 1))
        except (TimeoutError, aiohttp.ClientError) as exc:
            return error(503, f"worker call failed: {type(exc).__name__}: {exc}")
    return error(503, f"no worker reachable: {type(last).__name__}: {last}")


async def post_vote(request: web.Request) -> web.Response:
    """POST /api/vote {voter_id, vote}."""
    body = read_json(await request.read())
    if body is None:
        return error(400, "body must be a JSON object {voter_id, vote}")
    return await cast(request.app, body.get("voter_id"), body.get("vote"))


async def get_options(request: web.Request) -> web.Response:
    """GET /api/options."""
    return json_response({"ballot": BALLOT, "options": OPTIONS})


def page(message: str = "") -> str:
    """The ballot page: one button per option."""
    buttons = "".join(
        f'<button name="vote" value="{k}">{html.escape(v)}</button>' for k, v in OPTIONS.items()
    )
    note = f"<p>{html.escape(message)}</p>" if message else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Vote</title></head><body>"
        f"<h1>{' vs '.join(html.escape(v) for v in OPTIONS.values())}</h1>"
        f"<form method='post'>{buttons}</form>{note}"
        f"<footer>served by {ME}</footer></body></html>"
    )


def _voter(request: web.Request) -> str:
    return request.cookies.get("voter_id") or uuid.uuid4().hex[:16]


async def get_page(request: web.Request) -> web.Response:
    """GET /: the ballot."""
    resp = web.Response(text=page(), content_type="text/html")
    resp.set_cookie("voter_id", _voter(request))
    return resp


async def post_page(request: web.Request) -> web.Response:
    """POST /: a vote from the form."""
    form = await request.post()
    voter_id = _voter(request)
    result = await cast(request.app, voter_id, form.get("vote"))
    answer = read_json(result.body if isinstance(result.body, bytes) else b"") or {}
    if result.status == 200:
        message = f"You voted for {answer.get('label')}."
    else:
        message = f"Your vote was not recorded: {answer.get('error')}"
    resp = web.Response(text=page(message), content_type="text/html", status=result.status,
                        headers={SERVED_BY: result.headers[SERVED_BY]})
    resp.set_cookie("voter_id", voter_id)
    return resp


async def client_session(app: web.Application) -> Any:
    """The shared client: a fresh connection and DNS lookup per call, so calls spread over
    the worker's tasks and a stopping task's address is not reused."""
    connector = aiohttp.TCPConnector(force_close=True, use_dns_cache=False, limit=200)
    timeout = aiohttp.ClientTimeout(total=5, connect=2)
    app[SESSION] = aiohttp.ClientSession(connector=connector, timeout=timeout)
    log(f"release {VERSION}: worker api {RELEASE.worker_api} at {WORKER_URL}, ballot {BALLOT}")
    yield
    await app[SESSION].close()


def make_app() -> web.Application:
    """The vote application."""
    app = base_app()
    app.cleanup_ctx.append(client_session)
    app.router.add_get("/", get_page)
    app.router.add_post("/", post_page)
    app.router.add_get("/api/options", get_options)
    app.router.add_post("/api/vote", post_vote)
    return app
