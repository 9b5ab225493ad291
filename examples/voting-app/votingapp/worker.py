"""worker: validates votes and stores them in db, one vote per voter (upsert).

Endpoints by release (see common.RELEASES):
- all:            GET /healthz, GET /api/ballot -> {ballot, options}
- worker_api v1:  POST /api/votes {voter_id, vote, ballot} -> {voter_id, vote, label, ballot}
- worker_api v2:  POST /api/v2/votes {voter: {id}, choice, ballot} -> same answer;
                  POST /api/votes -> 410 Gone (the old call is refused, never half-understood)
- v1+voters:      v1 plus PUT /api/voters/{voter_id}/vote {vote, ballot} -> ... + {previous}
Refusals: 400 malformed, 409 ballot mismatch (caller shows another ballot), 422 unknown option,
503 database unavailable.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from votingapp.common import (
    RELEASE,
    DbUnavailable,
    app_key,
    ballot_id,
    base_app,
    db_context,
    error,
    json_response,
    options_from_env,
    read_json,
    run_db,
)

POOL = app_key("pool")
OPTIONS = options_from_env()
BALLOT = ballot_id(OPTIONS)

UPSERT = """
WITH prev AS (SELECT vote FROM votes WHERE voter_id = $1)
INSERT INTO votes (voter_id, vote, ballot) VALUES ($1, $2, $3)
ON CONFLICT (voter_id) DO UPDATE
    SET vote = EXCLUDED.vote, ballot = EXCLUDED.ballot, updated_at = now()
RETURNING (SELECT vote FROM prev) AS previous
"""


def check_vote(voter_id: Any, vote: Any, ballot: Any) -> web.Response | None:
    """The refusal for an invalid vote, or None when it may be stored."""
    if not isinstance(voter_id, str) or not 0 < len(voter_id) <= 64:
        return error(400, "voter id must be a string of 1 to 64 characters")
    if not isinstance(ballot, str):
        return error(400, "ballot missing: reload the ballot and vote again")
    if ballot != BALLOT:
        return error(409, f"ballot {ballot} is not this worker's ballot {BALLOT}",
                     ballot=BALLOT)
    if vote not in OPTIONS:
        return error(422, f"unknown option {vote!r}", options=OPTIONS)
    return None


async def store(request: web.Request, voter_id: str, vote: str) -> web.Response:
    """Upsert the vote and answer what was stored (and the voter's previous vote)."""
    try:
        rows = await run_db(request.app, POOL, UPSERT, voter_id, vote, BALLOT)
    except DbUnavailable as exc:
        return error(503, str(exc))
    body: dict[str, Any] = {"voter_id": voter_id, "vote": vote, "label": OPTIONS[vote],
                            "ballot": BALLOT}
    if RELEASE.worker_api == "v1+voters":
        body["previous"] = rows[0]["previous"] if rows else None
    return json_response(body)


async def post_votes_v1(request: web.Request) -> web.Response:
    """POST /api/votes {voter_id, vote, ballot}."""
    body = read_json(await request.read())
    if body is None:
        return error(400, "body must be a JSON object {voter_id, vote, ballot}")
    refusal = check_vote(body.get("voter_id"), body.get("vote"), body.get("ballot"))
    if refusal is not None:  # a Response is falsy (an empty mapping): test for None
        return refusal
    return await store(request, body["voter_id"], body["vote"])


async def post_votes_gone(request: web.Request) -> web.Response:
    """POST /api/votes after the change-api release: refused, visibly."""
    return error(410, "POST /api/votes was removed in this release; use POST /api/v2/votes")


async def post_votes_v2(request: web.Request) -> web.Response:
    """POST /api/v2/votes {voter: {id}, choice, ballot}."""
    body = read_json(await request.read())
    voter = body.get("voter") if body else None
    if body is None or not isinstance(voter, dict) or "voter_id" in body:
        return error(400, "body must be a JSON object {voter: {id}, choice, ballot}")
    refusal = check_vote(voter.get("id"), body.get("choice"), body.get("ballot"))
    if refusal is not None:  # a Response is falsy (an empty mapping): test for None
        return refusal
    return await store(request, voter["id"], body["choice"])


async def put_voter_vote(request: web.Request) -> web.Response:
    """PUT /api/voters/{voter_id}/vote {vote, ballot}: upsert, answering the previous vote."""
    body = read_json(await request.read())
    if body is None:
        return error(400, "body must be a JSON object {vote, ballot}")
    voter_id = request.match_info["voter_id"]
    refusal = check_vote(voter_id, body.get("vote"), body.get("ballot"))
    if refusal is not None:  # a Response is falsy (an empty mapping): test for None
        return refusal
    return await store(request, voter_id, body["vote"])


async def get_ballot(request: web.Request) -> web.Response:
    """GET /api/ballot: the options this worker accepts."""
    return json_response({"ballot": BALLOT, "options": OPTIONS})


def make_app() -> web.Application:
    """The worker application for this release."""
    app = base_app()
    app.cleanup_ctx.append(db_context(POOL, schema=True))
    app.router.add_get("/api/ballot", get_ballot)
    if RELEASE.worker_api == "v2":
        app.router.add_post("/api/v2/votes", post_votes_v2)
        app.router.add_post("/api/votes", post_votes_gone)
    else:
        app.router.add_post("/api/votes", post_votes_v1)
    if RELEASE.worker_api == "v1+voters":
        app.router.add_put("/api/voters/{voter_id}/vote", put_voter_vote)
    return app
