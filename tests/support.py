"""Helpers for tests against the real swarm: unique names, cleanup, waiting."""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from upgrade_manager.errors import DansError
from upgrade_manager.gateway import Gateway

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_LABEL = "dans.test.prefix"


def published_ports() -> dict[int, str]:
    """Every port a swarm service publishes, with the service's name; {} without an engine.

    Ingress ports are held by the swarm, not by a listening socket, so a bind test alone
    does not see them; stacks left by other runs (the demo, a user) hold ports too.
    """
    try:
        import docker

        api = docker.APIClient(timeout=10)
        try:
            services = api.services()
        finally:
            api.close()
    except Exception:
        return {}
    held: dict[int, str] = {}
    for svc in services:
        for port in (svc.get("Endpoint") or {}).get("Ports") or []:
            if port.get("PublishedPort"):
                held[int(port["PublishedPort"])] = svc["Spec"]["Name"]
    return held


def port_bound(port: int) -> bool:
    """True when something on this host listens on TCP `port` (any address)."""
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


# Ports handed out to tests: below the kernel's ephemeral range (32768-60999, where every
# outgoing connection and every bind to port 0 takes its port) and below Swarm's own
# automatic range (30000-32767), so a port picked here cannot be taken between the pick and
# the bind by a client's connection or by an auto-published service. A cursor with a
# per-process start hands out each port once per run.
TEST_PORTS = range(20000, 30000)
_port_cursor = [os.getpid() * 7919 % len(TEST_PORTS)]


def free_port(*, swarm: bool = True) -> int:
    """A TCP port that no socket on this host (and, with `swarm`, no service) holds now."""
    held = published_ports() if swarm else {}
    for _ in range(len(TEST_PORTS)):
        port = TEST_PORTS[_port_cursor[0] % len(TEST_PORTS)]
        _port_cursor[0] += 1
        if port not in held and not port_bound(port):
            return port
    raise RuntimeError(f"no free TCP port in {TEST_PORTS.start}-{TEST_PORTS.stop - 1}")


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.3,
    what: str = "condition",
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll `check` until it returns a truthy value and return it; fail with context otherwise.

    `describe` is called on timeout to say what the state was (e.g. the tasks' errors).
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (DansError, AssertionError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            detail = describe() if describe else ""
            extra = f"; last error: {last_exc}" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}"
                                 + (f"\n{detail}" if detail else ""))
        time.sleep(interval)


def names_for_test(gw: Gateway, request: Any) -> Names:
    """The Names of one pytest test (a prefix from its name), on the engine `gw` talks to."""
    hint = "".join(c for c in request.node.name.lower() if c.isalnum())[:6] or "t"
    return Names(gw, hint)


class Names:
    """A unique name prefix for one test, and the cleanup of everything carrying it.

    Objects are found for cleanup by name prefix (services, networks, configs, secrets), so a
    test that dies half-way still leaves nothing behind.
    """

    def __init__(self, gw: Gateway, hint: str = "t") -> None:
        self.gw = gw
        self.prefix = f"dt{hint[:6]}{uuid.uuid4().hex[:6]}"

    def __call__(self, name: str = "") -> str:
        """A name inside this test's namespace, e.g. names("web") -> "dtab12cd_web"."""
        return f"{self.prefix}_{name}" if name else self.prefix

    def cleanup(self) -> list[str]:
        """Remove every service, then config, secret, network and volume with this prefix."""
        removed: list[str] = []
        api = self.gw.api
        for svc in api.services():
            if svc["Spec"]["Name"].startswith(self.prefix):
                self.gw.remove_service(svc["ID"], missing_ok=True)
                removed.append(svc["Spec"]["Name"])
        # Tasks' containers must be gone before their networks can be removed.
        deadline = time.monotonic() + 60
        while True:
            busy = [c for c in api.containers(all=True)
                    if any(n.lstrip("/").startswith(self.prefix) for n in c.get("Names", []))]
            if not busy:
                break
            if time.monotonic() > deadline:
                # Job tasks can leave containers behind that Swarm never reaps: ours, so go.
                for c in busy:
                    api.remove_container(c["Id"], force=True)
                break
            time.sleep(0.5)
        for kind, lister, remover in (
            ("config", api.configs, self.gw.remove_config),
            ("secret", api.secrets, self.gw.remove_secret),
        ):
            for obj in lister():
                if obj["Spec"]["Name"].startswith(self.prefix):
                    _retry(functools.partial(remover, obj["ID"], missing_ok=True))
                    removed.append(f"{kind} {obj['Spec']['Name']}")
        for net in api.networks():
            if net["Name"].startswith(self.prefix):
                _retry(functools.partial(self.gw.remove_network, net["Id"], missing_ok=True))
                removed.append(f"network {net['Name']}")
        for volume in self.gw.volume_names(self.prefix):
            _retry(functools.partial(self.gw.remove_volume, volume, missing_ok=True))
            removed.append(f"volume {volume}")
        return removed


def _retry(action: Callable[[], Any], attempts: int = 20, delay: float = 0.5) -> None:
    # Swarm frees networks and configs a moment after the tasks that used them are gone.
    for i in range(attempts):
        try:
            action()
            return
        except DansError:
            if i == attempts - 1:
                raise
            time.sleep(delay)
