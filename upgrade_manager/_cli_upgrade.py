"""`dans plan`, `dans upgrade`, `dans status`, `dans rollback`: parse, call `upgrade`, format.

Only click is imported at the top: the planner (networkx), the executor and the Docker SDK
load inside the commands, so `dans --help` and `dans upgrade --help` do not pay for them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from upgrade_manager import _cli_stack as cli_stack
from upgrade_manager.errors import DansError

if TYPE_CHECKING:
    from upgrade_manager import upgrade as um
    from upgrade_manager.gateway import Gateway
    from upgrade_manager.model import Plan, Step

__all__ = ["Progress", "format_plan", "plan_cmd", "plan_json", "rollback_cmd", "status_cmd",
           "upgrade_cmd"]

# The strategies of `upgrade_manager.plan.STRATEGIES`, repeated so that building the options
# does not import the planner (a unit test keeps the two equal).
STRATEGIES = ("dans", "rolling", "isolated", "delayed")


@contextmanager
def _gateway(registry_auth: bool = False) -> Iterator[Gateway]:
    from upgrade_manager.gateway import Gateway

    gw = Gateway.from_env()
    gw.registry_auth = registry_auth
    try:
        gw.require_manager()
        yield gw
    finally:
        gw.close()


def _options(files: tuple[str, ...], stack: str, **kw: Any) -> um.Options:
    from upgrade_manager import upgrade as um

    stdin_text = cli_stack.stdin_for(files)
    return um.Options(files=files, stack=stack, stdin_text=stdin_text, **kw)


def stack_options(fn: Any) -> Any:
    """The options every planning command shares, in the order `--help` shows them."""
    fn = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)
    fn = click.option("--allow-mixed", is_flag=True,
                      help="Run a plan that cannot keep the guarantee (a caller that cannot "
                      "be copied, a stateful service that must restart, changed services no "
                      "published port reaches): requests may then fail or mix versions.")(fn)
    fn = click.option("--lb-url", envvar="DANS_LB_URL",
                      help="Admin URL of the stack's LB, for an operator's own tunnel (token "
                      "from DANS_LB_TOKEN); default: through a helper on the LB's network.")(fn)
    fn = cli_stack.docker_deploy_options(fn)
    fn = click.option("--prune", is_flag=True,
                      help="Remove services and networks that the new file no longer has.")(fn)
    fn = click.option("--strategy", type=click.Choice(STRATEGIES), default="dans",
                      show_default=True,
                      help="dans: new chain beside the old, isolated by network; rolling: "
                      "what `docker stack deploy` does; isolated: split-half update (half the "
                      "instances serve while the other half is updated offline, then the LB "
                      "switches); delayed: delayed switch (instances updated offline one at a "
                      "time until half are new, switch, the rest one at a time). The last two "
                      "are the paper's baselines: they mix versions across dependent services.")(fn)
    fn = cli_stack.stack_name_options(fn)
    return cli_stack.compose_files_option(fn)


# `--json` event names: what a log pipeline or a dashboard keys on.
JSON_EVENTS = {"start": "step_started", "done": "step_finished", "failed": "step_failed",
               "info": "info"}


class Progress:
    """One line per step with the elapsed time; with --json one JSON object per line:
    `{"event": "step_started"|"step_finished"|"step_failed"|"info", "time": UNIX,
    "elapsed_s", "step": "kind:target", "kind", "target", "index", "total", "seconds",
    "message"}`; the command ends with one `finished` (or `failed`) event."""

    def __init__(self, as_json: bool) -> None:
        self.t0 = time.monotonic()
        self.as_json = as_json

    def __call__(self, event: str, step: Step | None, seconds: float, message: str) -> None:
        elapsed = time.monotonic() - self.t0
        if self.as_json:
            record: dict[str, Any] = {"event": JSON_EVENTS.get(event, event),
                                      "time": round(time.time(), 3),
                                      "elapsed_s": round(elapsed, 2)}
            if step is not None:
                record.update(step=step.key, kind=step.kind, target=step.target,
                              describe=step.describe())
            if event == "start" and "/" in message:
                index, _, total = message.partition("/")
                record.update(index=int(index), total=int(total))
            elif event in ("done", "failed"):
                record["seconds"] = round(seconds, 2)
            if message and event != "start":
                record["message"] = message
            click.echo(json.dumps(record), nl=True)
            sys.stdout.flush()
            return
        if event == "start" and step is not None:
            click.echo(f"[{elapsed:6.1f}s] {message} {step.describe()} ...")
        elif event == "done":
            click.echo(f"[{elapsed:6.1f}s]   ok ({seconds:.1f}s)")
        elif event == "failed":
            click.echo(f"[{elapsed:6.1f}s]   FAILED: {message}")
        else:
            click.echo(f"[{elapsed:6.1f}s] {message}")


def format_plan(plan: Plan) -> str:
    """The plan as a person reads it."""
    lines = [f"Stack {plan.stack}: strategy {plan.strategy}, generation {plan.generation}"]
    lines.append("")
    lines.append("Services:")
    for c in plan.changes:
        lines.append(f"  {c.short:<20} {c.kind:<9} {c.role:<11} replicas={c.replicas}")
        lines += [f"      {d}" for d in c.diffs[:20]]
        if len(c.diffs) > 20:
            lines.append(f"      ... and {len(c.diffs) - 20} more")
    lines.append("")
    lines.append("Dependencies (caller -> callee):")
    lines += [f"  {a} -> {b} ({kind}, {'declared' if declared else 'inferred'})"
              for a, b, kind, declared in plan.edges] or ["  (none)"]
    if plan.assumptions:
        lines.append("Assumed (nothing declares these calls; x-dans.calls narrows them):")
        lines += [f"  {a}" for a in plan.assumptions]
    if plan.levels:
        lines.append("")
        lines.append("Start order of the new chain (callees first; one level starts together):")
        lines += [f"  level {i}: {', '.join(level)}" for i, level in enumerate(plan.levels)]
    if plan.relays:
        lines.append("")
        lines.append("Relays on the generation network:")
        lines += [f"  {r.short} -> {r.target}, every TCP port"
                  + (f" (known: {', '.join(map(str, r.ports))})" if r.ports else "")
                  for r in plan.relays]
    lines.append("")
    lines.append(f"Steps ({len(plan.steps)}):")
    lines += [f"  {i:2}. {s.describe()}" for i, s in enumerate(plan.steps, 1)] or ["  (none)"]
    lines.append("")
    lines.append(f"Extra replicas during the upgrade: {plan.extra_replicas}")
    for w in plan.warnings:
        lines.append(f"WARNING: {w}")
    if plan.refusals:
        lines.append("")
        lines.append("REFUSED: this plan cannot keep the guarantee; `dans upgrade` runs it only "
                     "with --allow-mixed:")
        lines += [f"  - {r}" for r in plan.refusals]
    return "\n".join(lines)


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan for --json, without the stored specs."""
    data: dict[str, Any] = json.loads(plan.to_json())
    data.pop("old_specs", None)
    for step in data["steps"]:
        step["args"] = sorted(step["args"])  # names of the arguments, not whole specs
    return data


