#!/usr/bin/env python3
"""Benchmark dans lb against nginx, on loopback, against the same backend, in one go.

    .venv/bin/python scripts/bench_lb.py [--duration 5] [--rounds 5] [--workers 2] [--floors]
                                         [--vary-path] [--json]

Runs, one after the other and each with wrk (Debian package) for load:
  direct    wrk -> backend (nginx, 1 worker, `return 200`)
  nginx     wrk -> nginx reverse proxy (1 worker, keep-alive upstream) -> backend
  dans-lb   wrk -> `dans lb` (1 worker, then each --workers count) -> backend
  floor-*   with --floors: wrk -> scripts/bench_floor_proxy.py (raw, then head mode) -> backend,
            the thinnest uvloop + httptools proxy: what Python can do at all here
at a moderate load (few connections: added latency) and a saturating one (throughput), in
interleaved rounds, and prints for each the median round's req/s, p50 and p99, the p50 added
to the direct one, the ratio to nginx (median of the rounds' own ratios, and their range),
CPU per request, and how dans lb scales with worker processes against what the machine's
cores allow, and the issue's targets as ratios paired per round (requests per CPU-second at
saturating load, the p50 added to the direct one at moderate load, p99). Installs
nginx-light and wrk with apt-get when they are missing. Everything listens on 127.0.0.1 and
stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NGINX_BACKEND = """
worker_processes 1;
pid {dir}/backend.pid;
error_log {dir}/backend.err;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {dir}/b1; proxy_temp_path {dir}/b2; fastcgi_temp_path {dir}/b3;
  uwsgi_temp_path {dir}/b4; scgi_temp_path {dir}/b5;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello from the backend\\n"; }} }}
}}
"""

NGINX_PROXY = """
worker_processes 1;
pid {dir}/proxy.pid;
error_log {dir}/proxy.err;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {dir}/p1; proxy_temp_path {dir}/p2; fastcgi_temp_path {dir}/p3;
  uwsgi_temp_path {dir}/p4; scgi_temp_path {dir}/p5;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
"""

LOADS = {"moderate": 4, "saturating": 64}  # concurrent connections
# --vary-path: each request of a wrk connection has a path of its own, so no proxy sees the
# same request twice (what a cache of the last request on a connection cannot help).
VARY_PATH = """
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/?n=" .. n)
end
"""
WRK_ARGS: list[str] = []  # extra wrk arguments for every run (--vary-path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in (("nginx", "nginx-light"), ("wrk", "wrk"))
               if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                       stdout=subprocess.DEVNULL)


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, connections: int, duration: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:.0f}s", "--latency", "--timeout", "5s",
         *WRK_ARGS,
         f"http://127.0.0.1:{port}/"],
        check=True, capture_output=True, text=True, timeout=duration + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    dist = out.split("Latency Distribution", 1)[1]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", dist, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", dist, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_err = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99,
            "non2xx": float(errors.group(1)) if errors else 0.0,
            "socket_errors": sock_err.group(1) if sock_err else ""}  # type: ignore[dict-item]


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) used so far by process `root` and all its descendants."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        stats[int(entry.name)] = (ppid, (utime + stime) / os.sysconf("SC_CLK_TCK"))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += [child for child, (ppid, _) in stats.items() if ppid == pid]
    return total


def children_cpu() -> float:
    """CPU time of this script's finished children (wrk runs, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(port: int, conns: int, duration: float, pid: int, backend: int
            ) -> dict[str, float]:
    """wrk against `port`, plus the CPU spent per request by the target's process tree
    `pid`, by the backend (tree `backend`, unless it is the target) and by wrk itself."""
    before = cpu_seconds(pid), cpu_seconds(backend), children_cpu()
    result = wrk(port, conns, duration)
    after = cpu_seconds(pid), cpu_seconds(backend), children_cpu()
    used, backend_used, wrk_used = (b - a for a, b in zip(before, after, strict=True))
    requests = result["rps"] * duration
    if not requests:
        return result | {"cpu_us_per_req": 0.0, "rps_per_core": 0.0, "machine_bound_rps": 0.0}
    result["cpu_us_per_req"] = round(used / requests * 1e6, 1)
    result["rps_per_core"] = round(requests / used) if used else 0.0
    # Every request costs the target, the backend and wrk some CPU; with all cores busy the
    # machine cannot serve more than cores / (their sum) requests per second.
    total = used + (backend_used if backend != pid else 0.0) + wrk_used
    result["machine_bound_rps"] = round((os.cpu_count() or 1) * requests / total)
    return result


