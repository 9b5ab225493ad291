"""`dans translate` and `dans deploy`: Compose files -> Swarm specs, and applying them."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import click
import yaml

from compose_translator import StackSpecs, load_project, translate
from upgrade_manager.deploy import timed
from upgrade_manager.errors import ComposeError

__all__ = ["translate_cmd", "deploy_cmd", "specs_to_dict"]

_FILES = click.option("-f", "--file", "files", multiple=True, required=True, metavar="FILE",
                      help="Compose file; repeat to merge (later files override); '-' is stdin.")


def specs_to_dict(specs: StackSpecs) -> dict[str, Any]:
    """StackSpecs as plain JSON-able data (config and secret Data in base64, as the API)."""

    def objects(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, spec in found.items():
            spec = dict(spec)
            if isinstance(spec.get("Data"), bytes):
                spec["Data"] = base64.b64encode(spec["Data"]).decode("ascii")
            out[name] = spec
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


def _load(files: tuple[str, ...], stack: str | None) -> StackSpecs:
    stdin_text = sys.stdin.read() if "-" in files else None
    project = load_project(list(files), stdin_text=stdin_text)
    name = stack or project.name
    if not name:
        raise ComposeError("no stack name: pass --stack NAME (or set 'name:' in the file)")
    specs = translate(project, name)
    for warning in specs.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return specs


@click.command("translate")
@_FILES
@click.option("-s", "--stack", help="Stack name (default: the file's top-level 'name').")
@click.option("--format", "fmt", type=click.Choice(["json", "yaml"]), default="json",
              show_default=True, help="Output format.")
def translate_cmd(files: tuple[str, ...], stack: str | None, fmt: str) -> None:
    """Print the Swarm specs `docker stack deploy` would create for the Compose files."""
    data = specs_to_dict(_load(files, stack))
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), nl=False)


@click.command("deploy")
@_FILES
@click.option("-s", "--stack", help="Stack name (default: the file's top-level 'name').")
@click.option("--prune", is_flag=True, help="Remove the stack's services no longer in the files.")
@click.option("--no-lb", is_flag=True,
              help="Deploy exactly like `docker stack deploy`, without the dans edge LB "
                   "(such a stack cannot be upgraded by `dans upgrade`).")
@click.option("--lb-image", help="Image of the edge LB (default: dans-lb:VERSION, built when "
                                 "missing; an existing LB keeps its image).")
@click.option("--lb-admin-port", type=int,
              help="Published port of the LB's admin API (default 9900, or the LB's own).")
@click.option("--wait", is_flag=True, help="Wait until every service has converged.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait per service with --wait.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def deploy_cmd(files: tuple[str, ...], stack: str | None, prune: bool, no_lb: bool,
               lb_image: str | None, lb_admin_port: int | None, wait: bool,
               timeout: float, as_json: bool) -> None:
    """Create or update a stack from Compose files.

    By default the stack's published ports belong to a dans edge LB service
    (STACK_dans-lb) that proxies to the services which declared them, so that `dans upgrade`
    can later move traffic between versions. With --no-lb the result is exactly what
    `docker stack deploy --resolve-image never` creates.
    """
    from upgrade_manager.gateway import Gateway
    from upgrade_manager.upgrade import Options, deploy

    stdin_text = sys.stdin.read() if "-" in files else None
    name = stack or load_project(list(files), stdin_text=stdin_text).name
    if not name:
        raise ComposeError("no stack name: pass --stack NAME (or set 'name:' in the file)")
    opts = Options(files=files, stack=name, stdin_text=stdin_text, lb_image=lb_image,
                   lb_admin_port=lb_admin_port, prune=prune)
    say = timed(lambda line: click.echo(line, err=as_json))
    gw = Gateway.from_env()
    try:
        gw.require_manager()
        result = deploy(gw, opts, lb=not no_lb, wait=wait, timeout=timeout, say=say)
    finally:
        gw.close()
    if as_json:
        click.echo(json.dumps({"stack": name, "created": result.created,
                               "updated": result.updated, "removed": result.removed,
                               "warnings": result.warnings}, indent=2))
    else:
        for warning in result.warnings:
            click.echo(f"Warning: {warning}", err=True)