@click.command("plan")
@stack_options
def plan_cmd(files: tuple[str, ...], stack_arg: str | None, stack_option: str | None,
             with_registry_auth: bool, resolve_image: str | None, strategy: str, prune: bool,
             lb_url: str | None, allow_mixed: bool, as_json: bool) -> None:
    """Show what `dans upgrade` would do, changing nothing.

    Reads the running stack, translates the new file, and prints the services that change
    (with a per-field diff), the dependency graph, each changed service's role, the ordered
    steps and the extra replicas the upgrade needs. Exits 3 when `dans upgrade` would
    refuse the plan (the reasons are printed), unless --allow-mixed is given. As with docker
    stack deploy: `dans plan -c stack-v2.yml shop`.
    """
    stack = cli_stack.stack_name(stack_arg, stack_option)
    cli_stack.warn_resolve_image(resolve_image)
    del with_registry_auth  # a plan creates nothing, so it sends no credentials
    with _gateway() as gw:
        from upgrade_manager import upgrade as um  # after the checks: bad input answers fast

        plan, _ = um.plan_upgrade(gw, _options(files, stack, strategy=strategy, prune=prune,
                                               lb_url=lb_url))
    click.echo(json.dumps(plan_json(plan), indent=2) if as_json else format_plan(plan))
    if plan.refusals and not allow_mixed:
        raise click.exceptions.Exit(3)  # the plan is printed; the status says it is refused


@click.command("upgrade")
@stack_options
@click.option("--health-timeout", type=float, default=180.0, show_default=True,
              help="Seconds a new version may take to become healthy before rollback.")