def start_dans(workdir: Path, port: int, backend: int, workers: int) -> subprocess.Popen[bytes]:
    table = {"frontends": [{"name": "bench", "listen": port, "host": "127.0.0.1",
                            "mode": "http", "active": "g",
                            "groups": {"g": {"backends": [f"127.0.0.1:{backend}"]}}}]}
    env = dict(os.environ, DANS_LB_CONFIG=json.dumps(table), DANS_LB_TOKEN="bench")
    dans = Path(sys.executable).with_name("dans")
    cmd = [str(dans) if dans.exists() else "dans", "lb", "--admin-host", "127.0.0.1",
           "--admin-port", str(free_port()), "--workers", str(workers), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / f"dans-{workers}.log", "wb"))
    wait_port(port)
    time.sleep(0.5 * workers)  # let every worker bind its SO_REUSEPORT socket
    return proc


def start_floor(workdir: Path, port: int, backend: int, mode: str) -> subprocess.Popen[bytes]:
    script = Path(__file__).with_name("bench_floor_proxy.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", str(port), "--backend",
                             str(backend), "--mode", mode], stdout=subprocess.DEVNULL,
                            stderr=open(workdir / f"floor-{mode}.log", "wb"))
    wait_port(port)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--workers", type=int, nargs="*", default=[2],
                    help="dans lb worker counts to run besides 1")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds, targets interleaved; medians are reported, and each round's "
                         "ratio to nginx (median and range)")
    ap.add_argument("--floors", action="store_true",
                    help="also measure scripts/bench_floor_proxy.py (raw and head modes)")
    ap.add_argument("--vary-path", action="store_true",
                    help="give every request a path of its own (/?n=1, /?n=2, ...)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    ensure_tools()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    results: dict[str, dict[str, dict[str, float]]] = {}
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="dans-bench-") as tmp:
        work = Path(tmp)
        if args.vary_path:
            (work / "vary.lua").write_text(VARY_PATH)
            WRK_ARGS[:] = ["-s", str(work / "vary.lua")]
        ports = {"direct": free_port(), "nginx": free_port()}
        (work / "backend.conf").write_text(NGINX_BACKEND.format(dir=tmp, port=ports["direct"]))
        (work / "proxy.conf").write_text(NGINX_PROXY.format(dir=tmp, port=ports["nginx"],
                                                            backend=ports["direct"]))
        try:
            for conf in ("backend.conf", "proxy.conf"):
                procs.append(subprocess.Popen([nginx, "-c", str(work / conf), "-p", tmp,
                                               "-g", "daemon off;"]))
            wait_port(ports["direct"])
            wait_port(ports["nginx"])
            owner = {"direct": procs[0].pid, "nginx": procs[1].pid}
            targets: list[tuple[str, int, int]] = [("direct", ports["direct"], 0),
                                                   ("nginx", ports["nginx"], 0)]
            for workers in sorted({1, *args.workers}):
                targets.append((f"dans-lb-w{workers}", free_port(), workers))
            if args.floors:
                targets += [("floor-raw", free_port(), -1), ("floor-head", free_port(), -1)]
            runs: dict[str, dict[str, list[dict[str, float]]]] = {}
            for _ in range(args.rounds):
                for name, port, workers in targets:
                    proc = None
                    if workers < 0:
                        proc = start_floor(work, port, ports["direct"], name.split("-")[1])
                    elif workers:
                        proc = start_dans(work, port, ports["direct"], workers)
                    try:
                        wrk(port, 8, 2.0)  # warm-up: pools filled, code paths hot
                        for load, conns in LOADS.items():
                            pid = proc.pid if proc is not None else owner[name]
                            runs.setdefault(name, {}).setdefault(load, []).append(
                                measure(port, conns, args.duration, pid, owner["direct"]))
                    finally:
                        if proc is not None:
                            proc.send_signal(signal.SIGTERM)
                            proc.wait(timeout=60)
            for name, loads in runs.items():
                results[name] = {load: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
                                 for load, rs in loads.items()}
                for load, rs in loads.items():
                    # Each round's ratio to the nginx run of the same round: runs close in
                    # time share the machine's other load, which a shared host varies a lot.
                    paired = sorted(r["rps"] / n["rps"]
                                    for r, n in zip(rs, runs["nginx"][load], strict=True))
                    results[name][load].update(
                        vs_nginx_rps=round(paired[len(paired) // 2], 3),
                        vs_nginx_min=round(paired[0], 3), vs_nginx_max=round(paired[-1], 3))
                    results[name][load].update(
                        paired_targets(rs, runs["nginx"][load], runs["direct"][load]))
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGQUIT)
                proc.wait(timeout=30)
    report(results, args.json)


def _spread(values: list[float]) -> tuple[float, float, float]:
    values = sorted(values)
    return (round(values[len(values) // 2], 3), round(values[0], 3), round(values[-1], 3))


def paired_targets(rs: list[dict[str, float]], ns: list[dict[str, float]],
            ds: list[dict[str, float]]) -> dict[str, float]:
    """The issue's targets as ratios to nginx, each round against the same round's nginx
    and direct runs (median, lowest, highest): requests per CPU-second, the p50 the proxy
    adds to the direct p50, and p99."""
    rounds = list(zip(rs, ns, ds, strict=True))
    per_cpu = [r["rps_per_core"] / n["rps_per_core"] for r, n, _ in rounds if n["rps_per_core"]]
    added = [(r["p50_ms"] - d["p50_ms"]) / (n["p50_ms"] - d["p50_ms"])
             for r, n, d in rounds if n["p50_ms"] > d["p50_ms"]]
    p99 = [r["p99_ms"] / n["p99_ms"] for r, n, _ in rounds if n["p99_ms"]]
    out: dict[str, float] = {}
    for key, values in (("per_cpu", per_cpu), ("added_p50", added), ("p99", p99)):
        if values:
            mid, low, high = _spread(values)
            out |= {f"paired_{key}": mid, f"paired_{key}_min": low, f"paired_{key}_max": high}
    return out


def report_targets(results: dict[str, dict[str, dict[str, float]]]) -> None:
    """The issue's two targets per dans lb run, paired per round against nginx."""
    print("\ntargets, each round against the same round's nginx (median [lowest-highest]):")
    for name, loads in results.items():
        if not name.startswith(("dans-lb", "floor-")):
            continue
        sat, mod = loads["saturating"], loads["moderate"]
        line = [f"  {name}:"]
        for label, r, key, goal in (("req per CPU-s, saturating", sat, "paired_per_cpu", ">= 0.8"),
                                    ("added p50, moderate", mod, "paired_added_p50", "<= 1.25"),
                                    ("p99, moderate", mod, "paired_p99", ""),
                                    ("p99, saturating", sat, "paired_p99", "")):
            if key in r:
                line.append(f"{label} {r[key]:.2f}x [{r[key + '_min']:.2f}-{r[key + '_max']:.2f}]"
                            + (f" (target {goal})" if goal else ""))
        print(line[0], "; ".join(line[1:]))


def report(results: dict[str, dict[str, dict[str, float]]], as_json: bool) -> None:
    direct, nginx = results["direct"], results["nginx"]
    for loads in results.values():
        for load, r in loads.items():
            r.setdefault("vs_nginx_rps", round(r["rps"] / nginx[load]["rps"], 3))
            r["added_p50_ms"] = round(r["p50_ms"] - direct[load]["p50_ms"], 3)
            per_core = nginx[load]["rps_per_core"]
            r["vs_nginx_per_core"] = round(r["rps_per_core"] / per_core, 3) if per_core else 0.0
    if as_json:
        print(json.dumps(results, indent=2))
        return
    print(f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; loads: " +
          ", ".join(f"{k} = {v} connections" for k, v in LOADS.items()))
    print("cpu us/req: CPU time of the target's processes per request; req/s/core: requests "
          "per CPU-second (capacity of one busy core, independent of other load)")
    print("/nginx: median over rounds of (req/s / the same round's nginx req/s) [lowest-highest]")
    print(f"{'target':<14}{'load':<12}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'+p50 ms':>9}"
          f"{'/nginx':>18}{'cpu us/req':>11}{'req/s/core':>11}{'/nginx':>7}{'non-2xx':>8}")
    for name, loads in results.items():
        for load, r in loads.items():
            spread = f"[{r['vs_nginx_min']:.2f}-{r['vs_nginx_max']:.2f}]" \
                if "vs_nginx_min" in r else ""
            print(f"{name:<14}{load:<12}{r['rps']:>9.0f}{r['p50_ms']:>8.3f}{r['p99_ms']:>8.3f}"
                  f"{r['added_p50_ms']:>9.3f}{r['vs_nginx_rps']:>6.2f} {spread:<11}"
                  f"{r['cpu_us_per_req']:>11.1f}{r['rps_per_core']:>11.0f}"
                  f"{r['vs_nginx_per_core']:>7.2f}{r['non2xx']:>8.0f}")
    report_targets(results)
    scaling(results)


def scaling(results: dict[str, dict[str, dict[str, float]]]) -> None:
    """How dans lb grows with worker processes, against what the machine's cores allow."""
    workers = sorted((int(name.rsplit("-w", 1)[1]), loads) for name, loads in results.items()
                     if name.startswith("dans-lb-w"))
    if len(workers) < 2:
        return
    print("\nscaling (saturating load): 'bound' is cores / CPU per request of LB + backend + "
          "wrk together,\nthe most any proxy could reach here; LB CPU per request flat across "
          "worker counts = no contention between workers")
    base = workers[0][1]["saturating"]
    for count, loads in workers:
        r = loads["saturating"]
        bound = r.get("machine_bound_rps", 0.0)
        print(f"  {count} worker(s): {r['rps']:>8.0f} req/s = {r['rps'] / base['rps']:.2f} x "
              f"1 worker; LB {r['cpu_us_per_req']:.1f} us/req; bound {bound:.0f} req/s, "
              f"reached {r['rps'] / bound if bound else 0:.0%}")


if __name__ == "__main__":
    main()
