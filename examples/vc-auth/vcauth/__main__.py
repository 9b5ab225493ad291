"""`python3 -m vcauth`: serve the role APP_SERVICE at version APP_VERSION on PORT."""

from __future__ import annotations

import os

from aiohttp import web

from vcauth.server import make_app

if __name__ == "__main__":
    # aiohttp stops accepting on SIGTERM and lets running requests finish (shutdown_timeout).
    web.run_app(make_app(os.environ["APP_SERVICE"], os.environ.get("APP_VERSION", "1")),
                port=int(os.environ.get("PORT", "8080")), access_log=None,
                shutdown_timeout=10)
