"""The upgrade manager's facade: read the stack, plan, run, resume, roll back, report.

This is the I/O edge around the pure planner: it reads the running stack through the
gateway, makes the desired stack with the translator and `managed`, holds the durable
state (lock, progress, heartbeat) and drives the executor. The CLI calls only this module.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from compose_translator import ComposeProject, StackSpecs, load_project, translate
from lb.client import AdminClient
from lb.image import ensure_lb_image, source_tag
from upgrade_manager._compose import compose_input
from upgrade_manager.deploy import DeployResult, deploy_stack
from upgrade_manager.errors import (
    Conflict,
    DansError,
    LBError,
    PlanError,
    UpgradeError,
    UpgradeLocked,
)
from upgrade_manager.executor import Executor, Timeouts, rollback_steps
from upgrade_manager.gateway import Gateway
from upgrade_manager.managed import (
    ADMIN_PORT_LABEL,
    LOGICAL_NAME_LABEL,
    ROLE_LABEL,
    LBSettings,
    ManagedStack,
    lb_service_name,
    manage,
)
from upgrade_manager.plan import (
    GENERATION_LABEL,
    Plan,
    RunningStack,
    Step,
    fingerprint,
    make_plan,
)
from upgrade_manager.state import StateStore, UpgradeState

__all__ = [
    "Options",
    "Reporter",
    "deploy",
    "desired_stack",
    "lb_admin",
    "plan_upgrade",
    "read_running",
    "rollback",
    "run_upgrade",
    "status",
]


# (event, step, seconds, message): event is start | done | failed | info
Reporter = Callable[[str, Step | None, float, str], None]


@dataclass(frozen=True)
class Options:
    """What the user chose on the command line."""

    files: tuple[str, ...]
    stack: str
    environ: Mapping[str, str] | None = None
    stdin_text: str | bytes | None = None
    lb_image: str | None = None
    lb_admin_port: int | None = None
    lb_url: str | None = None
    strategy: str = "dans"
    prune: bool = False
    allow_mixed: bool = False  # run a plan that cannot keep the guarantee (its refusals)
    timeouts: Timeouts = field(default_factory=Timeouts)


def read_running(gw: Gateway, stack: str) -> RunningStack:
    """The stack as it runs now (services, networks, configs, secrets)."""
    services = {s["Spec"]["Name"]: s["Spec"] for s in gw.services(stack)}
    return RunningStack(
        stack=stack,
        services=services,
        network_names=gw.network_names(),
        networks=frozenset(n["Name"] for n in gw.networks(stack)),
        configs=frozenset(c["Spec"]["Name"] for c in gw.configs(stack)
                          if ROLE_LABEL not in (c["Spec"].get("Labels") or {})),
        secrets=frozenset(s["Spec"]["Name"] for s in gw.secrets(stack)),
    )


def lb_settings(running: RunningStack, opts: Options) -> LBSettings:
    """The LB settings: the running LB's token, admin port and image unless overridden."""
    lb = running.services.get(lb_service_name(opts.stack))
    token = secrets.token_urlsafe(24)
    image = opts.lb_image or os.environ.get("DANS_LB_IMAGE") or source_tag()
    admin_port = opts.lb_admin_port or 9900
    if lb is not None:
        env = _env(lb)
        token = env.get("DANS_LB_TOKEN", token)
        image = opts.lb_image or lb["TaskTemplate"]["ContainerSpec"]["Image"]
        admin_port = opts.lb_admin_port or int(lb.get("Labels", {}).get(ADMIN_PORT_LABEL, 9900))
    return LBSettings(image=image, token=token, admin_port=admin_port)


def _env(spec: Mapping[str, Any]) -> dict[str, str]:
    pairs = spec["TaskTemplate"]["ContainerSpec"].get("Env") or []
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def desired_stack(opts: Options, settings: LBSettings,
                  project: ComposeProject | None = None) -> ManagedStack:
    """Translate the Compose files (or the project already loaded from them) and put the
    stack behind its edge LB."""
    if project is None:
        project = load(opts)
    return manage(specs_of(project, opts.stack), settings)


def load(opts: Options) -> ComposeProject:
    """Read, interpolate and validate the Compose files named in `opts`."""
    with compose_input():
        return load_project(list(opts.files), environ=opts.environ, stdin_text=opts.stdin_text)


def specs_of(project: ComposeProject, stack: str) -> StackSpecs:
    """The specs `docker stack deploy` would create for `project` as `stack`."""
    with compose_input():
        return translate(project, stack)


