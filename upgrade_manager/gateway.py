"""The one module that talks to the Docker SDK.

Everything above this speaks raw Engine API spec dicts (the JSON bodies of `/services/create`,
`/networks/create`, ...) and the project's exceptions; nothing else imports `docker`.
Updates always send the `Version.Index` of a fresh inspect, so two writers cannot silently
overwrite each other: a stale write becomes `Conflict`.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import docker.auth
import docker.errors
import requests.exceptions

from upgrade_manager.errors import (
    Conflict,
    ConvergeTimeout,
    EngineError,
    EngineUnavailable,
    NotFound,
)

__all__ = ["Gateway", "ServiceState", "STACK_LABEL", "task_summary"]

STACK_LABEL = "com.docker.stack.namespace"
Spec = dict[str, Any]
Labels = dict[str, str]

# Task states after which a task will never run again.
_FINAL_STATES = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
_BAD_UPDATE_STATES = {"paused", "rollback_started", "rollback_paused", "rollback_completed"}


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn SDK and transport errors into the project's exceptions, naming `what`."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what}: not found ({_explain(exc)})") from exc
    except docker.errors.APIError as exc:
        text = _explain(exc)
        status = exc.status_code or 0
        if status == 500 and text.endswith("not found"):
            # Engine 20.10 answers 500 "network X not found" for a network Swarm removed a
            # moment before (or a local leftover of one): for the caller, it is not there.
            raise NotFound(f"{what}: not found ({text})") from exc
        if status == 409 or "out of sequence" in text or "already exists" in text:
            raise Conflict(f"{what}: {text}") from exc
        if status == 503 and "swarm" in text.lower():
            raise EngineUnavailable(f"{what}: {text}") from exc
        raise EngineError(f"{what}: {text}") from exc
    except requests.exceptions.JSONDecodeError as exc:
        raise EngineError(f"{what}: the engine's answer is not JSON; is DOCKER_HOST "
                          "(or the socket) really a Docker engine?") from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise EngineUnavailable(f"{what}: cannot reach the Docker engine ({exc})") from exc


def _label_filter(stack: str | None, labels: Labels | None) -> dict[str, list[str]] | None:
    wanted = [f"{STACK_LABEL}={stack}"] if stack else []
    wanted += [f"{k}={v}" for k, v in (labels or {}).items()]
    return {"label": wanted} if wanted else None


def _check_unix_socket() -> None:
    """Fail fast, and without the SDK's leaked socket, when a local engine socket is dead."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        return
    path = host[len("unix://"):]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(path)
        except OSError as exc:
            raise EngineUnavailable(
                f"connecting to the Docker engine: cannot reach the Docker engine at {path} "
                f"({exc.strerror or exc}); is dockerd running? (scripts/harness.sh starts it)"
            ) from exc


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).strip()


@dataclass(frozen=True)
class ServiceState:
    """How far a service is from its desired state, as seen in one look at its tasks."""

    name: str
    desired: int | None  # None for global services: one task per eligible node
    running: int
    pending: int
    update_state: str | None
    update_message: str | None
    problem: str | None  # latest error of a task that failed or was rejected

    @property
    def converged(self) -> bool:
        """True when the update finished and exactly the desired tasks run (healthy)."""
        if self.update_state not in (None, "completed"):
            return False
        if self.pending:
            return False
        if self.desired is None:
            return self.running > 0
        return self.running == self.desired


# Task states in which a task may still run or start (the engine's order, up to running).
LIVE_TASK_STATES = frozenset({"new", "pending", "assigned", "accepted", "ready", "preparing",
                              "starting", "running"})


def task_summary(task: Spec) -> str:
    """One line about a task for error messages: slot, state and its error if any."""
    status = task.get("Status", {})
    slot = task.get("Slot")
    where = f"task {task.get('ID', '?')[:12]}" + (f" (slot {slot})" if slot else "")
    err = status.get("Err") or status.get("Message") or ""
    return f"{where}: {status.get('State', '?')}" + (f": {err}" if err else "")


