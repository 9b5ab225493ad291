"""A stranger's kind of stack for tests and benchmarks: every callee URL is in the code.

One small program plays every service. Its arguments say its name, version, whether it is
strict (it refuses a caller of another version, as an incompatible API change does), its
port and the URLs it calls; nothing of that is in the Compose environment, so dans learns
nothing from it. Every answer lists the versions of all services the transaction reached,
so a client can tell a mixed-version transaction from a consistent one. It stops on SIGTERM
once its requests are answered, as a well-behaved service does.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

__all__ = ["APP", "PROBE", "Load", "Service", "serves", "stack_document"]

APP = """
import json, signal, sys, threading, urllib.request
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
NAME, VERSION, STRICT, PORT = sys.argv[1:5]
CALLS = sys.argv[5:]
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code, seen = 200, {NAME: [VERSION]}
        caller = self.headers.get("X-Caller-Version")
        if self.path == "/health":
            pass
        elif STRICT == "1" and caller is not None and caller != VERSION:
            code, seen["error"] = 409, [NAME + "@" + VERSION + " refuses a v" + caller + " caller"]
        else:
            try:
                for url in CALLS:
                    req = urllib.request.Request(url, headers={"X-Caller-Version": VERSION})
                    with urllib.request.urlopen(req, timeout=5) as answer:
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
server = ThreadingHTTPServer(("0.0.0.0", int(PORT)), Handler)
# As a well-behaved service does: on SIGTERM stop accepting, finish what runs, exit.
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
"""

# A connect to the port: bash's /dev/tcp costs far less than starting Python, which
# matters when dozens of tasks start at once on two cores.
PROBE = "exec 3<>/dev/tcp/127.0.0.1/$$0"


@dataclass(frozen=True)
class Service:
    """One service of the generated stack."""

    calls: tuple[str, ...] = ()  # names of the services it calls (URLs in its code)
    version: str = "1"
    strict: bool = False
    port: int = 8000
    replicas: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # more Compose keys (x-dans, volumes)


def stack_document(services: dict[str, Service], image: str, entry: str,
                   published: int, ports: dict[str, int] | None = None) -> dict[str, Any]:
    """The Compose document: `entry` publishes `published` (host mode, dnsrr everywhere).

    Every service waits for its health probe (1 s interval) and rolls one task at a time,
    start-first, as a careful stack asks.
    """
    port_of = {n: s.port for n, s in services.items()} | (ports or {})
    out: dict[str, Any] = {}
    for name, svc in services.items():
        urls = [f"http://{c}:{port_of[c]}/" for c in svc.calls]
        out[name] = {
            "image": image,
            "entrypoint": ["python3", "-c", APP, name, svc.version, "1" if svc.strict else "0",
                           str(svc.port), *urls],
            "healthcheck": {"test": ["CMD", "bash", "-c", PROBE, str(svc.port)],
                            "interval": "1s", "timeout": "2s", "retries": 3,
                            "start_period": "30s"},
            "deploy": {"endpoint_mode": "dnsrr", "replicas": svc.replicas,
                       "update_config": {"parallelism": 1, "order": "start-first"}},
            **svc.extra,
        }
    out[entry]["ports"] = [{"target": services[entry].port, "published": published,
                            "mode": "host"}]
    return {"version": "3.8", "services": out}


def serves(url: str) -> bool:
    """True when `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


class Load:
    """Requests from `threads` threads until stopped; bounded by count and by `limit` s.

    Records each answer's time and whether it failed, mixed versions, or was wholly at
    version `new` (for the changed services `changed`). With `rate` (requests per second
    over all threads) each thread paces itself, so the offered load is the same whatever
    the stack answers; without it every thread sends its next request at once.
    """

    def __init__(self, url: str, changed: set[str], new: str = "2", threads: int = 4,
                 limit: float = 600.0, max_requests: int = 200_000,
                 rate: float = 0.0) -> None:
        self.url, self.changed, self.new = url, changed, new
        self.period = threads / rate if rate > 0 else 0.0
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.deadline = self.t0 + limit
        self.budget = max_requests // threads
        self.lock = threading.Lock()
        self.records: list[tuple[float, str]] = []  # (time, ok-old | ok-new | mixed | failed)
        self.errors: dict[str, int] = {}
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _classify(self, seen: dict[str, list[str]]) -> str:
        if any(len(set(v)) > 1 for k, v in seen.items() if k != "error"):
            return "mixed"
        versions = {v[0] for k, v in seen.items() if k in self.changed}
        if len(versions) > 1:
            return "mixed"
        return "ok-new" if versions == {self.new} else "ok-old"

    def _run(self) -> None:
        due = time.monotonic()
        for _ in range(self.budget):
            if self.period:
                # Pacing, not synchronisation: the next request is due one period later;
                # a thread that fell behind sends at once rather than in a burst.
                due = max(due + self.period, time.monotonic())
                if self.stop.wait(max(0.0, due - time.monotonic())):
                    return
            if self.stop.is_set() or time.monotonic() > self.deadline:
                return
            kind, error = "failed", None
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    kind = self._classify(json.loads(answer.read())["seen"])
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}: {exc.read()[:120]!r}"
            except OSError as exc:
                error = type(exc).__name__
            with self.lock:
                self.records.append((time.monotonic(), kind))
                if error:
                    self.errors[error] = self.errors.get(error, 0) + 1

    def count(self, kind: str) -> int:
        """How many answers of one kind so far."""
        with self.lock:
            return sum(1 for _, k in self.records if k == kind)

    def summary(self) -> str:
        """Counts of each kind so far and the errors, for a failure message."""
        with self.lock:
            kinds = [k for _, k in self.records]
            errors = dict(self.errors)
        counts = {k: kinds.count(k) for k in ("ok-old", "ok-new", "mixed", "failed")}
        return f"{counts}, errors {errors}"

    def finish(self) -> dict[str, Any]:
        """Stop the threads and sum up."""
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        kinds = [k for _, k in self.records]
        return {"ok": kinds.count("ok-old") + kinds.count("ok-new"),
                "new": kinds.count("ok-new"), "failed": kinds.count("failed"),
                "mixed": kinds.count("mixed"), "errors": dict(self.errors)}

    def all_new_since(self) -> float | None:
        """The time from which every answer was a consistent one at the new version."""
        with self.lock:
            records = list(self.records)
        last_other = max((t for t, k in records if k != "ok-new"), default=None)
        if not any(k == "ok-new" for _, k in records):
            return None
        return last_other if last_other is not None else self.t0
