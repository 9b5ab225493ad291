"""Applying a plan step by step, durably, with health gating and rollback.

Every step is idempotent, so a resumed upgrade simply runs the first step not recorded as
done again. Progress is written to the durable state after each step. A step that fails
(a new version that never becomes healthy, an engine error, a timeout) stops the run; the
caller then rolls back with `rollback_steps`, which undoes exactly what was done, in reverse,
without sending a request to a version it did not start on.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeVar

from lb.table import RoutingTable
from upgrade_manager._lb import lb_errors
from upgrade_manager.deploy import resolve_references
from upgrade_manager.diff import diff_specs, normalize
from upgrade_manager.errors import Conflict, ConvergeTimeout, DansError, NotFound, UpgradeError
from upgrade_manager.gateway import Gateway
from upgrade_manager.model import FAST_UPDATE, Plan, Spec, Step, StepKind, bytes_data, data_digest
from upgrade_manager.resume_routes import restore_routes
from upgrade_manager.task_waits import POLL_INTERVAL, remove_network, wait_stopped

__all__ = ["NO_RETURN_STEP", "RULES", "Executor", "StepHook", "StepRule", "Timeouts", "Undo",
           "rollback_steps", "rule_of"]

T = TypeVar("T")
R = TypeVar("R")

# Engine calls one step keeps in flight: the SDK pools 10 connections to the engine and the
# state's heartbeat needs one of them.
PARALLEL_CALLS = 8

# Once new requests go to the converged canonical services, the old version is gone from
# them: undoing would mean another upgrade, so rollback stops being offered here.
NO_RETURN_STEP = "route:lb-back"


StepHook = Callable[[str, int, int, Step], None]


class LBAdmin(Protocol):
    """What the executor needs of the LB's admin client."""

    def set_routes(self, table: RoutingTable) -> RoutingTable: ...
    def wait_drained(self, frontend: str, group: str, timeout: float = 60.0) -> None: ...


@dataclass(frozen=True)
class Timeouts:
    """Seconds the executor waits for each kind of thing."""

    healthy: float = 180.0
    drain: float = 120.0
    remove: float = 90.0


class Clock(Protocol):
    """Where the executor's waits read the time and sleep (the `time` module by default)."""

    def monotonic(self) -> float: ...
    def sleep(self, seconds: float, /) -> None: ...


