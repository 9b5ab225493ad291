"""`dans translate` and `dans deploy`: Compose files -> Swarm specs, and applying them.

Only click is imported at the top: the translator (yaml, jsonschema) and the Docker SDK load
inside the commands, so `dans --help` does not pay for them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import click

from upgrade_manager._cli_stack import (
    compose_files_option,
    docker_deploy_options,
    stack_name,
    stack_name_options,
    stdin_for,
    warn_resolve_image,
)
from upgrade_manager._compose import compose_input
from upgrade_manager.model import text_data

if TYPE_CHECKING:
    from compose_translator import StackSpecs

__all__ = ["deploy_cmd", "specs_to_dict", "translate_cmd"]

_NAME_HINT = " (or set 'name:' in the file)"


def specs_to_dict(specs: StackSpecs) -> dict[str, Any]:
    """StackSpecs as plain JSON-able data (config and secret Data in base64, as the API)."""

    def objects(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, spec in found.items():
            out[name] = text_data(spec)
        return out

    return {
        "stack": specs.stack,
        "services": specs.services,
        "networks": specs.networks,
        "external_networks": specs.external_networks,
        "configs": objects(specs.configs),
        "secrets": objects(specs.secrets),
        "short_names": specs.short_names,
        "extensions": specs.extensions,
        "dependencies": [{"source": d.source, "target": d.target, "kind": d.kind,
                          "declared": d.declared} for d in specs.dependencies],
        "warnings": specs.warnings,
    }


def _load(files: tuple[str, ...], stack_arg: str | None, stack_option: str | None) -> StackSpecs:
    from compose_translator import load_project, translate

    stdin_text = stdin_for(files)
    with compose_input():
        project = load_project(list(files), stdin_text=stdin_text)
    name = stack_name(stack_arg, stack_option, project.name, default_hint=_NAME_HINT)
    with compose_input():
        specs = translate(project, name)
    for warning in specs.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return specs


@click.command("translate")
@compose_files_option
@stack_name_options
@click.option("--format", "fmt", type=click.Choice(["json", "yaml"]), default="json",
              show_default=True, help="Output format.")
def translate_cmd(files: tuple[str, ...], stack_arg: str | None, stack_option: str | None,
                  fmt: str) -> None:
    """Print the Swarm specs `docker stack deploy` would create for the Compose files.

    The stack name is STACK or --stack, else the file's top-level 'name'.
    """
    data = specs_to_dict(_load(files, stack_arg, stack_option))
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), nl=False)


@click.command("deploy")
@compose_files_option
@stack_name_options
@click.option("--prune", is_flag=True, help="Remove the stack's services no longer in the files.")
@docker_deploy_options
@click.option("--no-lb", is_flag=True,
              help="Deploy exactly like `docker stack deploy`, without the dans edge LB "
                   "(such a stack cannot be upgraded by `dans upgrade`).")
@click.option("--lb-image", help="Image of the edge LB (default: dans-lb:VERSION, built when "
                                 "missing; an existing LB keeps its image).")
@click.option("--lb-admin-port", type=int,
              help="Port of the LB's admin API inside the stack's edge network; it is never "
                   "published (default 9900, or the LB's own).")
@click.option("--lb-replicas", metavar="N|global",
              help="LB tasks: a number, or 'global' for one per node (default 1, or the LB's "
                   "own); every routing change reaches every replica.")
@click.option("--encrypt", is_flag=True,
              help="Create the stack's overlay networks encrypted (Swarm's IPsec between "
                   "nodes), so the admin traffic to the LB is encrypted too.")
@click.option("--mesh", is_flag=True,
              help="Put a dans waypoint in front of every service another service may call "
                   "(per-hop metrics; kept by later deploys and upgrades).")
@click.option("--rotate-lb-token", is_flag=True,
              help="Give the LB a new admin token (a new Docker secret); the LB restarts.")
@click.option("--wait", is_flag=True, help="Wait until every service has converged.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait per service with --wait.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def deploy_cmd(files: tuple[str, ...], stack_arg: str | None, stack_option: str | None,
               prune: bool, with_registry_auth: bool, resolve_image: str | None, no_lb: bool,
               lb_image: str | None, lb_admin_port: int | None, lb_replicas: str | None,
               encrypt: bool, mesh: bool, rotate_lb_token: bool,
               wait: bool, timeout: float, as_json: bool) -> None:
    """Create or update a stack from Compose files.

    By default the stack's published ports belong to a dans edge LB service
    (STACK_dans-lb) that proxies to the services which declared them, so that `dans upgrade`
    can later move traffic between versions. With --no-lb the result is exactly what
    `docker stack deploy --resolve-image never` creates.

    As with docker: `dans deploy -c stack.yml shop`; `-f FILE --stack NAME` is the same.
    Without a stack name the file's top-level 'name' is used.
    """
    stdin_text = stdin_for(files)
    default = None
    if not (stack_arg or stack_option):
        from compose_translator import load_project

        with compose_input():
            default = load_project(list(files), stdin_text=stdin_text).name
    name = stack_name(stack_arg, stack_option, default, default_hint=_NAME_HINT)
    warn_resolve_image(resolve_image)
    # After the checks, so that bad input answers without loading the engine's side.
    from upgrade_manager.deploy import timed
    from upgrade_manager.gateway import Gateway
    from upgrade_manager.upgrade import Options, deploy

    opts = Options(files=files, stack=name, stdin_text=stdin_text, lb_image=lb_image,
                   lb_admin_port=lb_admin_port, lb_replicas=lb_replicas, encrypt=encrypt,
                   prune=prune, mesh=mesh)
    say = timed(lambda line: click.echo(line, err=as_json))
    gw = Gateway.from_env()
    gw.registry_auth = with_registry_auth
    try:
        gw.require_manager()
        result = deploy(gw, opts, lb=not no_lb, wait=wait, timeout=timeout, say=say,
                        rotate_token=rotate_lb_token)
    finally:
        gw.close()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), indent=2))
    else:
        for warning in result.warnings:
            click.echo(f"Warning: {warning}", err=True)