@click.option("--drain-timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait for in-flight requests to finish on a version.")
def upgrade_cmd(files: tuple[str, ...], stack_arg: str | None, stack_option: str | None,
                with_registry_auth: bool, resolve_image: str | None, strategy: str,
                prune: bool, lb_url: str | None, allow_mixed: bool, as_json: bool,
                health_timeout: float, drain_timeout: float) -> None:
    """Upgrade a running stack to new Compose file(s) with no failed request.

    With the default strategy, changed services and their callers start at the new version
    beside the old ones on a new overlay network, the stack's LB moves new requests to
    them, the old chain drains, the canonical services converge in place, and everything
    temporary is removed. If a new version never becomes healthy the upgrade rolls back by
    itself. An interrupted upgrade resumes when the same command runs again.

    Every service that shares a network with a changed one may call it unless it declares
    `x-dans: {calls: [...]}`; such callers move with the chain. A plan that cannot keep the
    guarantee is refused with the reasons (see `dans plan`) unless --allow-mixed is given.
    As with docker stack deploy: `dans upgrade -c stack-v2.yml shop`.
    """
    stack = cli_stack.stack_name(stack_arg, stack_option)
    cli_stack.warn_resolve_image(resolve_image)
    from upgrade_manager import upgrade as um  # after the checks: bad input answers fast
    from upgrade_manager.executor import Timeouts

    opts = _options(files, stack, strategy=strategy, prune=prune, lb_url=lb_url,
                    allow_mixed=allow_mixed,
                    timeouts=Timeouts(healthy=health_timeout, drain=drain_timeout))
    with _gateway(with_registry_auth) as gw:
        t0 = time.monotonic()
        try:
            plan = um.run_upgrade(gw, opts, Progress(as_json))
        except DansError as exc:
            if as_json:
                click.echo(json.dumps({"event": "failed", "stack": stack,
                                       "seconds": round(time.monotonic() - t0, 1),
                                       "message": str(exc)}))
            raise
    summary = {"stack": stack, "strategy": strategy, "steps": len(plan.steps),
               "seconds": round(time.monotonic() - t0, 1), "warnings": list(plan.warnings),
               "extra_replicas": plan.extra_replicas}
    if as_json:
        click.echo(json.dumps({"event": "finished", **summary}))
    else:
        for w in plan.warnings:
            click.echo(f"WARNING: {w}")
        click.echo(f"Stack {stack} upgraded in {summary['seconds']} s.")


@click.command("status")
@cli_stack.stack_name_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(stack_arg: str | None, stack_option: str | None, as_json: bool) -> None:
    """Show a stack's services and its unfinished upgrade, if any (`dans status shop`)."""
    stack = cli_stack.stack_name(stack_arg, stack_option)

    with _gateway() as gw:
        from upgrade_manager import upgrade as um  # after the checks: bad input answers fast

        data = um.status(gw, stack)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["services"]:
        click.echo(f"Stack {stack} has no services.")
    for s in data["services"]:
        want = "global" if s["desired"] is None else s["desired"]
        click.echo(f"  {s['name']:<40} {s['running']}/{want}  {s['role']:<14} {s['image']}"
                   + (f"  update: {s['update']}" if s["update"] else ""))
    up = data["upgrade"]
    if up is None:
        click.echo("No upgrade in progress.")
    else:
        click.echo(f"Upgrade ({up['strategy']}, generation {up['generation']}): {up['status']}, "
                   f"{up['done']}/{up['steps']} steps done; next: {up['next']}")
        click.echo(f"  owner {up['owner']}, last heartbeat {up['heartbeat_age_s']} s ago"
                   + (" (stale: resume with `dans upgrade` or undo with `dans rollback`)"
                      if up["stale"] else ""))
        if up["message"]:
            click.echo(f"  {up['message']}")


@click.command("rollback")
@cli_stack.stack_name_options
@click.option("--lb-url", envvar="DANS_LB_URL", help="Admin URL of the stack's LB.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def rollback_cmd(stack_arg: str | None, stack_option: str | None, lb_url: str | None,
                 as_json: bool) -> None:
    """Undo a stack's unfinished or failed upgrade, with no failed request."""
    stack = cli_stack.stack_name(stack_arg, stack_option)
    from upgrade_manager import upgrade as um  # after the checks: bad input answers fast

    opts = um.Options(files=(), stack=stack, lb_url=lb_url)
    with _gateway() as gw:
        um.rollback(gw, opts, Progress(as_json))
    if not as_json:
        click.echo(f"Stack {stack} is back on its previous version.")
