"""The LB image as a Swarm service: HTTP to a dnsrr service by name, TCP relay across networks.

Topology (all created here, removed by the `names` fixture):

    net A:  web (python3 -m http.server, dnsrr, 2 tasks)      LB
    net B:  probe (fetches a URL on request)                   LB, alias "webalias"

The LB proxies HTTP on 8080 to tasks.WEB:8000 and relays TCP on 8000 to the same tasks, so
on net B, where web does not exist, "webalias:8000" answers for it: the per-upgrade relay.
"""

from __future__ import annotations

import json
import random
import socket
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from lb.client import AdminClient
from tests.lb.support import get
from tests.support import Names, wait_until
from upgrade_manager.gateway import Gateway
from upgrade_manager.lb_image import ensure_lb_image, source_tag

TOKEN = "swarm-test-token-42"
SECOND = 1_000_000_000
NO_HEALTHCHECK = {"Test": ["NONE"]}

PROBE = """
import http.server, urllib.parse, urllib.request
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["url"][0]
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                code, body = 200, r.read()
        except Exception as e:
            code, body = 502, repr(e).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("", 8000), H).serve_forever()
"""


def host_port() -> int:
    """A port free on this host for a host-mode published port."""
    for _ in range(50):
        port = random.randint(20000, 40000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free host port")


def service(name: str, image: str, networks: list[dict[str, Any]], *,
            command: list[str] | None = None, env: list[str] | None = None,
            replicas: int = 1, ports: dict[int, int] | None = None,
            secrets: list[dict[str, Any]] | None = None, health: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"Image": image, "Env": env or [],
                                 "StopGracePeriod": 5 * SECOND}
    if command:
        container["Command"] = command
    if not health:
        container["Healthcheck"] = NO_HEALTHCHECK
    if secrets:
        container["Secrets"] = secrets
    endpoint: dict[str, Any] = {"Mode": "dnsrr"}
    if ports:
        endpoint["Ports"] = [{"Protocol": "tcp", "TargetPort": target, "PublishedPort": published,
                              "PublishMode": "host"} for target, published in ports.items()]
    return {
        "Name": name,
        "TaskTemplate": {"ContainerSpec": container, "Networks": networks,
                         "RestartPolicy": {"Condition": "any"}},
        "Mode": {"Replicated": {"Replicas": replicas}},
        "EndpointSpec": endpoint,
    }


@pytest.fixture(scope="module")
def lb_image(gateway: Gateway) -> str:
    tag = source_tag()
    ensure_lb_image(tag, gateway=gateway)
    return tag


def test_lb_service_routes_by_name_and_relays_across_networks(
    gateway: Gateway, names: Names, lb_image: str
) -> None:
    net_a, net_b = names("a"), names("b")
    for net in (net_a, net_b):
        gateway.create_network({"Name": net, "Driver": "overlay"})
    web, lb, probe = names("web"), names("lb"), names("probe")
    edge_port, admin_port, probe_port = host_port(), host_port(), host_port()
    table = {"frontends": [
        {"name": "edge", "listen": 8080, "mode": "http", "active": "v1",
         "groups": {"v1": {"backends": [f"tasks.{web}:8000"]}}},
        {"name": "relay", "listen": 8000, "mode": "tcp", "active": "old",
         "groups": {"old": {"backends": [f"tasks.{web}:8000"]}}},
    ]}
    secret = names("token")
    secret_id = gateway.create_secret({"Name": secret, "Data": TOKEN.encode()})

    gateway.create_service(service(
        web, lb_image, [{"Target": net_a}], replicas=2,
        command=["python3", "-m", "http.server", "8000"]))
    gateway.create_service(service(
        lb, lb_image, [{"Target": net_a}, {"Target": net_b, "Aliases": ["webalias"]}],
        env=[f"DANS_LB_CONFIG={json.dumps(table)}", "DANS_LB_GRACE=3"],
        ports={8080: edge_port, 9900: admin_port}, health=True,
        secrets=[{"SecretID": secret_id, "SecretName": secret,
                  "File": {"Name": "dans_lb_token", "UID": "0", "GID": "0", "Mode": 0o400}}]))
    gateway.create_service(service(
        probe, lb_image, [{"Target": net_b}], command=["python3", "-c", PROBE],
        ports={8000: probe_port}))
    for name in (web, lb, probe):
        gateway.wait_converged(name, timeout=180)

    # HTTP: the LB resolves tasks.WEB (dnsrr, two tasks) and proxies to them.
    status, body = wait_until(lambda: _ok(get, f"http://127.0.0.1:{edge_port}/"),
                              timeout=60, what="the LB to answer through its edge frontend")
    assert "Directory listing" in body
    admin = AdminClient(f"http://127.0.0.1:{admin_port}", TOKEN)
    group = admin.status()["frontends"]["edge"]["groups"]["v1"]
    assert len(group["backends"][0]["endpoints"]) == 2, group
    with pytest.raises(Exception, match="401"):
        AdminClient(f"http://127.0.0.1:{admin_port}", "wrong").status()

    # TCP relay: on net B, "webalias:8000" is the LB, which forwards to web on net A.
    def fetch(url: str) -> tuple[int, str]:
        return get(f"http://127.0.0.1:{probe_port}/?url={urllib.parse.quote(url)}", timeout=15)

    status, body = wait_until(lambda: _ok(fetch, "http://webalias:8000/"), timeout=60,
                              what="the probe on net B to reach web through the relay")
    assert "Directory listing" in body
    status, body = fetch(f"http://tasks.{web}:8000/")
    assert status == 502, "web must not be reachable from net B except through the relay"
    relay = admin.status()["frontends"]["relay"]["groups"]["old"]
    assert relay["requests"] >= 1 and relay["errors"] == 0

    # Scaling web shows up within a few DNS refreshes (never the 600 s TTL).
    spec = gateway.inspect_service(web)["Spec"]
    spec["Mode"]["Replicated"]["Replicas"] = 3
    gateway.update_service(web, spec)
    gateway.wait_converged(web, timeout=120)
    wait_until(lambda: len(admin.status()["frontends"]["edge"]["groups"]["v1"]["backends"][0]
                           ["endpoints"]) == 3, timeout=15, what="the LB to see 3 web tasks")
    results = [get(f"http://127.0.0.1:{edge_port}/", timeout=5)[0] for _ in range(30)]
    assert results == [200] * 30


def _ok(fetch: Callable[[str], tuple[int, str]], url: str) -> tuple[int, str] | None:
    # A published port refuses connections until its task runs: not yet, not a failure.
    try:
        answer = fetch(url)
    except OSError:
        return None
    return answer if answer[0] == 200 else None
