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
from upgrade_manager._compose import compose_input
from upgrade_manager._lb import lb_errors
from upgrade_manager.admin_channel import AdminChannel
from upgrade_manager.deploy import (
    DeployResult,
    deploy_stack,
    refuse_plain_networks,
    remove_old_content,
    remove_old_tokens,
)
from upgrade_manager.errors import (
    DansError,
    LBError,
    NotFound,
    PlanError,
    UpgradeError,
    UpgradeLocked,
)
from upgrade_manager.executor import Executor, Timeouts, rollback_steps
from upgrade_manager.gateway import STACK_LABEL, Gateway
from upgrade_manager.lb_image import ensure_lb_image, source_tag
from upgrade_manager.lb_progress import LBProgress
from upgrade_manager.lb_replicas import ReplicatedAdmin, parse_replicas, refuse_unplaceable
from upgrade_manager.managed import (
    ADMIN_PORT_LABEL,
    MESH_LABEL,
    ROLE_LABEL,
    TOKEN_ROLE,
    LBSettings,
    ManagedStack,
    lb_service_name,
    manage,
    token_secret_name,
    token_secret_ref,
)
from upgrade_manager.model import (
    GENERATION_LABEL,
    ROUTED_STRATEGIES,
    Plan,
    RunningStack,
    Step,
    StepKind,
)
from upgrade_manager.plan import fingerprint, make_plan
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
    lb_replicas: str | None = None  # "N" or "global"; None: the running LB's, else 1
    encrypt: bool = False  # create the stack's overlay networks encrypted
    mesh: bool = False  # waypoints for every called service (kept once the LB says so)
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
        # dans's own secrets (the LB token) are not the file's: plans never remove them.
        secrets=frozenset(s["Spec"]["Name"] for s in gw.secrets(stack)
                          if ROLE_LABEL not in (s["Spec"].get("Labels") or {})),
    )


def lb_settings(running: RunningStack, opts: Options, *, rotate: bool = False) -> LBSettings:
    """The LB settings: the running LB's token secret, admin port and image unless
    overridden; a new token secret's name for a new LB (or with `rotate`)."""
    lb = running.services.get(lb_service_name(opts.stack))
    token_secret = token_secret_name(opts.stack, secrets.token_hex(4))
    image = opts.lb_image or os.environ.get("DANS_LB_IMAGE") or source_tag()
    admin_port = opts.lb_admin_port or 9900
    if lb is not None:
        ref = token_secret_ref(lb)
        if ref is not None and not rotate:
            token_secret = str(ref["SecretName"])
        image = opts.lb_image or lb["TaskTemplate"]["ContainerSpec"]["Image"]
        admin_port = opts.lb_admin_port or int(lb.get("Labels", {}).get(ADMIN_PORT_LABEL, 9900))
    mesh = opts.mesh or (lb is not None and (lb.get("Labels") or {}).get(MESH_LABEL) == "all")
    return LBSettings(image=image, token_secret=token_secret, admin_port=admin_port,
                      replicas=parse_replicas(opts.lb_replicas, lb), encrypt=opts.encrypt,
                      mesh=mesh)


def ensure_token_secret(gw: Gateway, stack: str, name: str) -> bool:
    """Create the LB's token secret `name` with a fresh random token unless it exists.

    The token is made here and goes straight into the swarm's encrypted secret store: dans
    keeps no copy, and no config, label, environment variable or plan ever holds it.
    """
    try:
        gw.inspect_secret(name)
        return False
    except NotFound:
        pass
    gw.create_secret({"Name": name, "Labels": {STACK_LABEL: stack, ROLE_LABEL: TOKEN_ROLE},
                      "Data": secrets.token_urlsafe(32).encode()})
    return True


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
    """An admin client for the stack's edge LB; close it when done.

    By default through an `AdminChannel` (a helper on the LB's network, removed on close):
    the admin API has no published port. With `url` (an operator's own tunnel), plain HTTP
    to it with the token from $DANS_LB_TOKEN.
    """
    try:
        gw.inspect_service(lb_service_name(stack))
    except DansError:
        raise PlanError(f"stack {stack} has no dans LB; deploy it with `dans deploy` first") \
            from None
    if url:
        return AdminClient(url, os.environ.get("DANS_LB_TOKEN", ""))
    channel = AdminChannel(gw, stack)
    channel.start()  # the helper starts while the caller does other work
    return ReplicatedAdmin(channel)


