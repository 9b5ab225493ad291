"""dans's channel to a stack's LB admin API, which no port publishes.

Why not a published port: Swarm's published ports bypass the host firewall (ufw, INPUT
rules) and, in ingress mode, open on every node, so a published admin port is on whatever
network the nodes face, in plaintext. TLS with a pinned key would still expose a login
surface there. Instead the admin API listens only inside the LB's container, on the stack's
edge overlay network, and dans reaches it through the Docker engine it already has to trust
(whoever can call that engine owns the cluster anyway):

- one *helper* per dans session (an upgrade, a rollback, a plan): a one-replica Swarm service
  `STACK_dans-admin-XXXXXX` running the LB image idle (`sleep`), on the edge network,
  constrained to the node of the engine dans talks to (so its container is local to that
  engine), mounting the LB's token secret;
- one `docker exec` into it for the whole session, running `dans lb admin-pipe`
  (`lb._admin_pipe`): requests go as JSON lines over the exec's stdin through the engine API
  (the local socket, or TLS to DOCKER_HOST), the pipe adds the token from the secret and calls
  `tasks.STACK_dans-lb` over the overlay, which reaches the LB on whatever node it runs;
- the helper is removed when the session closes, on success, failure or Ctrl-C; a helper left
  by a killed dans (its owner's process is gone, or it is older than HELPER_TTL) is removed by
  the next session of that stack. It carries no stack label, so plans never see it.

Cost: the helper's start (a service create and a container start, ~1-2 s, once per session,
overlapped with reading the stack) and one exec (~0.2 s); after that each admin call is a
round trip through the engine's exec stream, a few milliseconds (measured in
tests/upgrade/test_security_swarm.py).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import socket
import struct
import time
from typing import Any

from upgrade_manager._lb import LBFault
from upgrade_manager.errors import DansError, PlanError
from upgrade_manager.gateway import Gateway, task_summary
from upgrade_manager.managed import (
    ADMIN_PORT_LABEL,
    ROLE_LABEL,
    edge_network_name,
    lb_service_name,
    token_secret_ref,
)
from upgrade_manager.model import Spec

__all__ = ["HELPER_ROLE", "HELPER_STACK_LABEL", "HELPER_TTL", "SERVING_STATES", "AdminChannel",
           "helper_spec", "serving"]

HELPER_ROLE = "admin-helper"
HELPER_STACK_LABEL = "io.dans.admin.stack"
OWNER_LABEL = "io.dans.admin.owner"
CREATED_LABEL = "io.dans.admin.created"
HELPER_TTL = 6 * 3600  # seconds: the helper's idle process ends by itself after this
START_TIMEOUT = 90.0


def helper_spec(stack: str, lb_spec: Spec, node_id: str, name: str, owner: str) -> Spec:
    """The helper service: the LB image idle on the edge network, on this engine's node."""
    ref = token_secret_ref(lb_spec)
    if ref is None:
        raise PlanError(
            f"the LB of stack {stack} has no token secret (it was deployed by an older dans, "
            f"with the token in its environment); run `dans deploy` once with the stack's "
            f"current file to move the token into a Docker secret"
        )
    container = lb_spec["TaskTemplate"]["ContainerSpec"]
    second = 1_000_000_000
    return {
        "Name": name,
        "Labels": {ROLE_LABEL: HELPER_ROLE, HELPER_STACK_LABEL: stack, OWNER_LABEL: owner,
                   CREATED_LABEL: str(int(time.time()))},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": container["Image"],
                "Command": ["sleep", str(HELPER_TTL)],
                "Secrets": [dict(ref)],
                # The image's health check probes an admin API that the helper does not run.
                "Healthcheck": {"Test": ["NONE"]},
                "StopGracePeriod": 1 * second,
                "Labels": {ROLE_LABEL: HELPER_ROLE},
            },
            "Networks": [{"Target": edge_network_name(stack)}],
            "Placement": {"Constraints": [f"node.id=={node_id}"]},
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {"Mode": "dnsrr"},
    }