def lb_admin(gw: Gateway, stack: str, url: str | None = None) -> AdminClient:
    """An admin client for the stack's edge LB (URL from the option or its published port)."""
    try:
        lb = gw.inspect_service(lb_service_name(stack))["Spec"]
    except DansError:
        raise PlanError(f"stack {stack} has no dans LB; deploy it with `dans deploy` first") \
            from None
    port = int((lb.get("Labels") or {}).get(ADMIN_PORT_LABEL, 9900))
    return AdminClient(url or f"http://127.0.0.1:{port}", _env(lb).get("DANS_LB_TOKEN", ""))


def plan_upgrade(gw: Gateway, opts: Options) -> tuple[Plan, ManagedStack]:
    """Plan moving the running stack to the files in `opts`; no change is made."""
    project = load(opts)  # bad input is reported before anything about the stack
    running = read_running(gw, opts.stack)
    if lb_service_name(opts.stack) not in running.services:
        if not running.services:
            raise PlanError(f"stack {opts.stack} does not exist; create it with `dans deploy`")
        raise PlanError(f"stack {opts.stack} is not managed by dans (no edge LB); "
                        f"redeploy it once with `dans deploy` to put it behind the LB")
    desired = desired_stack(opts, lb_settings(running, opts), project)
    old_table = None
    if opts.strategy == "dans":
        try:
            old_table = lb_admin(gw, opts.stack, opts.lb_url).routes().to_dict()
        except LBError:
            old_table = desired.routing_table().to_dict()
    generation = f"{int(time.time()) % 100000:05d}"
    plan = make_plan(running, desired, strategy=opts.strategy, prune=opts.prune,
                     generation=generation, old_table=old_table)
    return plan, desired


def run_upgrade(gw: Gateway, opts: Options, report: Reporter) -> Plan:
    """Plan and execute an upgrade, or resume the recorded one; roll back on failure."""
    store = StateStore(gw, opts.stack)
    existing = store.load()
    if existing is not None:
        plan, state = _resume_state(gw, store, existing, opts, report)
    else:
        plan, _ = plan_upgrade(gw, opts)
        check_refusals(plan, opts.allow_mixed)
        if plan.is_noop:
            report("info", None, 0.0, "nothing to do: the stack already matches the file")
            return plan
        state = store.create(plan)
    executor = Executor(gw, lambda: _ready_lb(gw, opts), report, opts.timeouts)
    try:
        executor.run(plan.steps, state.done, lambda n: store.update(done=n))
    except UpgradeLocked:
        store.release()
        raise
    except KeyboardInterrupt:
        store.abandon()
        raise UpgradeError(
            f"interrupted; the upgrade is unfinished and its progress is recorded: run the same "
            f"`dans upgrade` again to resume, or `dans rollback --stack {opts.stack}`"
        ) from None
    except DansError as exc:
        store.update(status="failed", message=str(exc))
        report("info", None, 0.0, f"upgrade failed: {exc}; rolling back")
        _rollback(gw, store, opts, report)
        raise UpgradeError(f"upgrade failed and was rolled back: {exc}") from exc
    store.finish()
    return plan


def check_refusals(plan: Plan, allow_mixed: bool) -> None:
    """Refuse a plan that cannot keep the guarantee, unless the user accepted that."""
    if plan.refusals and not allow_mixed:
        raise PlanError(
            "this upgrade cannot keep dans's guarantee (zero failed, zero mixed-version "
            "requests):\n  - " + "\n  - ".join(plan.refusals)
            + "\nFix the stack as suggested, or pass --allow-mixed to run it anyway "
            "(`dans plan --allow-mixed` shows what would run)."
        )


def _resume_state(gw: Gateway, store: StateStore, existing: UpgradeState, opts: Options,
                  report: Reporter) -> tuple[Plan, UpgradeState]:
    if existing.status in ("rolling-back", "failed"):
        raise UpgradeError(
            f"the last upgrade of stack {opts.stack} failed and is not rolled back yet "
            f"({existing.message or existing.status}); run `dans rollback --stack {opts.stack}`"
        )
    state = store.take_over(existing)
    desired = desired_stack(opts, lb_settings(read_running(gw, opts.stack), opts))
    if fingerprint(desired) != state.plan.fingerprint:
        store.release()
        raise UpgradeError(
            f"stack {opts.stack} has an unfinished upgrade to a different file; resume it "
            f"with that file or undo it with `dans rollback --stack {opts.stack}`"
        )
    report("info", None, 0.0, f"resuming the unfinished upgrade at step "
           f"{state.done + 1}/{len(state.plan.steps)}")
    return state.plan, state


def _ready_lb(gw: Gateway, opts: Options) -> AdminClient:
    client = lb_admin(gw, opts.stack, opts.lb_url)
    client.wait_ready(timeout=30)
    return client


