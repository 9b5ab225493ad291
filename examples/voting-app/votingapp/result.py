"""result: the tallies, read from db.

- GET /             a page with the tallies (refreshes every 2 s)
- GET /api/results  {ballot, options: [{key, label, votes}], total, other}
  `other` counts stored votes for options this release does not show.
- 503 while the database is unavailable.
"""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from votingapp.common import (
    ME,
    DbUnavailable,
    app_key,
    ballot_id,
    base_app,
    db_context,
    error,
    json_response,
    options_from_env,
    run_db,
)

POOL = app_key("pool")
OPTIONS = options_from_env()
BALLOT = ballot_id(OPTIONS)
TALLY = "SELECT vote, count(*) AS n FROM votes GROUP BY vote"


async def tallies(app: web.Application) -> dict[str, Any]:
    """Count the stored votes per option of this release's ballot."""
    counts = {row["vote"]: int(row["n"]) for row in await run_db(app, POOL, TALLY)}
    shown = sum(counts.get(k, 0) for k in OPTIONS)
    options = [{"key": k, "label": v, "votes": counts.get(k, 0)} for k, v in OPTIONS.items()]
    return {"ballot": BALLOT, "options": options, "total": shown,
            "other": sum(counts.values()) - shown}


async def get_results(request: web.Request) -> web.Response:
    """GET /api/results."""
    try:
        return json_response(await tallies(request.app))
    except DbUnavailable as exc:
        return error(503, str(exc))


async def get_page(request: web.Request) -> web.Response:
    """GET /: the tallies as a page."""
    try:
        data = await tallies(request.app)
    except DbUnavailable as exc:
        return error(503, str(exc))
    rows = "".join(
        f"<tr><td>{html.escape(o['label'])}</td><td>{o['votes']}</td></tr>"
        for o in data["options"]
    )
    text = (
        "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' "
        "content='2'><title>Results</title></head><body><h1>Results</h1>"
        f"<table>{rows}</table><p>{data['total']} votes</p>"
        f"<footer>served by {ME}</footer></body></html>"
    )
    return web.Response(text=text, content_type="text/html")


def make_app() -> web.Application:
    """The result application."""
    app = base_app()
    app.cleanup_ctx.append(db_context(POOL, schema=False))
    app.router.add_get("/", get_page)
    app.router.add_get("/api/results", get_results)
    return app
