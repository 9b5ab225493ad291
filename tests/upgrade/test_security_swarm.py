"""Control-plane security on the real swarm (issue 15).

- After `dans deploy` and during and after an upgrade that changes one secret and adds
  another, no `docker config inspect`, `docker service inspect` or `docker inspect` (of a
  container) of anything in the stack holds a secret's content (raw or base64) or the LB's
  admin token; the token lives only in its Docker secret, mounted into the LB.
- The admin API answers on no published port and on no host port, while dans drives the
  LB through its helper channel; each admin call's latency through that channel is printed.
"""

from __future__ import annotations

import base64
import json
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import wait_until
from tests.upgrade.voting import DansStack, Load
from tests.voting_app.stacks import STACKS
from upgrade_manager.admin_channel import HELPER_STACK_LABEL
from upgrade_manager.gateway import Gateway
from upgrade_manager.managed import lb_service_name
from upgrade_manager.upgrade import lb_admin

pytestmark = pytest.mark.swarm

OLD_KEY = b"old-api-key-7f3a9c1e5b2d4a68"
NEW_KEY = b"new-api-key-0d9e8f7a6b5c4d3e"
DB_PASS = b"added-db-pass-94c1e7b3a5d2f6"


def secret_stack(where: Path, key: bytes, *, add: bool) -> Path:
    """The voting app v1 with secrets on vote: api_key (content `key`), and db_pass if `add`."""
    doc: dict[str, Any] = yaml.safe_load((STACKS / "v1.yml").read_text())
    (where / "api_key").write_bytes(key)
    doc["secrets"] = {"api_key": {"file": "./api_key"}}
    uses: list[Any] = ["api_key"]
    if add:
        (where / "db_pass").write_bytes(DB_PASS)
        doc["secrets"]["db_pass"] = {"file": "./db_pass"}
        uses.append("db_pass")
    doc["services"]["vote"]["secrets"] = uses
    path = where / "stack.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def lb_container(gw: Gateway, stack: str) -> str:
    for task in gw.tasks(lb_service_name(stack), desired_running=True):
        cid = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
        if task["Status"]["State"] == "running" and cid:
            return str(cid)
    raise AssertionError("the LB has no running task")


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    return done.stdout


def inspections(gw: Gateway, stack: str) -> dict[str, str]:
    """`docker ... inspect` of every config, service and container of the stack, by kind.

    By name prefix, so that the upgrade state, temporary services, relays, the admin helper
    (which carries no stack label) and the token secret's users are all in. One docker
    command per kind, so that watching during an upgrade costs the machine little.
    """
    configs = [c["Spec"]["Name"] for c in gw.api.configs()
               if c["Spec"]["Name"].startswith(stack)]
    services = [s["Spec"]["Name"] for s in gw.api.services()
                if s["Spec"]["Name"].startswith(stack)]
    containers = [c["Id"] for c in gw.api.containers(all=True)
                  if any(n.lstrip("/").startswith(stack) for n in c.get("Names", []))]
    out = {}
    for kind, cmd, objects in (("configs", ["config", "inspect"], configs),
                               ("services", ["service", "inspect"], services),
                               ("containers", ["inspect"], containers)):
        if objects:
            out[f"{kind} {' '.join(o[:40] for o in objects)}"] = docker(*cmd, *objects)
    return out


def leaks(texts: dict[str, str], secrets: dict[str, bytes]) -> list[str]:
    """Which inspection shows which secret, raw or base64 (also as JSON-escaped text)."""
    found = []
    for what, text in texts.items():
        for label, value in secrets.items():
            forms = {value.decode(), base64.b64encode(value).decode()}
            if any(form in text for form in forms):
                found.append(f"{label} in {what}")
    return found


def admin_answers(port: int, token: str) -> bool:
    """True when 127.0.0.1:`port` answers like the LB's admin API (with or without a token)."""
    for auth in ({}, {"Authorization": f"Bearer {token}"}):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/routes", headers=auth)
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            if exc.code == 401 and b"admin token" in body:
                return True
            continue
        except OSError:
            return False
        if b'"frontends"' in body:
            return True
    return False


