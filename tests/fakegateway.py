"""An in-memory swarm behind the gateway's public methods: the one fake the tests allow.

`FakeGateway` is a `Gateway` whose methods answer from a model of one single-node swarm
manager instead of the Docker SDK, raising the same project exceptions the real gateway's
`_translated` makes of the Engine's answers. It models what the upgrade code relies on:
- services with a spec, a PreviousSpec and a Version.Index taken from one Raft-like counter;
  an update that carries a stale index fails as the Engine does ("update out of sequence");
  network targets are stored as IDs and a few engine defaults are written in, like the
  Engine's inspect shows them;
- tasks: a create, an update that changes the task template or endpoint, or a scale makes
  tasks that start and become running after `start_delay` (running = healthy), or stay
  starting / fail and restart when `behaviour[image]` says so; a failed task during an
  update with `FailureAction: pause` pauses the update; stopping tasks stop after
  `stop_delay`, also after their service was removed;
- networks, configs and secrets: create with name conflicts, immutability but for labels
  (with compare-and-swap on the version), refusal to remove what a service or task uses.
Time is a `FakeClock` shared with the executor: waits cost no wall time.
- nodes: tasks start on `node` ("node-1"); `stop_node` makes a node down as the managers see
  it: its tasks keep the state they last reported, those meant to run are replaced on
  another node; `start_node` brings it back (its old tasks then stop);
- task addresses: each task has one on each of its networks (`NetworksAttachments`);
- `network_linger`: seconds a removed network stays visible (as on a busy swarm).
Simplifications: an update replaces every task at once (no parallelism/delay); placement is
not modelled.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from tests.fakeswarm import (
    FakeClock,
    Killed,
    Labels,
    Object,
    Service,
    Spec,
    Task,
    check_base64,
    json_body,
    labelled,
    network_ids,
    network_view,
    object_view,
    references,
    retained,
    service_view,
    task_key,
    task_view,
)
from upgrade_manager.errors import Conflict, ConvergeTimeout, EngineError, NotFound
from upgrade_manager.gateway import Gateway, ServiceState
from upgrade_manager.model import text_data

__all__ = ["FakeClock", "FakeGateway", "Killed"]

Hook = Callable[[str, bool], None]  # (method name, mutating)

_BAD_UPDATE_STATES = {"paused", "rollback_started", "rollback_paused", "rollback_completed"}
_PREDEFINED = {"ingress": "swarm", "bridge": "local", "host": "local", "none": "local"}


class FakeGateway(Gateway):
    """An in-memory single-node swarm manager behind the gateway's public methods."""

    def __init__(self, clock: FakeClock | None = None, *, start_delay: float = 1.0,
                 stop_delay: float = 0.5) -> None:
        # Deliberately not Gateway.__init__: there is no Docker API client behind this one.
        self.registry_auth = False
        self.clock = clock or FakeClock()
        self.start_delay = start_delay
        self.stop_delay = stop_delay
        self.behaviour: dict[str, str] = {}  # image -> healthy | starting | failing
        self.images: set[str] | None = None  # None: every image is present
        self.hooks: list[Hook] = []
        self.calls: list[str] = []  # every public call, in order
        self._lock = threading.RLock()
        self._in_hook = False
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._services: dict[str, Service] = {}  # by name
        self._gone: list[Task] = []  # tasks of removed services, until they stop
        self._networks: dict[str, Object] = {}
        self._configs: dict[str, Object] = {}
        self._secrets: dict[str, Object] = {}
        self.node = "node-1"  # where new tasks start
        self.nodes = {"node-1", "node-2", "node-3"}
        self._down: set[str] = set()
        self.network_linger = 0.0
        self._lingering: dict[str, float] = {}  # removed network name -> when it goes
        self._addrs = itertools.count(2)
        for name, scope in _PREDEFINED.items():
            self._networks[name] = Object(self._new_id(), name, {
                "Name": name, "Driver": "overlay" if scope == "swarm" else name,
                "Scope": scope, "Labels": {}}, 0, 0, 0)

    # -- plumbing -----------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"{next(self._ids):025x}"

    def _tick(self) -> int:
        return next(self._seq)

    @contextmanager
    def _call(self, name: str, mutating: bool = False) -> Iterator[None]:
        with self._lock:
            self.calls.append(name)
            if not self._in_hook:
                self._in_hook = True
                try:
                    for hook in list(self.hooks):
                        hook(name, mutating)
                finally:
                    self._in_hook = False
            self._advance()
            yield

    def close(self) -> None:
        """Nothing to close."""

    # -- engine ---------------------------------------------------------------------------

    def info(self) -> Spec:
        """`docker info` of an active single-node manager."""
        with self._call("info"):
            return {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True,
                              "Nodes": 1, "Managers": 1}}

    def schedulable_nodes(self) -> int:
        """Nodes that can take a task: those of `self.nodes` that are not down."""
        with self._call("schedulable_nodes"):
            return len(self.nodes - self._down)

    # -- services -------------------------------------------------------------------------

    def services(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Every service, or those of `stack`, filtered by labels."""
        with self._call("services"):
            return [service_view(s) for s in self._services.values()
                    if labelled(s.spec.get("Labels"), stack, labels)]

    def inspect_service(self, name: str) -> Spec:
        """The service by name or ID, as the Engine's inspect shows it."""
        with self._call("inspect_service"):
            return service_view(self._service(name, f"service {name}"))

    def create_service(self, spec: Spec) -> str:
        """Create a service; Conflict for a taken name, NotFound for an unknown network."""
        what = f"creating service {spec.get('Name')}"
        with self._call("create_service", mutating=True):
            body = self._checked_spec(json_body(spec), what)
            name = body["Name"]
            if name in self._services:
                raise Conflict(f"{what}: rpc error: code = AlreadyExists desc = name conflicts "
                               f"with an existing object: service {name} already exists")
            seq = self._tick()
            svc = Service(self._new_id(), body, seq, seq, seq, template=seq)
            self._services[name] = svc
            self._scale(svc)
            return svc.id

    def update_service(self, name: str, spec: Spec, *, version: int | None = None
                       ) -> list[str]:
        """Replace a service's spec at `version`; a stale version is the Engine's Conflict."""
        what = f"updating service {name}"
        with self._call("update_service", mutating=True):
            svc = self._service(name, what)
            if version is None:
                version = svc.version
            if version != svc.version:
                raise Conflict(f"{what}: rpc error: code = Unknown desc = update out of sequence")
            body = self._checked_spec(json_body(spec), what, svc)
            if body["Name"] != svc.spec["Name"]:
                raise EngineError(f"{what}: rpc error: code = Unimplemented desc = renaming "
                                  "services is not supported")
            old = svc.spec
            svc.previous, svc.spec = old, body
            svc.version = svc.updated = self._tick()
            svc.update_status = None  # swarmkit resets it on every update
            if task_key(old) != task_key(body):
                svc.template = svc.version
                self._replace_tasks(svc)
            self._scale(svc)
            return []

    def remove_service(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a service; its tasks keep running until they have stopped."""
        with self._call("remove_service", mutating=True):
            try:
                svc = self._service(name, f"removing service {name}")
            except NotFound:
                if missing_ok:
                    return
                raise
            del self._services[svc.spec["Name"]]
            for task in svc.tasks:
                if task.live:
                    if task.desired == "running":
                        self._stop(task, "remove")
                    self._gone.append(task)

    def tasks(self, service: str, *, desired_running: bool = False) -> list[Spec]:
        """The service's tasks, newest first; optionally only those meant to be running."""
        with self._call("tasks"):
            svc = self._service(service, f"listing tasks of {service}")
            found = [t for t in svc.tasks if not desired_running or t.desired == "running"]
            found.sort(key=lambda t: t.updated, reverse=True)
            return [self._task_view(t) for t in found]

    def live_tasks(self, service_id: str, skip_nodes: Iterable[str] = ()) -> int:
        """How many tasks of a service (also a removed one) may still run."""
        skip = set(skip_nodes)
        with self._call("live_tasks"):
            every = [t for s in self._services.values() for t in s.tasks] + self._gone
            return sum(1 for t in every if t.service_id == service_id and t.live
                       and t.node not in skip)

    def tasks_of(self, service_ids: Iterable[str]) -> list[Spec]:
        """The tasks of several services (by ID), newest first, in one call."""
        ids = set(service_ids)
        with self._call("tasks_of"):
            found = [t for s in self._services.values() for t in s.tasks if t.service_id in ids]
            found.sort(key=lambda t: t.updated, reverse=True)
            return [self._task_view(t) for t in found]

    def inspect_services(self, names: Iterable[str]) -> dict[str, Spec]:
        """Several services by name; NotFound for a missing one."""
        return {n: self.inspect_service(n) for n in dict.fromkeys(names)}

    def live_tasks_of(self, service_ids: Iterable[str], *,
                      skip_nodes: Iterable[str] = ()) -> dict[str, int]:
        """`live_tasks` for several service IDs."""
        skip = set(skip_nodes)
        return {i: self.live_tasks(i, skip) for i in service_ids}

    def down_nodes(self) -> set[str]:
        """The nodes `stop_node` made down."""
        with self._call("down_nodes"):
            return set(self._down)

    # -- nodes ----------------------------------------------------------------------------

    def stop_node(self, node: str) -> None:
        """The node's engine stops: its tasks report nothing more; the orchestrator replaces
        those meant to run on another node (as the managers do once it is seen down)."""
        with self._lock:
            self._down.add(node)
            self.node = sorted(self.nodes - self._down)[0]
            for svc in self._services.values():
                for task in list(svc.tasks):
                    if task.node == node and task.desired == "running":
                        task.desired, task.updated = "shutdown", self._tick()
                        self._start(svc, task.slot)

    def start_node(self, node: str) -> None:
        """The node is back: its old tasks stop."""
        with self._lock:
            self._down.discard(node)
            for task in [t for s in self._services.values() for t in s.tasks] + self._gone:
                if task.node == node and task.live and task.desired != "running":
                    self._stop(task, task.desired)

    def _task_view(self, task: Task) -> Spec:
        view = task_view(task)
        names = {n.id: n.name for n in self._networks.values()}
        view["NetworksAttachments"] = [
            {"Network": {"ID": net, "Spec": {"Name": names.get(net, net)}}, "Addresses": [addr]}
            for net, addr in (a.split() for a in task.addresses)]
        return view

    def wait_all_converged(self, names: Iterable[str], *, timeout: float = 180.0,
                           interval: float = 0.5,
                           progress: Callable[[ServiceState], None] | None = None
                           ) -> dict[str, ServiceState]:
        """`wait_converged` for each service in turn, on the fake clock."""
        return {n: self.wait_converged(n, timeout=timeout, interval=interval, progress=progress)
                for n in dict.fromkeys(names)}

    def wait_converged(self, name: str, *, timeout: float = 180.0, interval: float = 0.5,
                       progress: Callable[[ServiceState], None] | None = None) -> ServiceState:
        """Gateway.wait_converged on the fake clock: same answers, no wall time."""
        deadline = self.clock.monotonic() + timeout
        state = self.service_state(name)
        while not state.converged:
            if state.update_state in _BAD_UPDATE_STATES:
                raise ConvergeTimeout(
                    f"service {name}: update {state.update_state}: "
                    f"{state.update_message or ''} {state.problem or ''}".strip())
            if self.clock.monotonic() > deadline:
                want = "one per node" if state.desired is None else str(state.desired)
                raise ConvergeTimeout(
                    f"service {name} did not converge within {timeout:.0f} s: "
                    f"{state.running}/{want} tasks running"
                    + (f"; {state.problem}" if state.problem else ""))
            if progress:
                progress(state)
            self.clock.sleep(interval)
            state = self.service_state(name)
        return state

    # -- the task model ---------------------------------------------------------------------

    def _scale(self, svc: Service) -> None:
        """Make or stop tasks so that the wanted slots are there."""
        mode = svc.spec.get("Mode") or {}
        slots = ([None] if "Global" in mode
                 else list(range(1, int(mode.get("Replicated", {}).get("Replicas", 1)) + 1))
                 if "Replicated" in mode else [])
        wanted = [t for t in svc.tasks if t.desired == "running"]
        for task in wanted:
            if task.slot not in slots:
                self._stop(task, "shutdown")
        have = {t.slot for t in wanted if t.slot in slots}
        for slot in slots:
            if slot not in have:
                self._start(svc, slot)

    def _replace_tasks(self, svc: Service) -> None:
        """A new task spec: every running slot gets a new task, stop-first or start-first."""
        order = (svc.spec.get("UpdateConfig") or {}).get("Order", "stop-first")
        svc.update_status = {"State": "updating", "Message": "update in progress"}
        slots: dict[int | None, list[Task]] = {}
        for task in svc.tasks:
            if task.desired == "running":
                slots.setdefault(task.slot, []).append(task)
        for slot, tasks in slots.items():
            new = self._start(svc, slot)
            serving = next((t for t in tasks if t.state == "running"), None)
            for task in tasks:
                if order == "start-first" and task is serving:
                    new.replaces = task.id  # stops once `new` runs
                else:
                    self._stop(task, "shutdown")

    def _start(self, svc: Service, slot: int | None) -> Task:
        spec = copy.deepcopy(svc.spec["TaskTemplate"])
        task = Task(self._new_id(), svc.id, slot, spec, svc.template, self.clock.monotonic(),
                    updated=self._tick(), node=self.node,
                    addresses=[f"{net} 10.0.{n // 250}.{n % 250 + 2}/24"
                               for net in sorted(network_ids(spec))
                               for n in [next(self._addrs)]])
        svc.tasks.append(task)
        return task

    def _stop(self, task: Task, desired: str) -> None:
        task.desired = desired
        task.stop_at = self.clock.monotonic() + self.stop_delay
        task.updated = self._tick()

    def _advance(self) -> None:
        """Bring every task to what the fake time says it is now."""
        now = self.clock.monotonic()
        for name, when in list(self._lingering.items()):
            if now >= when:
                self._networks.pop(name, None)
                del self._lingering[name]
        for svc in self._services.values():
            for task in list(svc.tasks):
                if task.node not in self._down:
                    self._advance_task(svc, task, now)
            self._finish_update(svc)
            svc.tasks = retained(svc.tasks)
        for task in self._gone:
            if task.node in self._down:
                continue
            if task.live and task.stop_at is not None and now >= task.stop_at:
                task.state, task.updated = "shutdown", self._tick()
        self._gone = [t for t in self._gone if t.live]

    def _advance_task(self, svc: Service, task: Task, now: float) -> None:
        if task.desired != "running":
            if task.live and task.stop_at is not None and now >= task.stop_at:
                task.state, task.updated = "shutdown", self._tick()
            return
        if task.state != "starting" or now < task.created + self.start_delay:
            return
        behaviour = self.behaviour.get(task.image, "healthy")
        if behaviour == "healthy":
            task.state, task.updated = "running", self._tick()
            for old in svc.tasks:
                if old.id == task.replaces and old.desired == "running":
                    self._stop(old, "shutdown")
        elif behaviour == "failing":
            task.state, task.desired, task.updated = "failed", "shutdown", self._tick()
            task.err = "task: non-zero exit (1): dockerexec: unhealthy container"
            update = svc.spec.get("UpdateConfig") or {}
            if (svc.update_status or {}).get("State") == "updating" \
                    and task.version == svc.template \
                    and update.get("FailureAction", "pause") == "pause":
                svc.update_status = {"State": "paused", "Message":
                                     f"update paused due to failure or early termination "
                                     f"of task {task.id}"}
            restart = (svc.spec["TaskTemplate"].get("RestartPolicy") or {})
            if restart.get("Condition", "any") != "none":
                replacement = self._start(svc, task.slot)
                replacement.replaces = task.replaces

    def _finish_update(self, svc: Service) -> None:
        if (svc.update_status or {}).get("State") != "updating":
            return
        wanted = [t for t in svc.tasks if t.desired == "running"]
        if all(t.state == "running" and t.version == svc.template for t in wanted) \
                and not any(t.live and t.desired != "running" and t.node not in self._down
                            for t in svc.tasks):
            svc.update_status = {"State": "completed", "Message": "update completed"}

    # -- networks -------------------------------------------------------------------------

    def networks(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Networks of `stack` or with given labels."""
        with self._call("networks"):
            return [network_view(n) for n in self._networks.values()
                    if labelled(n.spec.get("Labels"), stack, labels)]

    def network_names(self) -> dict[str, str]:
        """Every network's ID mapped to its name."""
        with self._call("network_names"):
            return {n.id: n.name for n in self._networks.values()}

    def inspect_network(self, name: str) -> Spec:
        """The network by name or ID."""
        with self._call("inspect_network"):
            return network_view(self._network(name, f"network {name}"))

    def create_network(self, spec: Spec) -> str:
        """Create a network; a taken name is a Conflict (CheckDuplicate)."""
        name = spec.get("Name")
        with self._call("create_network", mutating=True):
            if name in self._networks:
                raise Conflict(f"creating network {name}: network with name {name} already "
                               "exists")
            seq = self._tick()
            body = json_body(spec)
            body.setdefault("Scope", "swarm")
            net = Object(self._new_id(), str(name), body, seq, seq, seq)
            self._networks[net.name] = net
            return net.id

    def remove_network(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a network; refused (EngineError) while a service or a live task uses it."""
        what = f"removing network {name}"
        with self._call("remove_network", mutating=True):
            try:
                net = self._network(name, what)
            except NotFound:
                if missing_ok:
                    return
                raise
            for svc in self._services.values():
                if net.id in network_ids(svc.spec["TaskTemplate"]):
                    raise EngineError(f"{what}: rpc error: code = FailedPrecondition desc = "
                                      f"network {net.id} is in use by service {svc.id}")
            tasks = [t for s in self._services.values() for t in s.tasks] + self._gone
            if any(t.live and net.id in network_ids(t.spec) for t in tasks):
                raise EngineError(f"{what}: error while removing network: network {net.name} "
                                  f"id {net.id} has active endpoints")
            if self.network_linger > 0:
                self._lingering.setdefault(net.name, self.clock.monotonic() + self.network_linger)
            else:
                del self._networks[net.name]

    # -- configs and secrets ----------------------------------------------------------------

    def configs(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Configs of `stack` or with given labels (data included)."""
        with self._call("configs"):
            return [object_view(c, True) for c in self._configs.values()
                    if labelled(c.spec.get("Labels"), stack, labels)]

    def secrets(self, stack: str | None = None, labels: Labels | None = None) -> list[Spec]:
        """Secrets of `stack` or with given labels (never their data)."""
        with self._call("secrets"):
            return [object_view(s, False) for s in self._secrets.values()
                    if labelled(s.spec.get("Labels"), stack, labels)]

    def inspect_config(self, name: str) -> Spec:
        """The config (Spec.Data is base64)."""
        with self._call("inspect_config"):
            return object_view(self._object(self._configs, "config", name), True)

    def inspect_secret(self, name: str) -> Spec:
        """The secret, without its data."""
        with self._call("inspect_secret"):
            return object_view(self._object(self._secrets, "secret", name), False)

    def create_config(self, spec: Spec) -> str:
        """Create a config; a taken name is a Conflict (the lock the upgrade state uses)."""
        return self._make_object(self._configs, "config", spec)

    def create_secret(self, spec: Spec) -> str:
        """Create a secret; a taken name is a Conflict."""
        return self._make_object(self._secrets, "secret", spec)

    def update_config_labels(self, name: str, spec: Spec, *, version: int | None = None,
                             config_id: str | None = None) -> None:
        """Replace a config's labels; at `version` only (Conflict when it moved on)."""
        self._relabel_object(self._configs, "config", name, spec, version)

    def update_secret_labels(self, name: str, spec: Spec) -> None:
        """Replace a secret's labels."""
        self._relabel_object(self._secrets, "secret", name, spec, None)

    def remove_config(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a config; Conflict while a service uses it."""
        self._drop_object(self._configs, "config", name, missing_ok)

    def remove_secret(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove a secret; Conflict while a service uses it."""
        self._drop_object(self._secrets, "secret", name, missing_ok)

    def _make_object(self, store: dict[str, Object], kind: str, spec: Spec) -> str:
        name = str(spec.get("Name"))
        what = f"creating {kind} {name}"
        with self._call(f"create_{kind}", mutating=True):
            body = json_body(text_data(spec))
            check_base64(body.get("Data"), what)
            if name in store:
                raise Conflict(f"{what}: rpc error: code = AlreadyExists desc = {kind} {name} "
                               "already exists")
            seq = self._tick()
            obj = Object(self._new_id(), name, body, seq, seq, seq)
            store[name] = obj
            return obj.id

    def _relabel_object(self, store: dict[str, Object], kind: str, name: str, spec: Spec,
                       version: int | None) -> None:
        what = f"updating {kind} {name}"
        with self._call(f"update_{kind}_labels", mutating=True):
            obj = self._object(store, kind, name, what)
            if version is not None and version != obj.version:
                raise Conflict(f"{what}: rpc error: code = Unknown desc = update out of sequence")
            body = json_body(spec)
            same = {k: v for k, v in body.items() if k != "Labels"} \
                == {k: v for k, v in obj.spec.items() if k != "Labels"}
            if not same and body.get("Data", obj.spec.get("Data")) != obj.spec.get("Data"):
                raise EngineError(f"{what}: rpc error: code = InvalidArgument desc = only "
                                  "updates to Labels are allowed")
            obj.spec = {**obj.spec, "Labels": dict(body.get("Labels") or {})}
            obj.version = obj.updated = self._tick()

    def _drop_object(self, store: dict[str, Object], kind: str, name: str,
                       missing_ok: bool) -> None:
        what = f"removing {kind} {name}"
        with self._call(f"remove_{kind}", mutating=True):
            try:
                obj = self._object(store, kind, name, what)
            except NotFound:
                if missing_ok:
                    return
                raise
            users = sorted(s.spec["Name"] for s in self._services.values()
                           if obj.id in references(s.spec, kind))
            if users:
                raise Conflict(f"{what}: rpc error: code = InvalidArgument desc = {kind} "
                               f"'{obj.name}' is in use by the following service: "
                               f"{', '.join(users)}")
            del store[obj.name]

    # -- volumes and images ---------------------------------------------------------------

    def volume_names(self, prefix: str = "") -> list[str]:
        """Named volumes of the stack's services' mounts (made when their tasks start)."""
        with self._call("volume_names"):
            names = {m["Source"] for s in self._services.values()
                     for m in s.spec["TaskTemplate"]["ContainerSpec"].get("Mounts") or []
                     if m.get("Type", "volume") == "volume" and m.get("Source")}
            return sorted(n for n in names if n.startswith(prefix))

    def remove_volume(self, name: str, *, missing_ok: bool = False) -> None:
        """Volumes are not modelled beyond their names: removing one is a no-op."""
        with self._call("remove_volume", mutating=True):
            return

    def image_exists(self, ref: str) -> bool:
        """True unless `images` is a set without `ref`."""
        with self._call("image_exists"):
            return self.images is None or ref in self.images

    def image_in_registry(self, ref: str) -> bool:
        """The fake has no registry: only what `image_exists` says is there."""
        with self._call("image_in_registry"):
            return False

    def build_image(self, path: str, tag: str, *, dockerfile: str | None = None,
                    buildargs: dict[str, str] | None = None,
                    log: Callable[[str], None] | None = None) -> str:
        """Pretend to build: the tag now exists."""
        with self._call("build_image"):
            if self.images is not None:
                self.images.add(tag)
            return f"sha256:{self._new_id()}"

    # -- lookups and views ----------------------------------------------------------------

    def _service(self, ref: str, what: str) -> Service:
        svc = self._services.get(ref) or next(
            (s for s in self._services.values() if s.id == ref), None)
        if svc is None:
            raise NotFound(f"{what}: not found (service {ref} not found)")
        return svc

    def _network(self, ref: str, what: str) -> Object:
        net = self._networks.get(ref) or next(
            (n for n in self._networks.values() if n.id == ref), None)
        if net is None:
            raise NotFound(f"{what}: not found (network {ref} not found)")
        return net

    def _object(self, store: dict[str, Object], kind: str, ref: str,
                what: str | None = None) -> Object:
        obj = store.get(ref) or next((o for o in store.values() if o.id == ref), None)
        if obj is None:
            raise NotFound(f"{what or kind + ' ' + ref}: not found ({kind} {ref} not found)")
        return obj

    def _checked_spec(self, spec: Spec, what: str, current: Service | None = None) -> Spec:
        """The spec as the Engine stores it, or the Engine's refusal."""
        task = spec.setdefault("TaskTemplate", {})
        task.setdefault("ForceUpdate", 0)
        task.setdefault("Runtime", "container")
        task.setdefault("ContainerSpec", {}).setdefault("Isolation", "default")
        spec.setdefault("EndpointSpec", {}).setdefault("Mode", "vip")
        for net in task.get("Networks") or []:
            net["Target"] = self._network(net["Target"], what).id
        for kind, store in (("config", self._configs), ("secret", self._secrets)):
            for ref in task["ContainerSpec"].get(f"{kind.title()}s") or []:
                obj = store.get(ref.get(f"{kind.title()}Name", ""))
                if obj is None or obj.id != ref.get(f"{kind.title()}ID"):
                    raise EngineError(f"{what}: rpc error: code = InvalidArgument desc = "
                                      f"{kind} reference is invalid: {ref}")
        for port in (spec["EndpointSpec"].get("Ports") or []):
            owner = self._port_owner(int(port.get("PublishedPort") or 0), current)
            if owner:
                raise EngineError(f"{what}: rpc error: code = InvalidArgument desc = port "
                                  f"'{port['PublishedPort']}' is already in use by service "
                                  f"'{owner}'")
        return spec

    def _port_owner(self, port: int, current: Service | None) -> str | None:
        for svc in self._services.values():
            if port and svc is not current and port in {
                    int(p.get("PublishedPort") or 0)
                    for p in (svc.spec.get("EndpointSpec") or {}).get("Ports") or []}:
                return str(svc.spec["Name"])
        return None