class Gateway:
    """Raw-spec access to one Docker engine that is a swarm manager."""

    def __init__(self, api: docker.APIClient) -> None:
        self.api = api
        # `docker stack deploy --with-registry-auth`: creates and updates of services carry
        # this client's credentials for the image's registry (X-Registry-Auth), so that
        # every node can pull a private image.
        self.registry_auth = False

    def _auth_headers(self, spec: Spec) -> dict[str, str]:
        image = spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image")
        if not self.registry_auth or not image:
            return {}
        with _translated(f"reading the registry credentials for {image}"):
            registry, _ = docker.auth.resolve_repository_name(image)
            header = docker.auth.get_config_header(self.api, registry)
        if isinstance(header, bytes):
            header = header.decode("ascii")
        return {"X-Registry-Auth": header} if header else {}

    @classmethod
    def from_env(cls, timeout: int = 60) -> Gateway:
        """Connect like the docker CLI does (DOCKER_HOST, TLS variables, or the local socket)."""
        _check_unix_socket()
        with _translated("connecting to the Docker engine"):
            try:
                api = docker.from_env(timeout=timeout).api
            except ValueError as exc:  # the SDK's parse of DOCKER_HOST (port, IPv6 bracket)
                host = os.environ.get("DOCKER_HOST", "")
                raise EngineUnavailable(f"connecting to the Docker engine: DOCKER_HOST={host!r} "
                                        f"is not a valid engine address ({exc})") from None
            try:
                api.ping()
            except BaseException:
                api.close()
                raise
        return cls(api)

    def close(self) -> None:
        """Close the HTTP connections to the engine."""
        self.api.close()

    # -- engine ---------------------------------------------------------------------------

    def info(self) -> Spec:
        """`docker info` as a dict."""
        with _translated("reading engine info"):
            return dict(self.api.info())

    def require_manager(self) -> None:
        """Raise EngineUnavailable unless this engine is an active swarm manager."""
        swarm = self.info().get("Swarm", {})
        if swarm.get("LocalNodeState") != "active":
            raise EngineUnavailable(
                "this Docker engine is not in swarm mode; run 'docker swarm init' "
                "(or scripts/harness.sh) first"
            )
        if not swarm.get("ControlAvailable"):
            raise EngineUnavailable("this node is a swarm worker; run dans on a manager")

    def node_id(self) -> str:
        """The swarm node ID of this engine: where a service constrained to it runs."""
        return str(self.info().get("Swarm", {}).get("NodeID", ""))

    def exec_socket(self, container: str, cmd: list[str]) -> Any:
        """Run `cmd` in a container of this engine with stdin open; the hijacked connection.

        What is sent is the process's stdin as is; what comes back is multiplexed (8-byte
        frame headers: stream 1 stdout, 2 stderr), as the engine sends it without a TTY. It is
        the SDK's object: a socket, or for a unix socket a SocketIO around one (`._sock`);
        close both.
        """
        with _translated(f"exec in container {container[:12]}"):
            exec_id = self.api.exec_create(container, cmd, stdin=True, stdout=True,
                                           stderr=True, tty=False)["Id"]
            raw = self.api.exec_start(exec_id, socket=True)
        return raw

    # -- services -------------------------------------------------------------------------

    def services(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Inspect every service, or those of `stack`, optionally filtered by more labels."""
        with _translated(f"listing services of stack {stack}" if stack else "listing services"):
            return list(self.api.services(filters=_label_filter(stack, labels)))

    def inspect_service(self, name: str) -> Spec:
        """The service as the engine reports it (ID, Version, Spec, PreviousSpec, ...)."""
        with _translated(f"service {name}"):
            return dict(self.api.inspect_service(name, insert_defaults=False))

    def service_exists(self, name: str) -> bool:
        """True when a service of that name (or ID) exists."""
        try:
            self.inspect_service(name)
        except NotFound:
            return False
        return True

    def create_service(self, spec: Spec) -> str:
        """Create a service from a raw ServiceSpec; returns its ID."""
        with _translated(f"creating service {spec.get('Name')}"):
            url = self.api._url("/services/create")
            resp = self.api._post_json(url, data=spec, headers=self._auth_headers(spec))
            result = self.api._result(resp, json=True)
        return str(result["ID"])

    def update_service(
        self,
        name: str,
        spec: Spec,
        *,
        version: int | None = None,
        rollback: bool = False,
    ) -> list[str]:
        """Replace a service's spec; returns the engine's warnings.

        Without `version` the Version.Index comes from a fresh inspect made here; pass the
        index of the inspect the new spec was derived from to detect concurrent writers.
        `rollback=True` asks the engine to go back to the previous spec (spec is then ignored
        by the engine but must still be sent).
        """
        with _translated(f"updating service {name}"):
            if version is None:
                version = int(self.api.inspect_service(name)["Version"]["Index"])
            params: dict[str, Any] = {"version": version}
            if rollback:
                params["rollback"] = "previous"
            url = self.api._url("/services/{0}/update", name)
            resp = self.api._post_json(url, data=spec, params=params,
                                       headers=self._auth_headers(spec))
            result = self.api._result(resp, json=True) or {}
        return list(result.get("Warnings") or [])

    def remove_service(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a service; with `missing_ok` an absent service is not an error."""
        try:
            with _translated(f"removing service {name}"):
                self.api.remove_service(name)
        except NotFound:
            if not missing_ok:
                raise

    def tasks(self, service: str, *, desired_running: bool = False) -> list[Spec]:
        """The service's tasks, newest first; optionally only those meant to be running."""
        filters: dict[str, Any] = {"service": service}
        if desired_running:
            filters["desired-state"] = "running"
        with _translated(f"listing tasks of {service}"):
            found = [t for t in self.api.tasks(filters=filters)]
        # The engine's "service" filter also matches name prefixes; keep exact matches.
        sid = self.inspect_service(service)["ID"]
        found = [t for t in found if t.get("ServiceID") == sid]
        found.sort(key=lambda t: t.get("UpdatedAt", ""), reverse=True)
        return found

    def live_tasks(self, service_id: str) -> int:
        """How many tasks of a service (by ID, so also after its removal) may still run."""
        # Not the engine's "service" filter: it answers 404 once the service is removed.
        with _translated(f"listing tasks of service {service_id}"):
            found = self.api.tasks()
        return sum(1 for t in found if t.get("ServiceID") == service_id
                   and t["Status"]["State"] in LIVE_TASK_STATES)

    def service_state(self, name: str) -> ServiceState:
        """Look once at a service and its tasks."""
        svc = self.inspect_service(name)
        mode = svc["Spec"].get("Mode", {})
        desired: int | None
        if "Replicated" in mode:
            desired = int(mode["Replicated"].get("Replicas", 1))
        elif "Global" in mode:
            desired = None
        else:  # jobs: converged when the job's tasks completed; treat as no running target
            desired = 0
        tasks = self.tasks(name)
        live = [t for t in tasks if t.get("DesiredState") == "running"]
        running = sum(1 for t in live if t["Status"]["State"] == "running")
        pending = len(live) - running
        problem = None
        for t in tasks:
            if t["Status"]["State"] in ("failed", "rejected") or t["Status"].get("Err"):
                problem = task_summary(t)
                break
        update = svc.get("UpdateStatus") or {}
        return ServiceState(
            name=name,
            desired=desired,
            running=running,
            pending=pending,
            update_state=update.get("State"),
            update_message=update.get("Message"),
            problem=problem,
        )

    def wait_converged(
        self,
        name: str,
        *,
        timeout: float = 180.0,
        interval: float = 0.5,
        progress: Callable[[ServiceState], None] | None = None,
    ) -> ServiceState:
        """Wait until all of a service's tasks run (healthy) and its update completed.

        Swarm reports a task with a healthcheck as running only once it is healthy, so
        "running" here means healthy. Raises ConvergeTimeout naming the failing task and its
        error when the deadline passes, or at once when the engine paused or rolled back
        the update.
        """
        deadline = time.monotonic() + timeout
        state = self.service_state(name)
        while not state.converged:
            if state.update_state in _BAD_UPDATE_STATES:
                raise ConvergeTimeout(
                    f"service {name}: update {state.update_state}: "
                    f"{state.update_message or ''} {state.problem or ''}".strip()
                )
            if time.monotonic() > deadline:
                want = "one per node" if state.desired is None else str(state.desired)
                raise ConvergeTimeout(
                    f"service {name} did not converge within {timeout:.0f} s: "
                    f"{state.running}/{want} tasks running"
                    + (f"; {state.problem}" if state.problem else "")
                )
            if progress:
                progress(state)
            time.sleep(interval)
            state = self.service_state(name)
        return state

    # -- networks -------------------------------------------------------------------------

    def networks(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Inspect networks, those of `stack` (by the stack label) or with given labels."""
        with _translated("listing networks"):
            found = self.api.networks(filters=_label_filter(stack, labels))
            return [dict(self.api.inspect_network(n["Id"])) for n in found]

    def network_names(self) -> dict[str, str]:
        """Every network's ID mapped to its name (running specs name networks by ID)."""
        with _translated("listing networks"):
            return {n["Id"]: n["Name"] for n in self.api.networks()}

    def inspect_network(self, name: str) -> Spec:
        """The network as the engine reports it."""
        with _translated(f"network {name}"):
            return dict(self.api.inspect_network(name))

    def create_network(self, spec: Spec) -> str:
        """Create a network from a raw `/networks/create` body; returns its ID."""
        body = dict(spec)
        body.setdefault("CheckDuplicate", True)
        with _translated(f"creating network {spec.get('Name')}"):
            url = self.api._url("/networks/create")
            result = self.api._result(self.api._post_json(url, data=body), json=True)
        return str(result["Id"])

    def remove_network(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a network; it must have no attached services or containers left."""
        try:
            with _translated(f"removing network {name}"):
                self.api.remove_network(name)
        except NotFound:
            if not missing_ok:
                raise

    # -- configs and secrets ----------------------------------------------------------------

    def configs(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Inspect configs of `stack` or with given labels (data included)."""
        return self._objects("config", stack, labels)

    def secrets(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Inspect secrets of `stack` or with given labels (the engine never returns data)."""
        return self._objects("secret", stack, labels)

    def _objects(self, kind: str, stack: str | None, labels: Labels | None) -> list[Spec]:
        with _translated(f"listing {kind}s"):
            lister = self.api.configs if kind == "config" else self.api.secrets
            return list(lister(filters=_label_filter(stack, labels)))

    def inspect_config(self, name: str) -> Spec:
        """The config as the engine reports it (Spec.Data is base64)."""
        with _translated(f"config {name}"):
            return dict(self.api.inspect_config(name))

    def inspect_secret(self, name: str) -> Spec:
        """The secret as the engine reports it (without its data)."""
        with _translated(f"secret {name}"):
            return dict(self.api.inspect_secret(name))

    def create_config(self, spec: Spec) -> str:
        """Create a config from a raw spec; `Data` may be bytes (encoded here) or base64 text."""
        return self._create_object("config", spec)

    def create_secret(self, spec: Spec) -> str:
        """Create a secret from a raw spec; `Data` may be bytes (encoded here) or base64 text."""
        return self._create_object("secret", spec)

    def _create_object(self, kind: str, spec: Spec) -> str:
        body = dict(spec)
        if isinstance(body.get("Data"), bytes):
            body["Data"] = base64.b64encode(body["Data"]).decode("ascii")
        with _translated(f"creating {kind} {spec.get('Name')}"):
            url = self.api._url(f"/{kind}s/create")
            result = self.api._result(self.api._post_json(url, data=body), json=True)
        return str(result["ID"])

    def update_config_labels(self, name: str, spec: Spec, *, version: int | None = None) -> None:
        """Configs are immutable but for labels: replace a config's labels.

        With `version`, the write succeeds only if the config is still at that version
        (Conflict otherwise): a compare-and-swap that the durable upgrade state relies on.
        """
        self._update_object("config", name, spec, version)

    def update_secret_labels(self, name: str, spec: Spec) -> None:
        """Secrets are immutable but for labels: replace a secret's labels."""
        self._update_object("secret", name, spec, None)

    def _update_object(self, kind: str, name: str, spec: Spec, version: int | None) -> None:
        with _translated(f"updating {kind} {name}"):
            current = self.api._result(self.api._get(self.api._url(f"/{kind}s/{{0}}", name)), True)
            url = self.api._url(f"/{kind}s/{{0}}/update", current["ID"])
            params = {"version": current["Version"]["Index"] if version is None else version}
            self.api._raise_for_status(self.api._post_json(url, data=spec, params=params))

    def remove_config(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a config; fails with Conflict while a service uses it."""
        self._remove_object("config", name, missing_ok)

    def remove_secret(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a secret; fails with Conflict while a service uses it."""
        self._remove_object("secret", name, missing_ok)

    def _remove_object(self, kind: str, name: str, missing_ok: bool) -> None:
        try:
            with _translated(f"removing {kind} {name}"):
                remover = self.api.remove_config if kind == "config" else self.api.remove_secret
                remover(name)
        except NotFound:
            if not missing_ok:
                raise
        except EngineError as exc:
            if "in use" in str(exc):
                raise Conflict(str(exc)) from exc
            raise

    # -- volumes --------------------------------------------------------------------------

    def volume_names(self, prefix: str = "") -> list[str]:
        """Names of this node's volumes that start with `prefix`."""
        with _translated("listing volumes"):
            found = self.api.volumes().get("Volumes") or []
        return sorted(v["Name"] for v in found if v["Name"].startswith(prefix))

    def remove_volume(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a volume; Conflict while a container still uses it."""
        try:
            with _translated(f"removing volume {name}"):
                self.api.remove_volume(name)
        except NotFound:
            if not missing_ok:
                raise

    # -- images ---------------------------------------------------------------------------

    def image_exists(self, ref: str) -> bool:
        """True when the image is present on this engine."""
        try:
            with _translated(f"image {ref}"):
                self.api.inspect_image(ref)
        except NotFound:
            return False
        return True

    def build_image(
        self,
        path: str,
        tag: str,
        *,
        dockerfile: str | None = None,
        buildargs: dict[str, str] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> str:
        """Build an image from a context directory and tag it; returns the image ID.

        Never pulls (`pull=False`): the base image must already be on the engine, as on the
        offline harness. Build errors raise EngineError with the builder's last lines.
        """
        tail: list[str] = []
        image_id = ""
        with _translated(f"building image {tag}"):
            stream = self.api.build(
                path=path, tag=tag, dockerfile=dockerfile, buildargs=buildargs,
                rm=True, forcerm=True, pull=False, decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    detail = "".join(tail[-10:])
                    raise EngineError(f"building image {tag}: {chunk['error'].strip()}\n{detail}")
                line = chunk.get("stream", "")
                if line:
                    tail.append(line)
                    if log:
                        log(line.rstrip("\n"))
                aux = chunk.get("aux") or {}
                if "ID" in aux:
                    image_id = str(aux["ID"])
        return image_id or str(self.api.inspect_image(tag)["Id"])