def test_no_secret_or_token_outside_secrets_and_no_published_admin_api(
        dans_stack: Callable[..., DansStack], tmp_path: Path) -> None:
    stack = dans_stack("s")
    gw = stack.gateway
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    stack.deploy(str(secret_stack(v1, OLD_KEY, add=False)))
    token = docker("exec", lb_container(gw, stack.name), "cat",
                   "/run/secrets/dans_lb_token").strip()
    assert len(token) >= 32
    watched = {"token": token.encode(), "old api_key": OLD_KEY, "new api_key": NEW_KEY,
               "db_pass": DB_PASS}
    assert leaks(inspections(gw, stack.name), watched) == []

    # The admin API is on no published port of the stack, and not on the host's admin port.
    published = {int(p["PublishedPort"]) for svc in gw.services(stack.name)
                 for p in (svc.get("Endpoint") or {}).get("Ports") or []}
    assert published == {stack.vote_port, stack.result_port}
    for port in sorted(published | {stack.admin_port}):
        assert not admin_answers(port, token), f"the admin API answers on port {port}"

    # Latency of one admin call through the channel dans uses (helper + exec pipe).
    t0 = time.monotonic()
    client = lb_admin(gw, stack.name)
    try:
        client.wait_ready(timeout=60)
        first = time.monotonic() - t0
        samples = []
        for _ in range(50):
            t = time.perf_counter()
            client.routes()
            samples.append((time.perf_counter() - t) * 1000)
        table = client.routes()
        t = time.perf_counter()
        client.set_routes(table)
        put_ms = (time.perf_counter() - t) * 1000
    finally:
        client.close()
    print(f"\nadmin channel: helper up and first answer after {first:.2f} s; GET /v1/routes "
          f"median {statistics.median(samples):.1f} ms, p90 "
          f"{sorted(samples)[int(len(samples) * 0.9)]:.1f} ms; PUT /v1/routes {put_ms:.1f} ms")
    wait_until(lambda: not gw.services(labels={HELPER_STACK_LABEL: stack.name}), timeout=30,
               what="the admin helper to be removed")

    # An upgrade that changes api_key and adds db_pass, under load; inspect while it runs.
    seen: dict[str, str] = {}
    with Load(f"http://127.0.0.1:{stack.vote_port}") as load:
        time.sleep(2)
        started = time.monotonic()
        proc = stack.spawn("upgrade", "-f", str(secret_stack(v2, NEW_KEY, add=True)),
                           "--stack", stack.name)
        while proc.poll() is None:
            seen.update({f"{k} (during)": v for k, v in inspections(gw, stack.name).items()})
            time.sleep(2.0)
        output = proc.communicate(timeout=60)[0] or ""
        seconds = time.monotonic() - started
        time.sleep(2)
        report = load.finish()
    print(output)
    assert proc.returncode == 0, output
    print(f"upgrade with a changed and an added secret: {seconds:.1f} s; load {report}")
    assert any("(during)" in k and "dans-upgrade" in k for k in seen), \
        "the upgrade state was never inspected while the upgrade ran"
    assert any("dans-admin-" in k for k in seen), "the admin helper was never seen"
    assert report["failed"] == 0 and report["mixed"] == 0, report
    seen.update(inspections(gw, stack.name))
    assert leaks(seen, watched) == []
    assert stack.differences(str(secret_stack(v2, NEW_KEY, add=True))) == {}
    assert not gw.services(labels={HELPER_STACK_LABEL: stack.name})
    # The new content reached the new tasks, through the secret only.
    names = {s["Spec"]["Name"] for s in gw.secrets(stack.name)}
    assert any(n.startswith(f"{stack.name}_api_key-") for n in names)
    assert any(n.startswith(f"{stack.name}_db_pass-") for n in names)
    for port in sorted(published | {stack.admin_port}):
        assert not admin_answers(port, token)


def test_admin_api_refuses_wrong_and_non_ascii_tokens_inside_the_network(
        dans_stack: Callable[..., DansStack], tmp_path: Path) -> None:
    """From a container on the edge network (not dans): 401 for a wrong or non-ASCII token,
    429 after repeated failures; never a 500."""
    stack = dans_stack("a")
    gw = stack.gateway
    stack.deploy("v1")
    lb = lb_container(gw, stack.name)
    # Call the LB's own admin port from inside its container: the same code path as a peer
    # on the edge network, without attaching anything to it.
    probe = (
        "import http.client, json, sys\n"
        "out = []\n"
        "for value in [b'Bearer wrong', b'Bearer \\xc3\\xa9t\\xc3\\xa9', b'Bearer \\xff\\xfe',"
        " b'Basic x'] + [b'Bearer again'] * 12:\n"
        "    c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=5)\n"
        "    c.putrequest('GET', '/v1/routes')\n"
        "    c.putheader('Authorization', value)\n"
        "    c.endheaders()\n"
        "    out.append(c.getresponse().status)\n"
        "print(json.dumps(out))\n"
    )
    statuses = json.loads(docker("exec", lb, "python3", "-c", probe, str(stack.admin_port)))
    assert statuses[:4] == [401, 401, 401, 401]
    assert 429 in statuses and 500 not in statuses
    logs = subprocess.run(["docker", "logs", lb], capture_output=True, text=True).stderr
    assert "missing or wrong token" in logs
