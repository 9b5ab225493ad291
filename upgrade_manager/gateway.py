"""The one module that talks to the Docker SDK.

Everything above this speaks raw Engine API spec dicts (the JSON bodies of `/services/create`,
`/networks/create`, ...) and the project's exceptions; nothing else imports `docker` (but
`_sdk_errors`, which turns the SDK's failures into those exceptions).
Updates always send the `Version.Index` of a fresh inspect, so two writers cannot silently
overwrite each other: a stale write becomes `Conflict`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import docker
import docker.auth
import docker.errors

from upgrade_manager._sdk_errors import (
    STACK_LABEL,
    check_unix_socket,
    label_filter,
    removing,
    translated,
)
from upgrade_manager.convergence import (
    LIVE_TASK_STATES,
    ServiceState,
    live_count,
    state_of,
    task_summary,
)
from upgrade_manager.errors import (
    Conflict,
    ConvergeTimeout,
    EngineError,
    EngineUnavailable,
    NotFound,
)
from upgrade_manager.model import Spec, text_data

__all__ = ["LIVE_TASK_STATES", "STACK_LABEL", "Gateway", "ServiceState", "task_summary"]

Labels = dict[str, str]


class Gateway:
    """Raw-spec access to one Docker engine that is a swarm manager."""

    def __init__(self, api: docker.APIClient) -> None:
        self.api = api
        # `--with-registry-auth`: creates and updates of services carry this client's
        # credentials for the image's registry (X-Registry-Auth): any node can pull it.
        self.registry_auth = False

    def _auth_headers(self, spec: Spec) -> dict[str, str]:
        image = spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image")
        if not self.registry_auth or not image:
            return {}
        with translated(f"reading the registry credentials for {image}"):
            registry, _ = docker.auth.resolve_repository_name(image)
            header = docker.auth.get_config_header(self.api, registry)
        if isinstance(header, bytes):
            header = header.decode("ascii")
        return {"X-Registry-Auth": header} if header else {}

    @classmethod
    def from_env(cls, timeout: int = 60) -> Gateway:
        """Connect like the docker CLI does (DOCKER_HOST, TLS variables, or the local socket)."""
        check_unix_socket()
        with translated("connecting to the Docker engine"):
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
        with translated("reading engine info"):
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

    def schedulable_nodes(self) -> int:
        """How many nodes can take a new task: ready, and with availability `active`."""
        with translated("listing nodes"):
            return sum((n.get("Status") or {}).get("State") == "ready"
                       and (n.get("Spec") or {}).get("Availability") == "active"
                       for n in self.api.nodes())

    def node_id(self) -> str:
        """The swarm node ID of this engine: where a service constrained to it runs."""
        return str(self.info().get("Swarm", {}).get("NodeID", ""))

    def down_nodes(self) -> set[str]:
        """IDs of the nodes the managers see as down: their tasks report nothing any more."""
        with translated("listing nodes"):
            return {str(n["ID"]) for n in self.api.nodes()
                    if (n.get("Status") or {}).get("State") == "down"}

    def exec_socket(self, container: str, cmd: list[str]) -> Any:
        """Run `cmd` in a container of this engine with stdin open; the hijacked connection.

        What is sent is the process's stdin as is; what comes back is multiplexed (8-byte
        frame headers: stream 1 stdout, 2 stderr), as the engine sends it without a TTY. It is
        the SDK's object: a socket, or for a unix socket a SocketIO around one (`._sock`);
        close both.
        """
        with translated(f"exec in container {container[:12]}"):
            exec_id = self.api.exec_create(container, cmd, stdin=True, stdout=True,
                                           stderr=True, tty=False)["Id"]
            raw = self.api.exec_start(exec_id, socket=True)
        return raw

    # -- services -------------------------------------------------------------------------

    def services(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Inspect every service, or those of `stack`, optionally filtered by more labels."""
        with translated(f"listing services of stack {stack}" if stack else "listing services"):
            return list(self.api.services(filters=label_filter(stack, labels)))

    def inspect_service(self, name: str) -> Spec:
        """The service as the engine reports it (ID, Version, Spec, PreviousSpec, ...)."""
        with translated(f"service {name}"):
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
        with translated(f"creating service {spec.get('Name')}"):
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
    ) -> list[str]:
        """Replace a service's spec; returns the engine's warnings.

        Without `version` the Version.Index comes from a fresh inspect made here; pass the
        index of the inspect the new spec was derived from to detect concurrent writers.
        """
        with translated(f"updating service {name}"):
            if version is None:
                version = int(self.api.inspect_service(name)["Version"]["Index"])
            params: dict[str, Any] = {"version": version}
            url = self.api._url("/services/{0}/update", name)
            resp = self.api._post_json(url, data=spec, params=params,
                                       headers=self._auth_headers(spec))
            result = self.api._result(resp, json=True) or {}
        return list(result.get("Warnings") or [])

    def remove_service(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a service; with `missing_ok` an absent service is not an error."""
        with removing(f"removing service {name}", missing_ok):
            self.api.remove_service(name)

    def tasks(self, service: str, *, desired_running: bool = False) -> list[Spec]:
        """The service's tasks, newest first; optionally only those meant to be running."""
        filters: dict[str, Any] = {"service": service}
        if desired_running:
            filters["desired-state"] = "running"
        with translated(f"listing tasks of {service}"):
            found = [t for t in self.api.tasks(filters=filters)]
        # The engine's "service" filter also matches name prefixes; keep exact matches.
        sid = self.inspect_service(service)["ID"]
        found = [t for t in found if t.get("ServiceID") == sid]
        found.sort(key=lambda t: t.get("UpdatedAt", ""), reverse=True)
        return found

    def inspect_services(self, names: Iterable[str]) -> dict[str, Spec]:
        """Inspect several services by name in one engine call; NotFound names any missing."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        with translated(f"listing services {', '.join(wanted[:3])}"
                         + (", ..." if len(wanted) > 3 else "")):
            found = self.api.services(filters={"name": wanted})
        # The engine's name filter also matches prefixes; keep exact names.
        by_name = {s["Spec"]["Name"]: dict(s) for s in found if s["Spec"]["Name"] in wanted}
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise NotFound(f"service {', '.join(missing)}: not found")
        return by_name

    def tasks_of(self, service_ids: Iterable[str]) -> list[Spec]:
        """The tasks of several existing services (by ID) in one engine call."""
        ids = list(dict.fromkeys(service_ids))
        if not ids:
            return []
        with translated("listing tasks"):
            return [t for t in self.api.tasks(filters={"service": ids})
                    if t.get("ServiceID") in ids]

    def live_tasks(self, service_id: str) -> int:
        """How many tasks of a service (by ID, so also after its removal) may still run."""
        return self.live_tasks_of([service_id])[service_id]

    def live_tasks_of(self, service_ids: Iterable[str], *,
                      skip_nodes: Iterable[str] = ()) -> dict[str, int]:
        """For each service ID (removed services too), how many of its tasks may still run,
        leaving out tasks on `skip_nodes` (e.g. nodes that are down)."""
        # Not the engine's "service" filter: it answers 404 once a service is removed.
        ids, skip = list(service_ids), set(skip_nodes)
        with translated("listing tasks"):
            found = [t for t in self.api.tasks() if t.get("NodeID") not in skip] if ids else []
        return {i: live_count(i, found) for i in ids}

    def service_state(self, name: str) -> ServiceState:
        """Look once at a service and its tasks."""
        svc = self.inspect_service(name)
        return state_of(svc, self.tasks_of([svc["ID"]]))

    def service_states(self, names: Iterable[str]) -> dict[str, ServiceState]:
        """Look once at several services and their tasks: two engine calls for all of them."""
        services = self.inspect_services(names)
        tasks = self.tasks_of(s["ID"] for s in services.values())
        return {n: state_of(s, tasks) for n, s in services.items()}

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
        return self.wait_all_converged([name], timeout=timeout, interval=interval,
                                       progress=progress)[name]

    def wait_all_converged(
        self,
        names: Iterable[str],
        *,
        timeout: float = 180.0,
        interval: float = 0.5,
        progress: Callable[[ServiceState], None] | None = None,
    ) -> dict[str, ServiceState]:
        """`wait_converged` for several services at once, looking at all of them per round.

        The cost of a round does not grow with the number of services (two engine calls),
        so services that start side by side are also waited for side by side.
        """
        wanted = list(dict.fromkeys(names))
        deadline = time.monotonic() + timeout
        while True:
            states = self.service_states(wanted) if wanted else {}
            waiting = [s for s in states.values() if not s.converged]
            if not waiting:
                return states
            stuck = [s for s in waiting if s.stuck]
            if stuck:
                raise ConvergeTimeout("; ".join(f"service {s.name}: {s.describe()}"
                                                for s in stuck))
            if time.monotonic() > deadline:
                raise ConvergeTimeout("; ".join(
                    f"service {s.name} did not converge within {timeout:.0f} s: {s.describe()}"
                    for s in waiting))
            if progress:
                for s in waiting:
                    progress(s)
            time.sleep(interval)

    # -- networks -------------------------------------------------------------------------

    def networks(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Inspect networks, those of `stack` (by the stack label) or with given labels."""
        with translated("listing networks"):
            found = self.api.networks(filters=label_filter(stack, labels))
            return [dict(self.api.inspect_network(n["Id"])) for n in found]

    def network_names(self) -> dict[str, str]:
        """Every network's ID mapped to its name (running specs name networks by ID)."""
        with translated("listing networks"):
            return {n["Id"]: n["Name"] for n in self.api.networks()}

    def inspect_network(self, name: str) -> Spec:
        """The network as the engine reports it."""
        with translated(f"network {name}"):
            return dict(self.api.inspect_network(name))

    def create_network(self, spec: Spec) -> str:
        """Create a network from a raw `/networks/create` body; returns its ID."""
        body = dict(spec)
        body.setdefault("CheckDuplicate", True)
        with translated(f"creating network {spec.get('Name')}"):
            url = self.api._url("/networks/create")
            result = self.api._result(self.api._post_json(url, data=body), json=True)
        return str(result["Id"])

    def remove_network(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a network; it must have no attached services or containers left."""
        with removing(f"removing network {name}", missing_ok):
            self.api.remove_network(name)

    # -- configs and secrets ----------------------------------------------------------------

    def configs(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Inspect configs of `stack` or with given labels (data included)."""
        return self._objects("config", stack, labels)

    def secrets(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Inspect secrets of `stack` or with given labels (the engine never returns data)."""
        return self._objects("secret", stack, labels)

    def _objects(self, kind: str, stack: str | None, labels: Labels | None) -> list[Spec]:
        with translated(f"listing {kind}s"):
            lister = self.api.configs if kind == "config" else self.api.secrets
            return list(lister(filters=label_filter(stack, labels)))

    def inspect_config(self, name: str) -> Spec:
        """The config as the engine reports it (Spec.Data is base64)."""
        with translated(f"config {name}"):
            return dict(self.api.inspect_config(name))

    def inspect_secret(self, name: str) -> Spec:
        """The secret as the engine reports it (without its data)."""
        with translated(f"secret {name}"):
            return dict(self.api.inspect_secret(name))

    def create_config(self, spec: Spec) -> str:
        """Create a config from a raw spec; `Data` may be bytes (encoded here) or base64 text."""
        return self._create_object("config", spec)

    def create_secret(self, spec: Spec) -> str:
        """Create a secret from a raw spec; `Data` may be bytes (encoded here) or base64 text."""
        return self._create_object("secret", spec)

    def _create_object(self, kind: str, spec: Spec) -> str:
        body = text_data(spec)
        with translated(f"creating {kind} {spec.get('Name')}"):
            url = self.api._url(f"/{kind}s/create")
            result = self.api._result(self.api._post_json(url, data=body), json=True)
        return str(result["ID"])

    def update_config_labels(self, name: str, spec: Spec, *, version: int | None = None,
                             config_id: str | None = None) -> None:
        """Configs are immutable but for labels: replace a config's labels.

        With `version`, the write succeeds only if the config is still at that version
        (Conflict otherwise): a compare-and-swap that the durable upgrade state relies on.
        With `config_id` too, the write is one engine call (no inspect first).
        """
        self._update_object("config", name, spec, version, config_id)

    def update_secret_labels(self, name: str, spec: Spec) -> None:
        """Secrets are immutable but for labels: replace a secret's labels."""
        self._update_object("secret", name, spec, None, None)

    def _update_object(self, kind: str, name: str, spec: Spec, version: int | None,
                       object_id: str | None) -> None:
        with translated(f"updating {kind} {name}"):
            if version is None or object_id is None:
                current = self.api._result(
                    self.api._get(self.api._url(f"/{kind}s/{{0}}", name)), True)
                object_id = str(current["ID"])
                if version is None:
                    version = int(current["Version"]["Index"])
            url = self.api._url(f"/{kind}s/{{0}}/update", object_id)
            params = {"version": version}
            self.api._raise_for_status(self.api._post_json(url, data=spec, params=params))

    def remove_config(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a config; fails with Conflict while a service uses it."""
        self._remove_object("config", name, missing_ok)

    def remove_secret(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a secret; fails with Conflict while a service uses it."""
        self._remove_object("secret", name, missing_ok)

    def _remove_object(self, kind: str, name: str, missing_ok: bool) -> None:
        remover = self.api.remove_config if kind == "config" else self.api.remove_secret
        try:
            with removing(f"removing {kind} {name}", missing_ok):
                remover(name)
        except EngineError as exc:
            if "in use" in str(exc):
                raise Conflict(str(exc)) from exc
            raise

    # -- volumes --------------------------------------------------------------------------

    def volume_names(self, prefix: str = "") -> list[str]:
        """Names of this node's volumes that start with `prefix`."""
        with translated("listing volumes"):
            found = self.api.volumes().get("Volumes") or []
        return sorted(v["Name"] for v in found if v["Name"].startswith(prefix))

    def remove_volume(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a volume; Conflict while a container still uses it."""
        with removing(f"removing volume {name}", missing_ok):
            self.api.remove_volume(name)

    # -- images ---------------------------------------------------------------------------

    def image_exists(self, ref: str) -> bool:
        """True when the image is present on this engine."""
        try:
            with translated(f"image {ref}"):
                self.api.inspect_image(ref)
        except NotFound:
            return False
        return True

    def image_in_registry(self, ref: str) -> bool:
        """True when `ref`'s registry holds it, as the engine sees it (its insecure registries,
        this client's credentials): then every node can pull it and nothing need be built.

        Only a ref that names its registry (`host:port/...`, `registry.example/...`) is looked
        up; a Docker Hub name answers False without asking, as an offline engine would wait.
        """
        if docker.auth.resolve_repository_name(ref)[0] == docker.auth.INDEX_NAME:
            return False
        try:
            with translated(f"image {ref} in its registry"):
                self.api.inspect_distribution(ref)
        except EngineUnavailable:
            raise
        except EngineError:  # not there, no such registry, no access: all the same here
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
        with translated(f"building image {tag}"):
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
