"""The options every stack command shares, spelled as `docker stack deploy` spells them.

`dans deploy -c stack.yml shop` and `dans deploy -f stack.yml --stack shop` mean the same:
Compose files by `-c/--compose-file` (docker) or `-f/--file` (dans), the stack name as the
positional STACK (docker) or `-s/--stack` (dans). This module imports only click.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from upgrade_manager.errors import DansError

__all__ = [
    "RESOLVE_IMAGE_NOTE",
    "StackNameError",
    "compose_files_option",
    "docker_deploy_options",
    "stack_name",
    "stack_name_options",
    "stdin_for",
]

FILES_HELP = "Compose file (as docker stack deploy -c); repeat to merge, later files " \
             "override; '-' reads standard input."

RESOLVE_IMAGE_NOTE = ("dans does not query the registry for image digests: services keep the "
                      "image reference of the Compose file, as with `--resolve-image never`; "
                      "pin a digest (image: NAME@sha256:...) to fix the exact image")


class StackNameError(DansError):
    """The stack name is missing, or given twice with different values."""

    exit_code = 2


def stdin_for(files: tuple[str, ...]) -> bytes | None:
    """Standard input as bytes when a Compose file is '-', else None; one byte over the
    translator's limit at most (so a larger input is refused, not read to the end);
    decoding is the loader's."""
    if "-" not in files:
        return None
    from compose_translator import MAX_COMPOSE_BYTES  # lazy: the package is heavy
    return sys.stdin.buffer.read(MAX_COMPOSE_BYTES + 1)


def compose_files_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`-c/--compose-file` and `-f/--file`: one repeatable option, files merge left to right."""
    return click.option("-c", "--compose-file", "-f", "--file", "files", multiple=True,
                        required=True, metavar="FILE", help=FILES_HELP)(fn)


def stack_name_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The positional STACK of `docker stack deploy`, and dans's `-s/--stack`."""
    fn = click.option("-s", "--stack", "stack_option", metavar="NAME",
                      help="Stack name (the same as the STACK argument).")(fn)
    return click.argument("stack_arg", metavar="[STACK]", required=False)(fn)


def stack_name(stack_arg: str | None, stack_option: str | None,
               default: str | None = None, *, default_hint: str = "") -> str:
    """The one stack name from STACK, --stack and a default; a clear error when none or two."""
    if stack_arg and stack_option and stack_arg != stack_option:
        raise StackNameError(f"two stack names: '{stack_arg}' (STACK) and '{stack_option}' "
                             "(--stack); give one")
    name = stack_arg or stack_option or default
    if not name:
        raise StackNameError("no stack name: pass it as STACK (dans upgrade -c FILE STACK) or "
                             f"with --stack NAME{default_hint}")
    return name


def docker_deploy_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--with-registry-auth` and `--resolve-image`, accepted with docker's meaning."""
    fn = click.option("--resolve-image", type=click.Choice(["always", "changed", "never"]),
                      default=None,
                      help="Accepted for docker stack deploy scripts; dans always deploys "
                           "as 'never' (no registry query) and says so for the others.")(fn)
    return click.option("--with-registry-auth", is_flag=True,
                        help="Send the registry credentials of this client's docker config "
                             "(docker login) to the swarm, so nodes can pull private "
                             "images.")(fn)


def warn_resolve_image(value: str | None) -> None:
    """Say where dans differs from docker for --resolve-image always/changed."""
    if value in ("always", "changed"):
        click.echo(f"Warning: --resolve-image {value}: {RESOLVE_IMAGE_NOTE}.", err=True)