def rollback(gw: Gateway, opts: Options, report: Reporter) -> Plan:
    """Undo the recorded, unfinished upgrade of a stack."""
    store = StateStore(gw, opts.stack)
    existing = store.load()
    if existing is None:
        raise UpgradeError(f"stack {opts.stack} has no unfinished upgrade to roll back")
    store.take_over(existing)
    _rollback(gw, store, opts, report)
    return existing.plan


def _rollback(gw: Gateway, store: StateStore, opts: Options, report: Reporter) -> None:
    state = store.update(status="rolling-back")
    try:
        steps = rollback_steps(state.plan, state.done)
    except UpgradeError:
        store.update(status="running")
        store.release()
        raise
    executor = Executor(gw, lambda: _ready_lb(gw, opts), report, opts.timeouts)
    try:
        executor.run(steps, 0, lambda n: None)
    except DansError:
        store.update(status="failed", message="rollback failed; run `dans rollback` again")
        store.release()
        raise
    store.finish()


def status(gw: Gateway, stack: str) -> dict[str, Any]:
    """The stack's services with their state, and the recorded upgrade if any."""
    store = StateStore(gw, stack)
    state = store.load()
    services = []
    for svc in sorted(gw.services(stack), key=lambda s: s["Spec"]["Name"]):
        name = svc["Spec"]["Name"]
        st = gw.service_state(name)
        labels = svc["Spec"].get("Labels") or {}
        services.append({
            "name": name,
            "image": svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
            "running": st.running,
            "desired": st.desired,
            "update": st.update_state,
            "role": labels.get(ROLE_LABEL) or ("temporary" if GENERATION_LABEL in labels
                                                else "service"),
        })
    out: dict[str, Any] = {"stack": stack, "services": services, "upgrade": None}
    if state is not None:
        steps = state.plan.steps
        out["upgrade"] = {
            "status": state.status,
            "strategy": state.plan.strategy,
            "generation": state.plan.generation,
            "done": state.done,
            "steps": len(steps),
            "next": steps[state.done].describe() if state.done < len(steps) else None,
            "owner": state.owner,
            "heartbeat_age_s": round(time.time() - state.heartbeat, 1),
            "stale": state.stale,
            "message": state.message,
        }
    return out



def deploy(gw: Gateway, opts: Options, *, lb: bool = True, wait: bool = False,
           timeout: float = 300.0, say: Callable[[str], None] = lambda _m: None,
           ) -> DeployResult:
    """Create or update a stack from Compose files, behind its edge LB unless `lb` is False.

    Without the LB this is exactly `docker stack deploy --resolve-image never`. With it, the
    LB image is built when missing and the stack is rewritten by `managed.manage`. Refuses
    while an upgrade of the stack is unfinished.
    """
    specs = specs_of(load(opts), opts.stack)
    if lb:
        state = StateStore(gw, opts.stack).load()
        if state is not None:
            raise UpgradeError(
                f"stack {opts.stack} has an unfinished upgrade ({state.status}); finish it with "
                f"`dans upgrade` or undo it with `dans rollback --stack {opts.stack}` first"
            )
        settings = lb_settings(read_running(gw, opts.stack), opts)
        # On a cluster the LB image comes from a registry (`--lb-image REGISTRY/...`): a copy
        # built here would exist on this manager only, so build only what no registry holds.
        if not gw.image_exists(settings.image) and not gw.image_in_registry(settings.image):
            say(f"Building the LB image {settings.image} (a minute or two the first time)")
            ensure_lb_image(settings.image, gateway=gw)
        specs = manage(specs, settings).specs
    result = deploy_stack(gw, specs, prune=opts.prune, progress=say)
    if wait:
        say(f"Waiting for {len(specs.services)} services")
        gw.wait_all_converged(sorted(specs.services), timeout=timeout)
        say("All services converged")
        if lb:
            _remove_old_content(gw, specs, say)
    return result


def _remove_old_content(gw: Gateway, specs: StackSpecs, say: Callable[[str], None]) -> None:
    """Remove the stack's content-addressed configs and secrets that no spec names now."""
    for kind, listed, wanted, remove in (
        ("config", gw.configs(specs.stack), specs.configs, gw.remove_config),
        ("secret", gw.secrets(specs.stack), specs.secrets, gw.remove_secret),
    ):
        for obj in listed:
            name = obj["Spec"]["Name"]
            if LOGICAL_NAME_LABEL in (obj["Spec"].get("Labels") or {}) and name not in wanted:
                try:
                    remove(name, missing_ok=True)
                    say(f"Removed {kind} {name} (older content)")
                except Conflict:
                    say(f"Kept {kind} {name}: a service still uses it")