class LBSession:
    """One admin client for a whole dans session (plan, run, rollback), made on first use.

    One helper per session keeps every route and drain call a few milliseconds; `close`
    removes it, and callers close in `finally`.
    """

    def __init__(self, gw: Gateway, opts: Options) -> None:
        self.gw = gw
        self.opts = opts
        self._client: AdminClient | None = None
        self._ready = False

    def client(self) -> AdminClient:
        """The admin client (its helper created, not waited for)."""
        if self._client is None:
            self._client = lb_admin(self.gw, self.opts.stack, self.opts.lb_url)
        return self._client

    def ready(self) -> AdminClient:
        """The admin client, once the LB answers."""
        client = self.client()
        if not self._ready:
            with lb_errors():
                client.wait_ready(timeout=30)
            self._ready = True
        return client

    def close(self) -> None:
        """Close the client and remove its helper."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._ready = False


def _check_lb_token(running: RunningStack, stack: str) -> None:
    lb = running.services[lb_service_name(stack)]
    if token_secret_ref(lb) is None:
        raise PlanError(
            f"the LB of stack {stack} keeps its admin token in its environment (an older "
            f"dans deployed it); run `dans deploy` once with the stack's current file to move "
            f"the token into a Docker secret and close the admin port, then upgrade"
        )


def plan_upgrade(gw: Gateway, opts: Options, session: LBSession | None = None,
                 ) -> tuple[Plan, ManagedStack]:
    """Plan moving the running stack to the files in `opts`; no change is made."""
    project = load(opts)  # bad input is reported before anything about the stack
    running = read_running(gw, opts.stack)
    if lb_service_name(opts.stack) not in running.services:
        if not running.services:
            raise PlanError(f"stack {opts.stack} does not exist; create it with `dans deploy`")
        raise PlanError(f"stack {opts.stack} is not managed by dans (no edge LB); "
                        f"redeploy it once with `dans deploy` to put it behind the LB")
    _check_lb_token(running, opts.stack)
    desired = desired_stack(opts, lb_settings(running, opts), project)
    refuse_unplaceable(gw.schedulable_nodes(), desired.specs.services[desired.lb_service])
    old_table = None
    if opts.strategy in ROUTED_STRATEGIES:
        own = session is None
        session = session or LBSession(gw, opts)
        try:
            with lb_errors():
                old_table = session.client().routes().to_dict()
        except LBError:
            old_table = desired.routing_table().to_dict()
        finally:
            if own:
                session.close()
    generation = f"{int(time.time()) % 100000:05d}"
    plan = make_plan(running, desired, strategy=opts.strategy, prune=opts.prune,
                     generation=generation, old_table=old_table)
    return plan, desired


def run_upgrade(gw: Gateway, opts: Options, report: Reporter) -> Plan:
    """Plan and execute an upgrade, or resume the recorded one; roll back on failure."""
    session = LBSession(gw, opts)
    try:
        return _run_upgrade(gw, opts, report, session)
    finally:
        session.close()


def _run_upgrade(gw: Gateway, opts: Options, report: Reporter, session: LBSession) -> Plan:
    store = StateStore(gw, opts.stack)
    existing = store.load()
    if existing is not None:
        plan, state, desired = _resume_state(gw, store, existing, opts, report)
    else:
        plan, desired = plan_upgrade(gw, opts, session)
        check_refusals(plan, opts.allow_mixed)
        if plan.is_noop:
            report("info", None, 0.0, "nothing to do: the stack already matches the file")
            return plan
        state = store.create(plan)
    # The plan records secrets by name and digest only; their content comes from the files.
    secret_data = {n: s["Data"] for n, s in desired.specs.secrets.items() if "Data" in s}
    progress = LBProgress(session.ready, plan, opts.stack, report)
    executor = Executor(gw, session.ready, report, opts.timeouts, secret_data=secret_data,
                        on_step=progress.step)
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
        _rollback(gw, store, opts, report, session, before=progress.before)
        raise UpgradeError(f"upgrade failed and was rolled back: {exc}") from exc
    store.finish()
    progress.finish("done")
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
                  report: Reporter) -> tuple[Plan, UpgradeState, ManagedStack]:
    if existing.status in ("rolling-back", "failed"):
        raise UpgradeError(
            f"the last upgrade of stack {opts.stack} failed and is not rolled back yet "
            f"({existing.message or existing.status}); run `dans rollback --stack {opts.stack}`"
        )
    state = store.take_over(existing)
    desired = desired_stack(opts, lb_settings(read_running(gw, opts.stack), opts))
    changed = _changed_secrets(state.plan, desired)
    if changed:
        store.release()
        raise UpgradeError(
            f"the content of secret {', '.join(changed)} changed since the unfinished upgrade "
            f"of stack {opts.stack} was planned (the plan keeps only its digest); resume with "
            f"the files as they were, or undo it with `dans rollback --stack {opts.stack}`"
        )
    if fingerprint(desired) != state.plan.fingerprint:
        store.release()
        raise UpgradeError(
            f"stack {opts.stack} has an unfinished upgrade to a different file; resume it "
            f"with that file or undo it with `dans rollback --stack {opts.stack}`"
        )
    report("info", None, 0.0, f"resuming the unfinished upgrade at step "
           f"{state.done + 1}/{len(state.plan.steps)}")
    return state.plan, state, desired


def _changed_secrets(plan: Plan, desired: ManagedStack) -> list[str]:
    """Secrets the plan creates whose content the files no longer give (by logical name).

    Secret names carry a digest of their content, so changed content is a name the desired
    stack lacks; the step's logical name says which secret of the file it was.
    """
    have = set(desired.specs.secrets)
    return sorted({str(s.args.get("logical") or s.target) for s in plan.steps
                   if s.kind is StepKind.CREATE_SECRET and s.target not in have})


def rollback(gw: Gateway, opts: Options, report: Reporter) -> Plan:
    """Undo the recorded, unfinished upgrade of a stack."""
    store = StateStore(gw, opts.stack)
    existing = store.load()
    if existing is None:
        raise UpgradeError(f"stack {opts.stack} has no unfinished upgrade to roll back")
    store.take_over(existing)
    session = LBSession(gw, opts)
    try:
        _rollback(gw, store, opts, report, session)
    finally:
        session.close()
    return existing.plan


def _rollback(gw: Gateway, store: StateStore, opts: Options, report: Reporter,
              session: LBSession, before: str | None = None) -> None:
    state = store.update(status="rolling-back")
    try:
        steps = rollback_steps(state.plan, state.done)
    except UpgradeError:
        store.update(status="running")
        store.release()
        raise
    progress = LBProgress(session.ready, state.plan, opts.stack, report, steps=steps,
                          before=before)
    executor = Executor(gw, session.ready, report, opts.timeouts, on_step=progress.step)
    try:
        executor.run(steps, 0, lambda n: None)
    except DansError:
        store.update(status="failed", message="rollback failed; run `dans rollback` again")
        store.release()
        raise
    store.finish()
    progress.finish("rolled-back")


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
           rotate_token: bool = False) -> DeployResult:
    """Create or update a stack from Compose files, behind its edge LB unless `lb` is False.

    Without the LB this is exactly `docker stack deploy --resolve-image never`. With it, the
    LB image is built when missing, the LB's token secret is created when missing (a new one
    with `rotate_token`: the LB restarts with it) and the stack is rewritten by
    `managed.manage`. Refuses while an upgrade of the stack is unfinished.
    """
    specs = specs_of(load(opts), opts.stack)
    if lb:
        state = StateStore(gw, opts.stack).load()
        if state is not None:
            raise UpgradeError(
                f"stack {opts.stack} has an unfinished upgrade ({state.status}); finish it with "
                f"`dans upgrade` or undo it with `dans rollback --stack {opts.stack}` first"
            )
        settings = lb_settings(read_running(gw, opts.stack), opts, rotate=rotate_token)
        specs = manage(specs, settings).specs  # every refusal comes before any change
        refuse_unplaceable(gw.schedulable_nodes(), specs.services[lb_service_name(opts.stack)])
        if opts.encrypt:
            refuse_plain_networks(gw, specs)
        # On a cluster the LB image comes from a registry (`--lb-image REGISTRY/...`): a copy
        # built here would exist on this manager only, so build only what no registry holds.
        if not gw.image_exists(settings.image) and not gw.image_in_registry(settings.image):
            say(f"Building the LB image {settings.image} (a minute or two the first time)")
            ensure_lb_image(settings.image, gateway=gw)
        if ensure_token_secret(gw, opts.stack, settings.token_secret):
            say(f"Creating secret {settings.token_secret} (the LB's admin token)")
    result = deploy_stack(gw, specs, prune=opts.prune, progress=say)
    if wait:
        say(f"Waiting for {len(specs.services)} services")
        gw.wait_all_converged(sorted(specs.services), timeout=timeout)
        say("All services converged")
        if lb:
            remove_old_content(gw, specs, say)
            remove_old_tokens(gw, specs.stack, settings.token_secret, say)
    return result
