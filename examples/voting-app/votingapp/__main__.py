"""Run the service named by APP_SERVICE (vote, worker, result, edge)."""

from __future__ import annotations

import sys

from votingapp.common import SERVICE, log, serve


def main() -> int:
    """Start this image's service and serve until SIGTERM."""
    if SERVICE == "edge":
        from votingapp import edge

        edge.main()
        return 0
    if SERVICE == "vote":
        from votingapp.vote import make_app
    elif SERVICE == "worker":
        from votingapp.worker import make_app
    elif SERVICE == "result":
        from votingapp.result import make_app
    else:
        log(f"unknown APP_SERVICE {SERVICE!r}")
        return 2
    serve(make_app())
    return 0


if __name__ == "__main__":
    sys.exit(main())
