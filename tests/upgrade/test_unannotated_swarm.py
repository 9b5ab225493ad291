"""A stranger's stack on the real swarm: every URL in the code, no `x-dans` key, no port hint.

portal -> auth, portal -> proc -> auth, proc -> db (DESIGN.md §8; issue 11's four-service
system). Only auth changes. A transaction is mixed when its two calls of auth reach different
versions. dans must find by itself that portal, proc and db may call auth (they share its
network), move them with the chain, and upgrade with no failed and no mixed request; with db
declared as calling nothing, db stays put and the new chain reaches it through a transparent
relay on a port written nowhere in the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import Names, free_port, wait_until
from tests.upgrade.chainapp import Load, Service, serves, stack_document
from upgrade_manager.gateway import Gateway

ROOT = Path(__file__).resolve().parents[2]


def stack_file(where: Path, image: str, port: int, auth_version: str,
               db_declared: bool, audit: bool = False) -> Path:
    """The four services; db listens on 7000, a port written only in proc's code.

    With `audit`, the file adds a fifth service that portal calls and that calls auth: new,
    it has no old version to keep, and it may call the changed auth.
    """
    services = {
        "portal": Service(calls=("auth", "proc", "audit") if audit else ("auth", "proc")),
        "auth": Service(version=auth_version, replicas=2),
        "proc": Service(calls=("auth", "db")),
        "db": Service(port=7000, extra={"x-dans": {"calls": []}} if db_declared else {}),
    }
    if audit:
        services["audit"] = Service(calls=("auth",))
    path = where / f"auth-{auth_version}.yml"
    path.write_text(yaml.safe_dump(stack_document(services, image, "portal", port)))
    return path


def dans(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("db_declared", "audit"), [(False, False), (True, False), (False, True)],
                         ids=["no-x-dans-key", "db-calls-none", "adds-a-caller"])
def test_upgrade_without_annotations(gateway: Gateway, names: Names, lb_image: str,
                                     tmp_path: Path, db_declared: bool, audit: bool) -> None:
    stack, port = names("un"), free_port()
    v1 = stack_file(tmp_path, lb_image, port, "1", db_declared)
    v2 = stack_file(tmp_path, lb_image, port, "2", db_declared, audit)
    deployed = dans("deploy", "-f", str(v1), "--stack", stack, "--lb-image", lb_image,
                    "--lb-admin-port", str(free_port()), "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: serves(url), timeout=60, what="the portal through the LB")
    db_tasks = sorted(t["ID"] for t in gateway.tasks(f"{stack}_db", desired_running=True))

    plan = dans("plan", "-f", str(v2), "--stack", stack)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "Assumed" in plan.stdout and "may call any service" in plan.stdout
    if db_declared:
        assert f"db -> {stack}_db, every TCP port" in plan.stdout  # port 7000 is nowhere
    if audit:
        assert "audit created (added by the file)" in plan.stdout, plan.stdout

    load = Load(url, changed={"auth"})
    try:
        wait_until(lambda: load.count("ok-old") >= 20, timeout=30, what="steady load")
        upgraded = dans("upgrade", "-f", str(v2), "--stack", stack, "--json")
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        events = [json.loads(line) for line in upgraded.stdout.splitlines()]
        started = [e for e in events if e["event"] == "step_started"]
        finished = [e for e in events if e["event"] == "step_finished"]
        assert started and [e["step"] for e in started] == [e["step"] for e in finished]
        assert [e["index"] for e in started] == list(range(1, started[0]["total"] + 1))
        assert events[-1]["event"] == "finished" and events[-1]["stack"] == stack
        # The upgrade has returned: every request from now on is answered by auth v2.
        wait_until(lambda: load.count("ok-new") >= 20, timeout=60, what="auth v2 answers",
                   describe=lambda: f"answers so far: {load.summary()}")
    finally:
        stats = load.finish()
    variant = "db declared" if db_declared else "audit added" if audit else "no keys"
    print(f"\nunannotated ({variant}): {stats}")
    assert stats["failed"] == 0, stats["errors"]
    assert stats["mixed"] == 0
    assert stats["ok"] > stats["new"] > 0
    left = sorted(s["Spec"]["Name"] for s in gateway.services(stack))
    assert left == sorted(f"{stack}_{s}" for s in ("auth", "dans-lb", "db", "portal", "proc",
                                                   *(["audit"] if audit else [])))
    assert not [n for n in gateway.networks(stack) if "dans-gen-" in n["Name"]]
    if db_declared:
        now = sorted(t["ID"] for t in gateway.tasks(f"{stack}_db", desired_running=True))
        assert now == db_tasks, "db was restarted although it is outside the chain"


def test_stateful_caller_is_refused_and_nothing_changes(gateway: Gateway, names: Names,
                                                        lb_image: str, tmp_path: Path) -> None:
    stack, port = names("rf"), free_port()
    v1 = stack_file(tmp_path, lb_image, port, "1", db_declared=False)
    doc = yaml.safe_load(v1.read_text())
    doc["services"]["db"]["volumes"] = ["data:/data"]
    doc["volumes"] = {"data": {}}
    v1.write_text(yaml.safe_dump(doc))
    doc["services"]["auth"]["entrypoint"][4] = "2"  # python3 -c APP auth VERSION
    v2 = tmp_path / "v2.yml"
    v2.write_text(yaml.safe_dump(doc))
    deployed = dans("deploy", "-f", str(v1), "--stack", stack, "--lb-image", lb_image,
                    "--lb-admin-port", str(free_port()))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    before = gateway.inspect_service(f"{stack}_auth")["Version"]["Index"]
    plan = dans("plan", "-f", str(v2), "--stack", stack)
    assert plan.returncode == 3, plan.stdout + plan.stderr
    assert "REFUSED" in plan.stdout and "db may call auth" in plan.stdout
    refused = dans("upgrade", "-f", str(v2), "--stack", stack)
    assert refused.returncode != 0
    assert "db may call auth but cannot be copied" in refused.stderr
    assert "--allow-mixed" in refused.stderr and "Traceback" not in refused.stderr
    assert gateway.inspect_service(f"{stack}_auth")["Version"]["Index"] == before
    assert not [s for s in gateway.services(stack) if "-dans-" in s["Spec"]["Name"]]
