"""examples/vc-auth on the real swarm: Auth v2 changes its token format under steady load.

A transaction asks Auth for a token through Portal and has Proc verify it at Auth, so it
fails when its two Auth calls reach different versions. `--strategy rolling` (what
`docker stack deploy` of v2 does: Swarm rolls auth's tasks in place) fails a measurable
share; `--strategy dans` (auth's callers portal and proc move with it as companions, db stays
behind a relay) gives 0 failed and 0 mixed. Every hop propagates the traceparent the edge LB
gave: each answered transaction saw exactly one trace id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import Names, free_port, wait_until
from tests.vc_auth.app import EXAMPLE, loadgen
from upgrade_manager.gateway import Gateway

ROOT = Path(__file__).resolve().parents[2]


def dans(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600)


def _ids(gw: Gateway, service: str) -> list[str]:
    return sorted(t["ID"] for t in gw.tasks(service, desired_running=True))


@pytest.mark.parametrize("strategy", ["rolling", "dans"])
def test_auth_token_change_under_load(gateway: Gateway, names: Names, lb_image: str,
                                      vcauth_images: list[str], strategy: str) -> None:
    stack, port = names("vc"), free_port()
    env = {"ENDPOINT_MODE": "dnsrr", "PORT_MODE": "host", "PORTAL_PORT": str(port)}
    v1, v2 = str(EXAMPLE / "stacks" / "v1.yml"), str(EXAMPLE / "stacks" / "v2.yml")
    deployed = dans(env, "deploy", "-f", v1, "--stack", stack, "--lb-image", lb_image,
                    "--lb-admin-port", str(free_port()), "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    url = f"http://127.0.0.1:{port}/tx"
    gen = loadgen()
    probe = gen.Loadgen(url, threads=1, rate=10.0, limit=90.0, max_requests=2000)
    try:
        wait_until(lambda: probe.count("ok") >= 3, timeout=90, what="the portal through the LB")
    finally:
        probe.finish()
    db = _ids(gateway, f"{stack}_db")
    if strategy == "dans":
        planned = dans(env, "plan", "-f", v2, "--stack", stack, "--json")
        assert planned.returncode == 0, planned.stdout + planned.stderr
        roles = {c["short"]: c["role"] for c in json.loads(planned.stdout)["changes"]}
        # Only auth changes; its callers are copied (companions), db is reached by a relay.
        assert (roles["auth"], roles["portal"], roles["proc"], roles["db"]) == (
            "chain", "companion", "companion", "relayed"), roles
    load = gen.Loadgen(url, threads=3, rate=30.0, limit=300.0, max_requests=20_000)
    try:
        wait_until(lambda: load.count("ok") >= 60, timeout=60, what="steady load")
        t0 = time.monotonic()
        upgraded = dans(env, "upgrade", "-f", v2, "--stack", stack, "--strategy", strategy)
        seconds = time.monotonic() - t0
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        wait_until(lambda: load.count("ok", "2") >= 60, timeout=90, what="auth v2 answers",
                   describe=lambda: f"{load.count('ok')} ok, errors {load.errors}")
    finally:
        stats = load.finish()
    print(f"\nvc-auth {strategy}: {stats}, upgrade {seconds:.1f} s")
    assert stats["untraced"] == 0, "a hop did not propagate the trace context"
    if strategy == "rolling":
        assert stats["failed"] > 0 and stats["mixed"] > 0, stats
    else:
        assert stats["failed"] == 0 and stats["mixed"] == 0, stats
    assert _ids(gateway, f"{stack}_db") == db, "db was restarted"