class Executor:
    """Runs steps against the engine and the LB, reporting each through `report`."""

    def __init__(self, gw: Gateway, lb: Callable[[], LBAdmin],
                 report: Callable[[str, Step, float, str], None],
                 timeouts: Timeouts | None = None, *, clock: Clock | None = None,
                 secret_data: Mapping[str, bytes] | None = None,
                 on_step: StepHook | None = None) -> None:
        self.gw = gw
        # Told (event, index, total, step) as each step starts, finishes or fails: how the
        # LB's /metrics learns the progress (upgrade_manager.lb_progress).
        self.on_step: StepHook = on_step or (lambda *_: None)
        # Secret content by name, from the Compose files: plans hold only digests.
        self.secret_data = dict(secret_data or {})
        self._lb_factory = lb
        self._lb: LBAdmin | None = None
        self.report = report
        self.timeouts = timeouts or Timeouts()
        # A seam for tests with an in-memory engine: their waits cost no wall time.
        self.clock: Clock = clock or time

    @property
    def lb(self) -> LBAdmin:
        """The LB admin client, made on first use (plans without LB steps need none)."""
        if self._lb is None:
            self._lb = self._lb_factory()
        return self._lb

    def run(self, steps: tuple[Step, ...] | list[Step], start: int,
            done: Callable[[int], object]) -> None:
        """Run `steps[start:]`; after each, `done(index + 1)` records progress. A resume
        (`start` > 0) first sends the table in force again (`resume_routes`)."""
        restore_routes(self.apply, self.report, steps, start)
        for i in range(start, len(steps)):
            step = steps[i]
            t0 = time.monotonic()
            self.report("start", step, 0.0, f"{i + 1}/{len(steps)}")
            self.on_step("start", i, len(steps), step)
            try:
                self.apply(step)
            except DansError as exc:
                self.report("failed", step, time.monotonic() - t0, str(exc))
                self.on_step("failed", i, len(steps), step)
                raise
            self.report("done", step, time.monotonic() - t0, "")
            done(i + 1)
            self.on_step("done", i, len(steps), step)

    def apply(self, step: Step) -> None:
        """Carry out one step (its kind's rule in `RULES`); safe to repeat."""
        rule = rule_of(step.kind)
        with lb_errors():  # the LB client's own errors become dans's LBError here
            rule.apply(self, step)

    # -- networks, configs, secrets -------------------------------------------------------

    def _do_create_network(self, step: Step) -> None:
        try:
            self.gw.inspect_network(step.target)
        except NotFound:
            self.gw.create_network(step.args["spec"])

    def _do_create_config(self, step: Step) -> None:
        self._create_object(step, self.gw.inspect_config, self.gw.create_config)

    def _do_create_secret(self, step: Step) -> None:
        if "digest" not in step.args:  # a driver-backed secret, or a plan of an older dans
            self._create_object(step, self.gw.inspect_secret, self.gw.create_secret)
            return
        try:
            self.gw.inspect_secret(step.target)
            return
        except NotFound:
            pass
        data = self.secret_data.get(step.target)
        if data is None or data_digest(data) != step.args["digest"]:
            raise UpgradeError(
                f"secret {step.args.get('logical') or step.target}: its content is not what "
                "the upgrade was planned with (the plan keeps only a digest); run it with the "
                "same files, or roll it back"
            )
        self.gw.create_secret({**step.args["spec"], "Data": data})

    def _create_object(self, step: Step, inspect: Callable[[str], Spec],
                       create: Callable[[Spec], str]) -> None:
        try:
            inspect(step.target)
        except NotFound:
            create(bytes_data(step.args["spec"]))  # a driver-backed secret has no Data

    def _do_remove_network(self, step: Step) -> None:
        remove_network(self.gw, step.target, self.clock, self.timeouts.remove)

    def _do_remove_unused(self, step: Step) -> None:
        for kind, remove in (("configs", self.gw.remove_config),
                             ("secrets", self.gw.remove_secret)):
            for name in step.args[kind]:
                try:
                    remove(name, missing_ok=True)
                except Conflict:
                    self.report("info", step, 0.0, f"kept {name}: a service still uses it")

    def _do_remove_config(self, step: Step) -> None:
        self.gw.remove_config(step.target, missing_ok=True)

    def _do_remove_secret(self, step: Step) -> None:
        self.gw.remove_secret(step.target, missing_ok=True)

    # -- services --------------------------------------------------------------------------

    def _do_create_service(self, step: Step) -> None:
        self._create_all({step.target: step.args["spec"]})

    def _do_create_services(self, step: Step) -> None:
        """Create every service of the step side by side, then wait for all together."""
        self._create_all(step.args["services"])

    def _create_all(self, specs: dict[str, Spec]) -> None:
        def create(name: str) -> None:
            if not self.gw.service_exists(name):
                self.gw.create_service(resolve_references(self.gw, specs[name]))

        each(create, specs)
        self._healthy(specs)

    def _do_update_service(self, step: Step) -> None:
        self._update_all({step.target: step.args["spec"]}, step.args.get("via"))

    def _do_update_services(self, step: Step) -> None:
        self._update_all(step.args["services"], step.args.get("via"))

    def _do_converge(self, step: Step) -> None:
        """Stop the old chain, then give each level its new spec, callees first.

        Safe to repeat: a changed service that already has its new spec is neither stopped
        nor updated again; an unchanged caller of the chain (a companion) restarts again.
        Every service of the old chain stops at once, and each level's services take their
        new specs at once. A service the new file adds that may call the chain (`create`) has
        no old version: it is created here, in its level, once the old chain has stopped.
        """
        services: dict[str, Spec] = step.args["services"]
        levels: list[list[str]] = step.args.get("levels") or [sorted(services)]
        companions = set(step.args.get("companions", []))
        stop = [n for n in step.args.get("stop", []) if n in services]
        current = self.gw.inspect_services(stop)
        nets = self.gw.network_names()
        todo = [n for n in stop if n in companions
                or not _same(current[n]["Spec"], services[n], nets)]
        # A service with no task left takes its new spec directly: the engine starts all its
        # tasks at once, so the `via` round (all at once, then the exact spec) is not needed.
        stopped = {n for n, zero in zip(todo, each(self._scale_to_zero, todo), strict=True) if zero}
        wait_stopped(self.gw, [str(current[n]["ID"]) for n in todo], self.clock,
                     self.timeouts.remove, f"the old chain has not stopped: {', '.join(todo)}")
        added = set(step.args.get("create", []))
        for level in levels:
            self._create_all({n: services[n] for n in level if n in added})
            self._update_all({n: services[n] for n in level if n in services and n not in added},
                             step.args.get("via"), direct=stopped)

    def _scale_to_zero(self, name: str) -> bool:
        """Scale a replicated service to no task; False for a global one (it cannot)."""
        current = self.gw.inspect_service(name)
        spec = copy.deepcopy(current["Spec"])
        replicated = (spec.get("Mode") or {}).get("Replicated")
        if replicated is None:
            return False  # a global service converges stop-first in its level instead
        if replicated.get("Replicas") != 0:
            replicated["Replicas"] = 0
            self.gw.update_service(name, spec, version=int(current["Version"]["Index"]))
        return True

    def _do_scale_services(self, step: Step) -> None:
        """Give each service its replica count (nothing else changes), side by side, then
        wait until exactly that many tasks of each run, healthy."""
        counts: dict[str, int] = step.args["replicas"]

        def scale(name: str) -> None:
            current = self.gw.inspect_service(name)
            spec = copy.deepcopy(current["Spec"])
            replicated = (spec.get("Mode") or {}).get("Replicated")
            if replicated is None:
                raise UpgradeError(f"{name} is not a replicated service: it cannot be scaled")
            if replicated.get("Replicas") != counts[name]:
                replicated["Replicas"] = counts[name]
                self.gw.update_service(name, spec, version=int(current["Version"]["Index"]))

        each(scale, counts)
        self._healthy(counts)

    def _do_remove_service(self, step: Step) -> None:
        self._remove_all([step.target])

    def _do_remove_services(self, step: Step) -> None:
        self._remove_all(step.args["names"])

    def _healthy(self, names: Iterable[str]) -> None:
        try:
            self.gw.wait_all_converged(names, timeout=self.timeouts.healthy,
                                       interval=POLL_INTERVAL)
        except ConvergeTimeout as exc:
            raise UpgradeError(f"{exc}") from exc

    def _update_all(self, specs: dict[str, Spec], via: dict[str, Any] | None,
                    direct: set[str] | frozenset[str] = frozenset()) -> None:
        """Send every update first (side by side), then wait for all together.

        With `via`, each service first takes the new task spec under the `via` update config
        (e.g. all tasks at once while no traffic reaches it), then its exact spec, which
        differs only in update config and so replaces no task. Services in `direct` (no
        task left to replace) take their exact spec at once.
        """
        current = self.gw.inspect_services(specs)
        nets = self.gw.network_names()
        todo = {n: s for n, s in specs.items() if not _same(current[n]["Spec"], s, nets)}
        if via:
            first = {n: {**copy.deepcopy(s), "UpdateConfig": via} for n, s in todo.items()
                     if n not in direct}
            each(lambda n: self._send_update(n, first[n]), first)
            self._healthy(first)
        each(lambda n: self._send_update(n, todo[n]), todo)
        self._healthy(todo)

    def _send_update(self, name: str, spec: Spec) -> None:
        current = self.gw.inspect_service(name)
        self.gw.update_service(name, resolve_references(self.gw, spec),
                               version=int(current["Version"]["Index"]))

    def _remove_all(self, names: list[str]) -> None:
        def remove(name: str) -> str | None:
            try:
                sid = str(self.gw.inspect_service(name)["ID"])
            except NotFound:
                return None
            self.gw.remove_service(name, missing_ok=True)
            return sid

        # Wait until their tasks have stopped (on every node that is up), so their networks
        # can go.
        wait_stopped(self.gw, [i for i in each(remove, names) if i], self.clock,
                     self.timeouts.remove, f"removed services still have tasks: {', '.join(names)}")

    # -- the LB ----------------------------------------------------------------------------

    def _do_route(self, step: Step) -> None:
        self.lb.set_routes(RoutingTable.from_dict(step.args["table"]))

    def _do_drain(self, step: Step) -> None:
        for frontend in step.args["frontends"]:
            self.lb.wait_drained(frontend, step.args["group"], timeout=self.timeouts.drain)


