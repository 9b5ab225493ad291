"""`dans deploy --mesh` on the real swarm: front -> api, both from the chain test app.

The application does not change: front calls `http://api:8000/`, which now names api's
waypoint; the waypoint forwards to `tasks.STACK_api`. The test proves the calls go through
it (its per-hop metrics count them, and the real service no longer holds the short name),
that the app answers as before, and that `dans upgrade` of the meshed stack (both services
change, api refuses callers of another version) gives 0 failed / 0 mixed with the waypoint
never restarted and still in the path afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.mesh.waypoints import hop_requests, waypoint_metrics
from tests.support import Names, free_port, wait_until
from tests.upgrade.chainapp import Load, Service, serves, stack_document
from upgrade_manager.gateway import Gateway

ROOT = Path(__file__).resolve().parents[2]


def stack_file(where: Path, image: str, port: int, version: str) -> Path:
    services = {
        "front": Service(calls=("api",), version=version,
                         extra={"x-dans": {"calls": ["api"]},
                                # What dans reads to know api speaks HTTP on 8000 (the URL
                                # front really uses is in its code, as in any image).
                                "environment": {"API_URL": "http://api:8000/"}}),
        "api": Service(version=version, strict=True, replicas=2,
                       extra={"x-dans": {"calls": []}}),
    }
    path = where / f"v{version}.yml"
    path.write_text(yaml.safe_dump(stack_document(services, image, "front", port)))
    return path


def dans(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=600)


def _ids(gw: Gateway, service: str) -> list[str]:
    return sorted(t["ID"] for t in gw.tasks(service, desired_running=True))


def test_meshed_stack_calls_through_its_waypoint_and_upgrades_cleanly(
        gateway: Gateway, names: Names, lb_image: str, tmp_path: Path) -> None:
    stack, port = names("mesh"), free_port()
    v1, v2 = (stack_file(tmp_path, lb_image, port, v) for v in ("1", "2"))
    deployed = dans("deploy", "-f", str(v1), "--stack", stack, "--lb-image", lb_image,
                    "--lb-admin-port", str(free_port()), "--mesh", "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    wp = f"{stack}_dans-wp-api"
    services = sorted(s["Spec"]["Name"] for s in gateway.services(stack))
    assert services == sorted([f"{stack}_api", f"{stack}_front", f"{stack}_dans-lb", wp])
    api = gateway.inspect_service(f"{stack}_api")["Spec"]
    assert not any(n.get("Aliases") for n in api["TaskTemplate"]["Networks"])
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: serves(url), timeout=90, what="front through the LB")
    wp_tasks = _ids(gateway, wp)

    load = Load(url, changed={"front", "api"}, threads=3, rate=30.0, limit=300.0)
    try:
        wait_until(lambda: load.count("ok-old") >= 30, timeout=60, what="steady load",
                   describe=load.summary)
        answered = load.count("ok-old")
        before = hop_requests(waypoint_metrics(gateway, wp), "api")
        # Every answer of front called api once, through the waypoint (read later, it has
        # counted more by then).
        assert before >= answered, (before, answered)
        upgraded = dans("upgrade", "-f", str(v2), "--stack", stack)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        wait_until(lambda: load.count("ok-new") >= 30, timeout=60, what="v2 answers",
                   describe=load.summary)
    finally:
        stats = load.finish()
    print(f"\nmeshed upgrade: {stats}")
    assert stats["failed"] == 0, stats["errors"]
    assert stats["mixed"] == 0
    assert stats["ok"] > stats["new"] > 0
    assert _ids(gateway, wp) == wp_tasks, "the waypoint was restarted by the upgrade"
    after = waypoint_metrics(gateway, wp)
    assert hop_requests(after, "api") >= before + 30  # v2's calls go through it too
    assert after.get('dans_mesh_untraced_total{callee="api"}', 0) > 0  # the app sends none
    left = sorted(s["Spec"]["Name"] for s in gateway.services(stack))
    assert left == services


def test_a_port_dans_does_not_know_is_relayed_by_the_waypoint(
        gateway: Gateway, names: Names, lb_image: str, tmp_path: Path) -> None:
    # api listens on 7000, a port written only in front's code: the waypoint speaks HTTP on
    # no port and relays every TCP port. Only the waypoint holds the name `api` now, so an
    # answer of front proves the call crossed it.
    stack, port = names("meshtcp"), free_port()
    services = {"front": Service(calls=("api",), extra={"x-dans": {"calls": ["api"]}}),
                "api": Service(port=7000, extra={"x-dans": {"calls": []}})}
    path = tmp_path / "tcp.yml"
    path.write_text(yaml.safe_dump(stack_document(services, lb_image, "front", port)))
    deployed = dans("deploy", "-f", str(path), "--stack", stack, "--lb-image", lb_image,
                    "--lb-admin-port", str(free_port()), "--mesh", "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    wp = gateway.inspect_service(f"{stack}_dans-wp-api")["Spec"]
    assert "--http" not in wp["TaskTemplate"]["ContainerSpec"]["Args"]
    api = gateway.inspect_service(f"{stack}_api")["Spec"]
    assert not any(n.get("Aliases") for n in api["TaskTemplate"]["Networks"])
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: serves(url), timeout=90, what="front through the LB and the relay")
    load = Load(url, changed={"api"}, threads=2, rate=20.0, limit=60.0, max_requests=100)
    try:
        wait_until(lambda: load.count("ok-old") >= 20, timeout=60, what="20 answers",
                   describe=load.summary)
    finally:
        stats = load.finish()
    assert stats["failed"] == 0, stats["errors"]
    assert hop_requests(waypoint_metrics(gateway, f"{stack}_dans-wp-api"), "api") == 0