def _this_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_gone(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class _ExecPipe:
    """The exec's hijacked connection: lines out on stdin, frames of stdout/stderr back."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw  # what the engine client returned (a unix socket comes in a SocketIO)
        self.sock = getattr(raw, "_sock", raw)
        self.buf = b""
        self.stderr = b""

    def send(self, data: bytes, timeout: float) -> None:
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def read_line(self, deadline: float) -> bytes:
        while b"\n" not in self.buf:
            header = self._exactly(8, deadline)
            stream, size = header[0], struct.unpack(">I", header[4:8])[0]
            payload = self._exactly(size, deadline)
            if stream == 2:
                self.stderr = (self.stderr + payload)[-2000:]
            else:
                self.buf += payload
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def _exactly(self, n: int, deadline: float) -> bytes:
        data = b""
        while len(data) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError("the admin pipe ended")
            data += chunk
        return data

    def close(self) -> None:
        for part in (self.raw, self.sock):
            try:
                part.close()
            except OSError:
                pass


class AdminChannel:
    """A `lb.client.Transport` to one stack's LB through a helper container (see above).

    As the transport contract says, a failure raises lb's own error (`LBFault`), which the
    admin client wraps and `upgrade_manager._lb.lb_errors` maps into dans's tree.
    """

    def __init__(self, gw: Gateway, stack: str) -> None:
        self.gw = gw
        self.stack = stack
        self.lb = lb_service_name(stack)
        self.name = f"{stack}_dans-admin-{secrets.token_hex(3)}"
        self.where = f"tasks.{self.lb} (through the helper {self.name})"
        self._created = False
        self._pipe: _ExecPipe | None = None
        self._ids = itertools.count(1)
        self._port = 9900

    def start(self) -> None:
        """Create the helper (once); returns at once, the first request waits for it."""
        if self._created:
            return
        lb_spec = self.gw.inspect_service(self.lb)["Spec"]
        self._port = int((lb_spec.get("Labels") or {}).get(ADMIN_PORT_LABEL, 9900))
        self._remove_stale()
        spec = helper_spec(self.stack, lb_spec, self.gw.node_id(), self.name, _this_owner())
        self.gw.create_service(spec)
        self._created = True

    def _remove_stale(self) -> None:
        """Remove helpers of this stack that a killed dans left behind."""
        now = time.time()
        for svc in self.gw.services(labels={HELPER_STACK_LABEL: self.stack}):
            labels = svc["Spec"].get("Labels") or {}
            created = float(labels.get(CREATED_LABEL, "0") or 0)
            if _owner_gone(labels.get(OWNER_LABEL, "")) or now - created > HELPER_TTL:
                self.gw.remove_service(svc["Spec"]["Name"], missing_ok=True)

    def _container(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        last = "no task yet"
        while time.monotonic() < deadline:
            for task in self.gw.tasks(self.name):
                status = task.get("Status") or {}
                cid = (status.get("ContainerStatus") or {}).get("ContainerID")
                if status.get("State") == "running" and cid:
                    return str(cid)
                last = task_summary(task)
                if status.get("State") in ("failed", "rejected", "complete", "shutdown"):
                    raise LBFault(f"the admin helper {self.name} did not start: {last}")
            time.sleep(0.1)
        raise LBFault(f"the admin helper {self.name} did not start within "
                      f"{START_TIMEOUT:.0f} s ({last})")

    def _open(self) -> _ExecPipe:
        if self._pipe is None:
            self.start()
            cmd = ["python3", "-m", "lb.cli", "admin-pipe", "--target", f"tasks.{self.lb}",
                   "--port", str(self._port)]
            self._pipe = _ExecPipe(self.gw.exec_socket(self._container(), cmd))
        return self._pipe

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                timeout: float) -> tuple[int, bytes]:
        """Send one request through the pipe to any replica (`tasks.STACK_dans-lb`)."""
        answer = self._exchange(_line(method, path, body, timeout), timeout)
        return int(answer["status"]), str(answer.get("body") or "").encode()

    def request_each(self, method: str, path: str, body: bytes | None, targets: list[str],
                     timeout: float) -> dict[str, tuple[int, bytes] | str]:
        """Send one request to each replica address in `targets` (`lb_replicas`)."""
        line = {**_line(method, path, body, timeout), "targets": list(targets)}
        replicas = self._exchange(line, timeout).get("replicas") or {}
        found: dict[str, tuple[int, bytes] | str] = {}
        for addr in targets:
            got = replicas.get(addr)
            if not isinstance(got, dict):
                found[addr] = "no answer from the admin pipe"
            elif "error" in got:
                found[addr] = str(got["error"])
            else:
                found[addr] = (int(got["status"]), str(got.get("body") or "").encode())
        return found

    def addresses(self) -> list[str]:
        """The edge-network addresses of every LB task that serves or is about to (`serving`):
        a starting task may already take requests (a host-mode port is open as soon as its
        container is), so a route step waits for it to report the new table too."""
        edge = edge_network_name(self.stack)
        down = self.gw.down_nodes()
        found: set[str] = set()
        for task in self.gw.tasks(self.lb, desired_running=True):
            if not serving(task, down):
                continue
            for att in task.get("NetworksAttachments") or []:
                if ((att.get("Network") or {}).get("Spec") or {}).get("Name") == edge:
                    found |= {str(a).split("/")[0] for a in att.get("Addresses") or []}
        return sorted(found)

    def _exchange(self, line: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One line out, its answer back (the pipe opened again once if it ended)."""
        for attempt in range(2):
            try:
                pipe = self._open()
            except DansError as exc:
                raise LBFault(str(exc)) from None
            rid = next(self._ids)
            try:
                pipe.send(json.dumps({**line, "id": rid}).encode() + b"\n", timeout)
                deadline = time.monotonic() + timeout + 5.0
                while True:
                    answer: dict[str, Any] = json.loads(pipe.read_line(deadline))
                    if answer.get("id") in (rid, None):
                        break
            except (EOFError, OSError, ValueError) as exc:
                self._drop()
                if attempt or isinstance(exc, TimeoutError):
                    detail = pipe.stderr.decode(errors="replace").strip()[-300:]
                    raise LBFault(f"the admin channel ({self.name}) failed: {exc}"
                                  + (f"; {detail}" if detail else "")) from None
                continue
            if "error" in answer:
                raise LBFault(str(answer["error"]))
            return answer
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    def close(self) -> None:
        """End the pipe and remove the helper (best effort: a leftover is removed later)."""
        self._drop()
        if self._created:
            self._created = False
            try:
                self.gw.remove_service(self.name, missing_ok=True)
            except DansError:
                pass


# A task in one of these states, on a node that is up, may serve requests now or soon: from
# `assigned` on it has its node and its addresses; before, it may wait for a node forever (a
# placement no node meets while one is down), and it cannot serve.
SERVING_STATES = frozenset({"assigned", "accepted", "preparing", "ready", "starting", "running"})


def serving(task: Spec, down: set[str]) -> bool:
    """True for an LB task that serves or is about to: desired running, placed on a node that
    is not down, in one of `SERVING_STATES`."""
    return (task.get("DesiredState") == "running" and bool(task.get("NodeID"))
            and task["NodeID"] not in down
            and (task.get("Status") or {}).get("State") in SERVING_STATES)


def _line(method: str, path: str, body: bytes | None, timeout: float) -> dict[str, Any]:
    return {"method": method, "path": path, "timeout": timeout,
            "body": None if body is None else body.decode()}