def each(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`fn(item)` for every item, side by side; once all have finished, the first error.

    Every call ends before this returns or raises, so a failed step never leaves engine
    calls in flight behind it, and the recorded progress stays what the engine holds.
    """
    todo = list(items)
    if len(todo) <= 1:
        return [fn(i) for i in todo]
    with ThreadPoolExecutor(max_workers=min(PARALLEL_CALLS, len(todo)),
                            thread_name_prefix="dans-step") as pool:
        futures = [pool.submit(fn, i) for i in todo]
    for f in futures:
        exc = f.exception()
        if exc is not None:
            raise exc
    return [f.result() for f in futures]


def _same(running: Spec, wanted: Spec, network_names: dict[str, str]) -> bool:
    """True when a running spec already is the wanted one (networks read by name)."""
    return not diff_specs(normalize(running, network_names), normalize(wanted))


class Undo(Enum):
    """How a rollback undoes a step that ran (or was running when the upgrade stopped)."""

    NOTHING = "nothing"  # a wait, or the removal of what the new file drops
    RESTORE_SPECS = "restore-specs"  # its canonical services take their previous specs back
    REROUTE = "reroute"  # new requests go back to the old chain; this upgrade's groups drain
    REMOVE_SERVICES = "remove-services"  # the services it created go
    REMOVE_OBJECT = "remove-object"  # the network, config or secret it created goes


@dataclass(frozen=True)
class StepRule:
    """What a kind of step does (`apply`) and how a rollback undoes it (`undo`)."""

    apply: Callable[[Executor, Step], None]
    undo: Undo = Undo.NOTHING
    inverse: StepKind | None = None  # with REMOVE_OBJECT: the kind of step that removes it


K = StepKind
# The one registry of step kinds: the executor applies through it, rollback undoes through it.
RULES: dict[StepKind, StepRule] = {
    K.CREATE_NETWORK: StepRule(Executor._do_create_network, Undo.REMOVE_OBJECT,
                               K.REMOVE_NETWORK),
    K.CREATE_CONFIG: StepRule(Executor._do_create_config, Undo.REMOVE_OBJECT, K.REMOVE_CONFIG),
    K.CREATE_SECRET: StepRule(Executor._do_create_secret, Undo.REMOVE_OBJECT, K.REMOVE_SECRET),
    K.CREATE_SERVICE: StepRule(Executor._do_create_service, Undo.REMOVE_SERVICES),
    K.CREATE_SERVICES: StepRule(Executor._do_create_services, Undo.REMOVE_SERVICES),
    K.CREATE_RELAY: StepRule(Executor._do_create_service, Undo.REMOVE_SERVICES),
    K.CREATE_TEMP: StepRule(Executor._do_create_service, Undo.REMOVE_SERVICES),
    K.UPDATE_SERVICE: StepRule(Executor._do_update_service, Undo.RESTORE_SPECS),
    K.UPDATE_SERVICES: StepRule(Executor._do_update_services, Undo.RESTORE_SPECS),
    K.SCALE_SERVICES: StepRule(Executor._do_scale_services, Undo.RESTORE_SPECS),
    K.CONVERGE: StepRule(Executor._do_converge, Undo.RESTORE_SPECS),
    K.ROUTE: StepRule(Executor._do_route, Undo.REROUTE),
    K.DRAIN: StepRule(Executor._do_drain),
    K.REMOVE_SERVICE: StepRule(Executor._do_remove_service),
    K.REMOVE_SERVICES: StepRule(Executor._do_remove_services),
    K.REMOVE_NETWORK: StepRule(Executor._do_remove_network),
    K.REMOVE_CONFIG: StepRule(Executor._do_remove_config),
    K.REMOVE_SECRET: StepRule(Executor._do_remove_secret),
    K.REMOVE_UNUSED: StepRule(Executor._do_remove_unused),
}


def rule_of(kind: StepKind) -> StepRule:
    """The rule of a kind of step; UpgradeError for a kind this dans cannot apply."""
    rule = RULES.get(kind)
    if rule is None:
        raise UpgradeError(f"no rule for step kind {kind!r}: this dans cannot apply it")
    return rule


def rollback_steps(plan: Plan, done: int) -> list[Step]:
    """The steps that undo the first `done` steps of `plan` (plus the one in progress).

    Each touched step is undone by its kind's rule (`RULES`): canonical services get their
    previous specs first, then traffic goes back to the old chain, then what the upgrade
    created goes, networks, configs and secrets last, in reverse. Refuses (UpgradeError) once
    new requests have gone to the converged canonical services: from there on, going back
    is another upgrade, run with the old file.
    """
    keys = [s.key for s in plan.steps]
    if NO_RETURN_STEP in keys and done > keys.index(NO_RETURN_STEP):
        raise UpgradeError(
            "the upgrade has passed its point of no return (new requests already reach the "
            "converged services); finish it with `dans upgrade` using the same file, then "
            "upgrade back with the old file if you must"
        )
    touched: dict[Undo, list[Step]] = {u: [] for u in Undo}
    for s in plan.steps[: min(done + 1, len(plan.steps))]:
        touched[rule_of(s.kind).undo].append(s)
    undo: list[Step] = []
    old = plan.old_specs
    changed = {n: old[n] for s in touched[Undo.RESTORE_SPECS] for n in _services_of(s) if n in old}
    if changed:
        undo.append(Step(K.UPDATE_SERVICES, "previous", {"services": changed, "via": FAST_UPDATE},
                         note="canonical services back to their previous specs"))
    if touched[Undo.REROUTE] and plan.old_table is not None:
        undo += _route_back(plan)
    created = [n for s in touched[Undo.REMOVE_SERVICES] for n in _services_of(s)]
    created += [n for s in touched[Undo.RESTORE_SPECS] for n in s.args.get("create", [])]
    if created:
        undo.append(Step(K.REMOVE_SERVICES, "created", {"names": created}))
    for s in reversed(touched[Undo.REMOVE_OBJECT]):
        inverse = rule_of(s.kind).inverse
        if inverse is None:
            raise UpgradeError(f"no rule removes what a {s.kind} step creates")
        undo.append(Step(inverse, s.target))
    return undo


def _services_of(step: Step) -> list[str]:
    """The services a step creates or changes: its `services` or `replicas` (by name), else
    its target."""
    for key in ("services", "replicas"):
        if key in step.args:
            return list(step.args[key])
    return [step.target]


def _route_back(plan: Plan) -> list[Step]:
    """New requests back to the old chain, this upgrade's groups drained, the old table."""
    draining = _with_temp_groups_draining(plan)
    steps = [Step(K.ROUTE, "lb-old", {"table": draining},
                  note="new requests back to the previous chain")]
    for fe in draining["frontends"]:
        for group, g in fe["groups"].items():
            if g["state"] == "draining":
                steps.append(Step(K.DRAIN, f"lb-old-{fe['name']}",
                                  {"frontends": [fe["name"]], "group": group}))
    steps.append(Step(K.ROUTE, "lb-restore", {"table": plan.old_table}))
    return steps


def _with_temp_groups_draining(plan: Plan) -> dict[str, Any]:
    """The previous routing table, keeping this upgrade's groups as draining."""
    table = copy.deepcopy(plan.old_table) or {"frontends": []}
    # Every group any route step adds (a split plan switches one service at a time).
    extra: dict[str, dict[str, Any]] = {}
    for step in plan.steps:
        if step.kind is StepKind.ROUTE:
            for fe in step.args["table"]["frontends"]:
                for group, g in fe["groups"].items():
                    extra.setdefault(fe["name"], {}).setdefault(group, g)
    for fe in table["frontends"]:
        for group, g in extra.get(fe["name"], {}).items():
            if group not in fe["groups"]:
                fe["groups"][group] = {**g, "state": "draining"}
    return table
