"""`dans doctor`: check that this machine can run dans (engine reachable, swarm manager)."""

from __future__ import annotations

import click

__all__ = ["doctor"]


@click.command()
def doctor() -> None:
    """Check that the Docker engine answers and this node is a swarm manager."""
    from upgrade_manager.gateway import Gateway

    gw = Gateway.from_env()
    try:
        gw.require_manager()
        info = gw.info()
    finally:
        gw.close()
    swarm = info.get("Swarm", {})
    click.echo(f"engine {info.get('ServerVersion')} on {info.get('Name')}: swarm manager, "
               f"{swarm.get('Nodes', '?')} node(s), {swarm.get('Managers', '?')} manager(s)")
