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
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import Names, free_port, wait_until
from upgrade_manager.gateway import Gateway

ROOT = Path(__file__).resolve().parents[2]

# The application: one program, four roles; its callees' URLs are in the code only.
APP = """
import json, sys, urllib.request
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
ROLE, VERSION = sys.argv[1], sys.argv[2]
CALLS = {"portal": ["http://auth:8000/", "http://proc:8000/"],
         "proc": ["http://auth:8000/", "http://db:7000/"], "auth": [], "db": []}
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code, seen = 200, {ROLE: [VERSION]}
        if self.path != "/health":
            try:
                for url in CALLS[ROLE]:
                    with urllib.request.urlopen(url, timeout=5) as answer:
                        for name, versions in json.loads(answer.read())["seen"].items():
                            seen.setdefault(name, []).extend(versions)
            except Exception as exc:
                code, seen["error"] = 502, [repr(exc)]
        body = json.dumps({"seen": seen}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("0.0.0.0", 7000 if ROLE == "db" else 8000), Handler).serve_forever()
"""

HEALTH = {"test": ["CMD", "python3", "-c", "import sys, urllib.request; urllib.request.urlopen("
                   "'http://127.0.0.1:' + sys.argv[1] + '/health', timeout=1)", "PORT"],
          "interval": "1s", "timeout": "2s", "retries": 3}


def stack_file(where: Path, image: str, port: int, auth_version: str,
               db_declared: bool) -> Path:
    services: dict[str, Any] = {}
    for role in ("portal", "auth", "proc", "db"):
        version = auth_version if role == "auth" else "1"
        health = json.loads(json.dumps(HEALTH))
        health["test"][-1] = "7000" if role == "db" else "8000"
        services[role] = {
            "image": image,
            "entrypoint": ["python3", "-c", APP, role, version],
            "healthcheck": health,
            "deploy": {"endpoint_mode": "dnsrr", "replicas": 2 if role == "auth" else 1},
        }
    services["portal"]["ports"] = [{"target": 8000, "published": port, "mode": "host"}]
    if db_declared:
        services["db"]["x-dans"] = {"calls": []}
    path = where / f"auth-{auth_version}.yml"
    path.write_text(yaml.safe_dump({"version": "3.8", "services": services}))
    return path


def dans(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upgrade_manager.cli", *args], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=600)


class Load:
    """Requests to the portal from 4 threads until stopped (bounded: 60,000 or 300 s)."""

    def __init__(self, url: str) -> None:
        self.url, self.stop = url, threading.Event()
        self.ok = self.failed = self.mixed = 0
        self.auth_versions: set[str] = set()
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + 300
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        for _ in range(15_000):
            if self.stop.is_set() or time.monotonic() > self.deadline:
                return
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    seen = json.loads(answer.read())["seen"]
                error = None
            except urllib.error.HTTPError as exc:
                seen, error = {}, f"HTTP {exc.code}: {exc.read()[:200]!r}"
            except OSError as exc:
                seen, error = {}, type(exc).__name__
            with self.lock:
                if error:
                    self.failed += 1
                    self.errors[error] = self.errors.get(error, 0) + 1
                    continue
                self.ok += 1
                self.auth_versions |= set(seen.get("auth", []))
                if any(len(set(v)) > 1 for v in seen.values()):
                    self.mixed += 1

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        return {"ok": self.ok, "failed": self.failed, "mixed": self.mixed,
                "errors": self.errors, "auth": sorted(self.auth_versions)}


def serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.mark.parametrize("db_declared", [False, True], ids=["no-x-dans-key", "db-calls-none"])
def test_upgrade_without_annotations(gateway: Gateway, names: Names, lb_image: str,
                                     tmp_path: Path, db_declared: bool) -> None:
    stack, port = names("un"), free_port()
    v1 = stack_file(tmp_path, lb_image, port, "1", db_declared)
    v2 = stack_file(tmp_path, lb_image, port, "2", db_declared)
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

    load = Load(url)
    try:
        wait_until(lambda: load.ok >= 20, timeout=30, what="steady load")
        upgraded = dans("upgrade", "-f", str(v2), "--stack", stack)
        wait_until(lambda: "2" in load.auth_versions, timeout=30, what="auth v2 answers")
    finally:
        stats = load.finish()
    print(f"\nunannotated ({'db declared' if db_declared else 'no keys'}): {stats}")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert stats["failed"] == 0, stats["errors"]
    assert stats["mixed"] == 0
    assert stats["auth"] == ["1", "2"]
    left = sorted(s["Spec"]["Name"] for s in gateway.services(stack))
    assert left == sorted(f"{stack}_{s}" for s in ("auth", "dans-lb", "db", "portal", "proc"))
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
    doc["services"]["auth"]["entrypoint"][-1] = "2"
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
