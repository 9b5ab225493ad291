"""The container healthcheck: exit 0 when GET http://127.0.0.1:$PORT/healthz answers 200."""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    """Ask this container's own service whether it is healthy."""
    port = os.environ.get("HEALTH_PORT") or os.environ.get("PORT", "8080")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
