"""`dans lb`: run the load balancer (also the per-upgrade L4 relay), and build its image."""

from __future__ import annotations

import logging
import os

import click

__all__ = ["lb"]

# lb.server (aiohttp) loads only when the LB runs, so `dans --help` and `dans lb --help` stay
# fast; the help repeats lb.server.DEFAULT_ADMIN_PORT (a unit test keeps them equal).
_HELP_ADMIN_PORT = 9900


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise click.BadParameter(f"{name} must be an integer") from None


@click.group(invoke_without_command=True)
@click.option("--config", "config_file", metavar="FILE",
              help="Initial routing table (JSON). Default: DANS_LB_CONFIG (JSON or a path).")
@click.option("--admin-port", type=int, default=None,
              help=f"Admin API port (DANS_LB_ADMIN_PORT, default {_HELP_ADMIN_PORT}).")
@click.option("--admin-host", default="0.0.0.0", show_default=True,
              help="Address of the admin API.")
@click.option("--token-file", metavar="FILE",
              help="Admin token file (DANS_LB_TOKEN_FILE; else DANS_LB_TOKEN, else "
                   "/run/secrets/dans_lb_token).")
@click.option("--workers", type=int, default=None,
              help="Worker processes sharing the frontends (DANS_LB_WORKERS, default 1).")
@click.option("--grace", type=float, default=None,
              help="Seconds to let in-flight requests finish on SIGTERM (DANS_LB_GRACE, 30).")
@click.option("--admin-unix", hidden=True, default=None)
@click.option("--log-level", default=lambda: os.environ.get("DANS_LB_LOG", "info"),
              type=click.Choice(["debug", "info", "warning", "error"]), show_default="info")
@click.pass_context
def lb(ctx: click.Context, config_file: str | None, admin_port: int | None, admin_host: str,
       token_file: str | None, workers: int | None, grace: float | None,
       admin_unix: str | None, log_level: str) -> None:
    """Run the application load balancer: HTTP frontends, TCP relays and the admin API.

    Routes frontends (listening ports) to groups of backends resolved through DNS
    (tasks.SERVICE, refreshed every second), switches and drains groups on command of the
    authenticated admin API, and finishes in-flight requests on SIGTERM.
    """
    if ctx.invoked_subcommand is not None:
        return
    from lb.server import DEFAULT_ADMIN_PORT, Settings, load_table, load_token, run

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(
        table=load_table(config_file),
        token=load_token(token_file),
        admin_host=admin_host,
        admin_port=admin_port if admin_port is not None
        else _env_int("DANS_LB_ADMIN_PORT", DEFAULT_ADMIN_PORT),
        admin_unix=admin_unix,
        grace=grace if grace is not None else float(os.environ.get("DANS_LB_GRACE", "30")),
        workers=max(1, workers if workers is not None else _env_int("DANS_LB_WORKERS", 1)),
    )
    run(settings)


@lb.command("build-image")
@click.option("--tag", default=None, help="Image name:tag (default: lb.image.default_tag()).")
@click.option("--force", is_flag=True, help="Build even when the image exists.")
def build_image(tag: str | None, force: bool) -> None:
    """Build the LB image (FROM debian:bookworm-slim, the project installed offline)."""
    from lb.image import default_tag, ensure_lb_image

    tag = tag or default_tag()
    built = ensure_lb_image(tag, force=force, progress=click.echo)
    click.echo(f"{tag}: {'built' if built else 'already present'}")


@lb.command("relay")
@click.option("--target", required=True, metavar="HOST",
              help="Where connections go: the real service's tasks, e.g. tasks.shop_db.")
@click.option("--listen", type=click.IntRange(1, 65535), default=15001, show_default=True,
              help="The port every incoming TCP connection is redirected to.")
@click.option("--redirect/--no-redirect", default=True, show_default=True,
              help="Install the iptables rule that redirects every port (needs NET_ADMIN).")
@click.option("--idle-timeout", type=click.FloatRange(min=1.0), default=3600.0,
              show_default=True, help="Seconds a connection may stay silent both ways.")
def relay(target: str, listen: int, redirect: bool, idle_timeout: float) -> None:
    """Relay every TCP port to the same port of TARGET (transparent, no ports to list).

    The per-upgrade relay that answers for an unchanged service on the generation network:
    callers dial whatever port their code knows; the relay reads it from the redirected
    connection (SO_ORIGINAL_DST) and connects there. No admin API, no token.
    """
    from lb.transparent import RelaySettings, run_relay

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_relay(RelaySettings(target=target, listen=listen, redirect=redirect,
                                idle_timeout=idle_timeout))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@lb.command("admin-pipe", hidden=True)
@click.option("--target", required=True, metavar="HOST", help="The LB, e.g. tasks.shop_dans-lb.")
@click.option("--port", type=click.IntRange(1, 65535), default=_HELP_ADMIN_PORT,
              show_default=True, help="The LB's admin port.")
@click.option("--token-file", default="/run/secrets/dans_lb_token", show_default=True,
              help="The LB's token (the Docker secret the helper mounts).")
def admin_pipe(target: str, port: int, token_file: str) -> None:
    """Forward admin requests (JSON lines on stdin) to the LB, adding the token.

    The far end of dans's admin channel, run by `docker exec` in the per-upgrade helper
    container on the LB's network (lb.admin_pipe); not meant to be typed.
    """
    import sys

    from lb.admin_pipe import run_pipe

    sys.exit(run_pipe(target, port, token_file))


def main() -> None:
    """`python -m lb.cli ...`: `dans lb ...` without loading the rest of the dans CLI.

    Workers and the LB image start this way: it imports only the LB.
    """
    import sys

    from upgrade_manager.errors import DansError

    try:
        lb.main(prog_name="dans lb", standalone_mode=False)
    except DansError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)


if __name__ == "__main__":
    main()
