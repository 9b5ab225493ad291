"""Several worker processes behind one admin API (`dans lb --workers N`).

Python runs one core per process, so the LB scales by processes: each worker is a full
`dans lb` serving every frontend on SO_REUSEPORT sockets (the kernel spreads new connections
over them) with its admin API on a private Unix socket. This parent serves the public admin
API and sends each command to every worker; answers are merged (in-flight counts and metric
samples add up). A worker that dies is restarted with the table in force; on SIGTERM the
parent passes the signal on and waits for the workers to finish their in-flight requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import urllib.parse
from typing import TYPE_CHECKING, Any

import aiohttp

from lb._admin import make_admin_app
from lb._admin_sync import TableState
from lb._balancer import check_free
from lb._progress import Progress, UpgradeStatus
from lb.errors import LBError
from lb.table import RoutingTable

if TYPE_CHECKING:  # lb._server imports this module lazily; no cycle at run time
    from lb._server import Settings

__all__ = ["WorkerPool", "serve_workers"]

log = logging.getLogger("dans.lb")


class _Worker:
    def __init__(self, index: int, socket_path: str) -> None:
        self.index = index
        self.socket_path = socket_path
        self.proc: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None


class WorkerPool:
    """Starts, supervises and commands the worker processes (the admin API's Controller)."""

    def __init__(self, settings: Settings, rundir: str) -> None:
        self.settings = settings
        self.token = settings.token or os.urandom(16).hex()
        self._table = settings.table
        self.workers = [_Worker(i, os.path.join(rundir, f"worker{i}.sock"))
                        for i in range(settings.workers)]
        self.stopping = False
        self.progress = Progress()
        self.versions: dict[str, str] = {}  # told to every worker, again after a restart

    async def start(self) -> None:
        """Start every worker and wait until each answers."""
        _check_ports(self._table, RoutingTable())
        await asyncio.gather(*(self._spawn(w) for w in self.workers))

    async def _spawn(self, worker: _Worker) -> None:
        if os.path.exists(worker.socket_path):
            os.unlink(worker.socket_path)
        env = dict(os.environ, DANS_LB_CONFIG=self._table.to_json(), DANS_LB_TOKEN=self.token)
        env.pop("DANS_LB_TOKEN_FILE", None)
        worker.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lb.cli", "--workers", "1", "--admin-unix", worker.socket_path,
            "--grace", str(self.settings.grace),
            "--admin-timeout", str(self.settings.admin_timeout), env=env,
        )
        if worker.session is None:
            worker.session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=worker.socket_path),
                headers={"Authorization": f"Bearer {self.token}"},
            )
        for _ in range(300):
            if worker.proc.returncode is not None:
                raise LBError(f"LB worker {worker.index} exited at start "
                              f"(code {worker.proc.returncode})")
            try:
                await self._call(worker, "GET", "/healthz")
                if self.versions:
                    await self._call(worker, "PUT", "/v1/upgrade", {"versions": self.versions})
                log.info("worker %d ready (pid %d)", worker.index, worker.proc.pid)
                return
            except LBError:
                await asyncio.sleep(0.1)
        raise LBError(f"LB worker {worker.index} did not start within 30 s")

    async def supervise(self) -> None:
        """Restart workers that exit while the pool is not stopping."""
        while not self.stopping:
            for worker in self.workers:
                if worker.proc is not None and worker.proc.returncode is not None \
                        and not self.stopping:
                    log.warning("worker %d exited (code %s); restarting", worker.index,
                                worker.proc.returncode)
                    try:
                        await self._spawn(worker)
                    except LBError as exc:
                        log.error("%s", exc)
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        """SIGTERM every worker, wait for them (they drain first), close the sessions."""
        self.stopping = True
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            if worker.proc is not None:
                try:
                    await asyncio.wait_for(worker.proc.wait(), self.settings.grace + 10)
                except TimeoutError:
                    worker.proc.kill()
                    await worker.proc.wait()
            if worker.session is not None:
                await worker.session.close()

    async def _call(self, worker: _Worker, method: str, path: str, body: Any = None,
                    timeout: float = 30.0) -> Any:
        assert worker.session is not None
        try:
            async with worker.session.request(
                method, f"http://worker{path}", json=body,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    message = json.loads(text).get("error", text) if text.startswith("{") \
                        else text
                    raise LBError(message, resp.status)
                return json.loads(text) if resp.content_type == "application/json" else text
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise LBError(f"LB worker {worker.index} does not answer: {exc!r}") from None

    async def _all(self, method: str, path: str, body: Any = None,
                   timeout: float = 30.0) -> list[Any]:
        return list(await asyncio.gather(*(self._call(w, method, path, body, timeout)
                                           for w in self.workers)))

    async def apply(self, table: RoutingTable) -> None:
        """Send the table to every worker."""
        _check_ports(table, self._table)
        await self._all("PUT", "/v1/routes", table.to_dict())
        self._table = table

    async def table(self) -> RoutingTable:
        """The table in force (as the first worker reports it)."""
        return RoutingTable.from_dict(await self._call(self.workers[0], "GET", "/v1/routes"))

    async def _remember(self) -> None:
        self._table = await self.table()

    async def switch(self, frontend: str, group: str) -> dict[str, Any]:
        """Switch in every worker."""
        frontend, group = _q(frontend), _q(group)
        results = await self._all("POST", f"/v1/frontends/{frontend}/switch", {"group": group})
        await self._remember()
        return dict(results[0])

    async def drain(self, frontend: str, group: str) -> dict[str, Any]:
        """Drain in every worker; in-flight counts add up."""
        frontend, group = _q(frontend), _q(group)
        results = await self._all("POST", f"/v1/frontends/{frontend}/groups/{group}/drain")
        await self._remember()
        return {**results[0], "in_flight": sum(r["in_flight"] for r in results)}

    async def wait_drained(self, frontend: str, group: str, timeout: float) -> dict[str, Any]:
        """Wait in every worker at once."""
        name, gname = frontend, group
        frontend, group = _q(frontend), _q(group)
        results = await self._all(
            "GET", f"/v1/frontends/{frontend}/groups/{group}/drained?timeout={timeout}",
            timeout=timeout + 30)
        return {"frontend": name, "group": gname,
                "drained": all(r["drained"] for r in results),
                "in_flight": sum(r["in_flight"] for r in results)}

    async def status(self) -> dict[str, Any]:
        """The first worker's status with in-flight and request counts added up."""
        results = await self._all("GET", "/v1/status")
        merged = results[0]
        merged["workers"] = len(results)
        merged["in_flight"] = sum(r["in_flight"] for r in results)
        for other in results[1:]:
            for name, fe in other["frontends"].items():
                target = merged["frontends"].get(name)
                if target is None:
                    continue
                target["in_flight"] += fe["in_flight"]
                for gname, group in fe["groups"].items():
                    tgroup = target["groups"].get(gname)
                    if tgroup is not None:
                        for key in ("in_flight", "requests", "errors"):
                            tgroup[key] += group[key]
        return dict(merged)

    async def upgrade(self, status: UpgradeStatus, versions: dict[str, str]) -> dict[str, Any]:
        """Give every worker the versions; keep the progress here (exported once)."""
        results = await self._all("PUT", "/v1/upgrade", {"versions": versions})
        self.versions = dict(results[0]["versions"])
        return {"upgrade": self.progress.update(status), "versions": self.versions}

    async def metrics(self) -> str:
        """Every worker's samples, added up per series, then the upgrade's progress."""
        texts = await self._all("GET", "/metrics")
        families: dict[str, list[str]] = {}  # family -> HELP/TYPE lines, then series
        values: dict[str, float] = {}
        for text in texts:
            family = ""
            for line in text.splitlines():
                if line.startswith("# "):
                    family = line.split()[2]
                    lines = families.setdefault(family, [])
                    if line not in lines:
                        lines.append(line)
                elif line.strip():
                    series, _, value = line.rpartition(" ")
                    if series not in values:
                        families.setdefault(family, []).append(series)
                        values[series] = 0.0
                    values[series] += float(value)
        out = [f"{line} {_num(values[line])}" if line in values else line
               for lines in families.values() for line in lines]
        return "\n".join(out) + "\n" + self.progress.render()


def _check_ports(table: RoutingTable, current: RoutingTable) -> None:
    """Refuse ports of `table` that `current` does not hold and another program does: the
    workers bind with SO_REUSEPORT, which would share them silently."""
    held = {(fe.host, fe.listen) for fe in current.frontends}
    for fe in table.frontends:
        if (fe.host, fe.listen) not in held:
            check_free(fe.host, fe.listen)


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _num(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:.6f}"


async def serve_workers(settings: Settings, state: TableState | None = None) -> None:
    """Run N workers and the public admin API until SIGTERM/SIGINT."""
    from lb._admin_server import start_admin

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with tempfile.TemporaryDirectory(prefix="dans-lb-") as rundir:
        pool = WorkerPool(settings, rundir)
        try:
            await pool.start()
            runner = await start_admin(make_admin_app(pool, settings.token, state), settings)
        except BaseException:
            await pool.stop()
            raise
        supervisor = loop.create_task(pool.supervise())
        log.info("%d workers; admin API on %s:%d", len(pool.workers), settings.admin_host,
                 settings.admin_port)
        try:
            await stop.wait()
        finally:
            pool.stopping = True
            supervisor.cancel()
            await pool.stop()
            await runner.cleanup()
