"""The admin pipe: the far end of dans's channel to an LB whose admin API is not published.

Runs inside the per-upgrade helper container (`upgrade_manager.admin_channel`), which sits on
the stack's edge network and mounts the LB's token secret. dans starts it once per session
with `docker exec` through the engine it already talks to, and then speaks one JSON object per
line over the exec's stdin and stdout:

    -> {"id": 1, "method": "PUT", "path": "/v1/routes", "body": "...", "timeout": 10}
    <- {"id": 1, "status": 200, "body": "..."}          or {"id": 1, "error": "..."}

With `"targets": [addr, ...]` (the addresses of every running LB replica, which dans reads
from the swarm's tasks) the request goes to each of them side by side, and the answer is
`{"id": 1, "replicas": {addr: {"status", "body"} or {"error"}}}`: routing changes reach every
replica, and dans sees which one answered what (`upgrade_manager.lb_replicas`).

The pipe adds `Authorization: Bearer <token>` from the secret file itself, so the token never
leaves the cluster's secret store (not in dans's memory, not on the wire outside the overlay),
and it keeps one keep-alive HTTP connection to the LB, opened again when the LB closed it.
Standard library only: it starts in well under a second.
"""

from __future__ import annotations

import http.client
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

__all__ = ["AdminPipe", "Replicas", "run_pipe"]

_RETRYABLE = (http.client.RemoteDisconnected, http.client.CannotSendRequest,
              http.client.BadStatusLine, ConnectionResetError, BrokenPipeError)


class AdminPipe:
    """Forwards requests to the LB's admin API at host:port with the token from a file."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host = host
        self.port = port
        self.token = token
        self._conn: http.client.HTTPConnection | None = None

    def forward(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request; an answer dict with status and body, or an error."""
        body = req.get("body")
        data = body.encode() if isinstance(body, str) else None
        headers = {"Authorization": f"Bearer {self.token}",
                   "Content-Type": "application/json"}
        timeout = float(req.get("timeout") or 10.0)
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            conn = self._conn
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                conn.request(str(req["method"]), str(req["path"]), body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except _RETRYABLE as exc:
                # The LB closed an idle keep-alive connection: open a fresh one once.
                self.reset()
                if attempt:
                    return {"error": f"the LB at {self.host}:{self.port} closed the "
                                     f"connection ({exc})"}
                continue
            except OSError as exc:
                self.reset()
                return {"error": f"cannot reach the LB at {self.host}:{self.port} ({exc})"}
            if resp.will_close:
                self.reset()
            return {"status": resp.status, "body": payload.decode(errors="replace")}
        raise AssertionError("unreachable")

    def reset(self) -> None:
        """Drop the connection to the LB."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Replicas:
    """One `AdminPipe` per replica address; a request goes to the named ones side by side."""

    MAX_TARGETS = 64

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self._pipes: dict[str, AdminPipe] = {}
        self._pool = ThreadPoolExecutor(max_workers=8)

    def forward(self, req: dict[str, Any], targets: Any) -> dict[str, Any]:
        """Send `req` to every address in `targets`; each one's answer by address."""
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets) \
                or len(targets) > self.MAX_TARGETS:
            return {"error": "targets must be a list of at most 64 addresses"}
        for addr in targets:
            if addr not in self._pipes:
                self._pipes[addr] = AdminPipe(addr, self.port, self.token)
        answers = list(self._pool.map(lambda a: self._pipes[a].forward(req), targets))
        return {"replicas": dict(zip(targets, answers, strict=True))}

    def reset(self) -> None:
        """Drop every connection."""
        for pipe in self._pipes.values():
            pipe.reset()
        self._pool.shutdown(wait=False)


def run_pipe(host: str, port: int, token_file: str, inp: IO[bytes] | None = None,
             out: IO[bytes] | None = None) -> int:
    """Serve requests from `inp` (stdin) until it closes; answers go to `out` (stdout)."""
    inp = inp or sys.stdin.buffer
    out = out or sys.stdout.buffer
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        sys.stderr.write(f"cannot read the admin token {token_file}: {exc.strerror}\n")
        return 1
    pipe = AdminPipe(host, port, token)
    replicas = Replicas(port, token)
    for line in inp:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            targets = req.get("targets")
            result = pipe.forward(req) if targets is None else replicas.forward(req, targets)
            answer = {"id": req.get("id"), **result}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            answer = {"id": None, "error": f"bad request line: {exc}"}
        out.write(json.dumps(answer).encode() + b"\n")
        out.flush()
    pipe.reset()
    replicas.reset()
    return 0
