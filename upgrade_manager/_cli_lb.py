"""`dans lb`: lb's own command group (`lb.cli`), plus `build-image`, which is dans's.

Building the LB image is deployment (`upgrade_manager.lb_image`, through the gateway), so it
lives here and not in `lb`, which must run alone in the image it builds. The group is a copy
of `lb.cli.lb` with one command more; `python -m lb.cli` (inside the image) has no
`build-image`.
"""

from __future__ import annotations

import copy

import click

from lb.cli import lb as lb_group

__all__ = ["build_image", "lb"]


@click.command("build-image")
@click.option("--tag", default=None, help="Image name:tag (default: the code's own tag, "
              "dans-lb:VERSION-DIGEST, or $DANS_LB_IMAGE).")
@click.option("--force", is_flag=True, help="Build even when the image exists.")
def build_image(tag: str | None, force: bool) -> None:
    """Build the LB image (FROM debian:bookworm-slim, the `lb` package installed offline)."""
    from upgrade_manager.lb_image import default_tag, ensure_lb_image

    tag = tag or default_tag()
    built = ensure_lb_image(tag, force=force, progress=click.echo)
    click.echo(f"{tag}: {'built' if built else 'already present'}")


lb = copy.copy(lb_group)
lb.commands = {**lb_group.commands, "build-image": build_image}
