"""A small synchronous client of the LB's admin API, for the upgrade manager and the CLI.

Standard library only (urllib), so the CLI process needs no event loop. Every failure (no
answer, 401, 4xx/5xx with the LB's message) becomes `LBError`.

    client = AdminClient("http://127.0.0.1:9900", token)
    client.set_routes(table)
    client.switch("web", "v2")
    client.drain("web", "v1")            # -> in-flight count
    client.wait_drained("web", "v1", 60)
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from lb.table import RoutingTable
from upgrade_manager.errors import LBError

__all__ = ["AdminClient"]


class AdminClient:
    """Calls the admin API at `base_url` with the bearer `token`."""

    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, *,
              timeout: float | None = None, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"},
        )
        what = f"LB admin {method} {path}"
        try:
            payload = self._send(request, timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                detail = exc.read().decode(errors="replace")
            finally:
                exc.close()
            try:
                detail = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                pass
            raise LBError(f"{what}: {exc.code} {detail}".strip()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LBError(f"{what}: cannot reach the LB at {self.base_url} ({reason})") from None
        if raw:
            return payload.decode()
        try:
            return json.loads(payload)
        except ValueError:
            raise LBError(f"{what}: the answer is not JSON") from None

    @staticmethod
    def _send(request: urllib.request.Request, timeout: float) -> bytes:
        # A GET or PUT that never got an answer (a reset or broken pipe on a loaded host) is
        # sent once more: both are idempotent, so the LB ends in the same state.
        attempts = 2 if request.get_method() in ("GET", "PUT") else 1
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    return bytes(resp.read())
            except urllib.error.HTTPError:
                raise
            except (urllib.error.URLError, OSError):
                if attempt + 1 == attempts:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def healthy(self) -> bool:
        """True when the LB answers its liveness probe."""
        try:
            self._call("GET", "/healthz", timeout=2.0)
        except LBError:
            return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the admin API answers; LBError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise LBError(f"the LB at {self.base_url} did not answer within {timeout:.0f} s")
            time.sleep(0.2)

    def status(self) -> dict[str, Any]:
        """Frontends, groups (state, in-flight, backends and endpoint health), totals."""
        result: dict[str, Any] = self._call("GET", "/v1/status")
        return result

    def routes(self) -> RoutingTable:
        """The routing table in force, with live active groups and group states."""
        return RoutingTable.from_dict(self._call("GET", "/v1/routes"))

    def set_routes(self, table: RoutingTable) -> RoutingTable:
        """Replace the routing table; returns the table in force afterwards."""
        result = self._call("PUT", "/v1/routes", table.to_dict())
        return RoutingTable.from_dict(result["routes"])

    def switch(self, frontend: str, group: str) -> str:
        """Send new requests of `frontend` to `group`; returns the previous active group."""
        result = self._call("POST", f"/v1/frontends/{_q(frontend)}/switch", {"group": group})
        return str(result["previous"])

    def drain(self, frontend: str, group: str) -> int:
        """Stop new requests to `group`; returns how many are still in flight."""
        result = self._call("POST", f"/v1/frontends/{_q(frontend)}/groups/{_q(group)}/drain")
        return int(result["in_flight"])

    def wait_drained(self, frontend: str, group: str, timeout: float = 60.0) -> None:
        """Wait until `group` has nothing in flight; LBError naming the count on timeout."""
        deadline = time.monotonic() + timeout
        path = f"/v1/frontends/{_q(frontend)}/groups/{_q(group)}/drained"
        while True:
            left = max(0.0, deadline - time.monotonic())
            step = min(left, 20.0)
            result = self._call("GET", f"{path}?timeout={step:.3f}", timeout=step + 10.0)
            if result.get("drained"):
                return
            if time.monotonic() >= deadline:
                raise LBError(f"group {group} of frontend {frontend} still has "
                              f"{result.get('in_flight')} request(s) in flight after "
                              f"{timeout:.0f} s")

    def metrics(self) -> str:
        """The Prometheus text exposition."""
        text: str = self._call("GET", "/metrics", raw=True)
        return text


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")
