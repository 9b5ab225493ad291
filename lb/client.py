"""A small synchronous client of the LB's admin API, for the upgrade manager and the CLI.

Standard library only (urllib), so the CLI process needs no event loop. Every failure (no
answer, 401, 4xx/5xx with the LB's message) becomes `LBError`. How a request reaches the LB
is a `Transport`: plain HTTP to a URL by default (`HTTPTransport`), or the upgrade manager's
channel through a helper container on the LB's network (`upgrade_manager.admin_channel`),
which adds the token itself, so that dans never holds it.

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
from typing import Any, Protocol

from lb.errors import LBError
from lb.table import RoutingTable

__all__ = ["AdminClient", "HTTPTransport", "Transport"]


class Transport(Protocol):
    """Carries one admin request to the LB and returns (status, body)."""

    where: str  # for messages: where the LB is reached

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                timeout: float) -> tuple[int, bytes]:
        """Send one request; LBError when the LB cannot be reached."""

    def close(self) -> None:
        """Release what the transport holds."""


class HTTPTransport:
    """Plain HTTP to `base_url` (a test LB on loopback, or a URL the operator tunnels)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.where = self.base_url

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                timeout: float) -> tuple[int, bytes]:
        """Send one request with urllib."""
        req = urllib.request.Request(self.base_url + path, data=body, method=method,
                                     headers=headers)
        # A GET or PUT that never got an answer (a reset or broken pipe on a loaded host) is
        # sent once more: both are idempotent, so the LB ends in the same state.
        attempts = 2 if method in ("GET", "PUT") else 1
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    return int(resp.status), bytes(resp.read())
            except urllib.error.HTTPError as exc:
                try:
                    return int(exc.code), bytes(exc.read())
                finally:
                    exc.close()
            except (urllib.error.URLError, OSError) as exc:
                if attempt + 1 < attempts:
                    time.sleep(0.5)
                    continue
                reason = getattr(exc, "reason", exc)
                raise LBError(f"cannot reach the LB at {self.base_url} ({reason})") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Nothing to release: urllib opens a connection per request."""


class AdminClient:
    """Calls the admin API at `base_url` with the bearer `token`, or through `transport`.

    With a transport that authenticates by itself (the helper channel), `token` is None and
    no Authorization header is sent from here.
    """

    def __init__(self, base_url: str, token: str | None, timeout: float = 10.0, *,
                 transport: Transport | None = None) -> None:
        self.transport: Transport = transport or HTTPTransport(base_url)
        self.base_url = self.transport.where
        self.token = token
        self.timeout = timeout

    def close(self) -> None:
        """Release the transport (the helper channel removes its helper)."""
        self.transport.close()

    def _call(self, method: str, path: str, body: Any = None, *,
              timeout: float | None = None, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        what = f"LB admin {method} {path}"
        try:
            status, payload = self.transport.request(method, path, data, headers,
                                                     timeout or self.timeout)
        except LBError as exc:
            raise LBError(f"{what}: {exc}") from None
        if status >= 400:
            detail = payload.decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                pass
            raise LBError(f"{what}: {status} {detail}".strip())
        if raw:
            return payload.decode()
        try:
            return json.loads(payload)
        except ValueError:
            raise LBError(f"{what}: the answer is not JSON") from None

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

    def report_upgrade(self, progress: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Tell the LB the upgrade's progress and group versions (`lb._progress`), for
        /metrics; returns {"upgrade": state, "versions": {group: version}}."""
        result: dict[str, Any] = self._call("PUT", "/v1/upgrade", progress, timeout=timeout)
        return result

    def metrics(self) -> str:
        """The Prometheus text exposition."""
        text: str = self._call("GET", "/metrics", raw=True)
        return text


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")
