"""`dans lb`: run the load balancer (also the per-upgrade L4 relay).

Every flag and DANS_LB_* variable is validated by `lb._settings.settings` before anything
starts, so a bad value is one `Error: ...` line and exit 1. Anything else that escapes is a
bug: one line that says so and points to `--debug` (which shows the traceback), exit 70.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

__all__ = ["EXIT_BUG", "lb"]

# lb._server (aiohttp) loads only when the LB runs, so `dans --help` and `dans lb --help` stay
# fast; the help repeats lb._server.DEFAULT_ADMIN_PORT (a unit test keeps them equal).
_HELP_ADMIN_PORT = 9900
EXIT_BUG = 70  # EX_SOFTWARE: an internal error


def _debug_wanted(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(ctx.params.get("debug") or root.params.get("debug")
                or os.environ.get("DANS_DEBUG"))


def _guarded(ctx: click.Context, action: Callable[[], Any]) -> Any:
    """Run `action`; LB errors pass on (the CLI prints them), anything else is a bug."""
    from lb.errors import LBError

    try:
        return action()
    except (LBError, click.ClickException, click.Abort, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if _debug_wanted(ctx):
            raise
        click.echo(f"Error: internal error in dans lb ({type(exc).__name__}: {exc}); this is "
                   "a bug: run it again with --debug for the traceback", err=True)
        sys.exit(EXIT_BUG)


@click.group(invoke_without_command=True)
@click.option("--config", "config_file", metavar="FILE",
              help="Initial routing table (JSON). Default: DANS_LB_CONFIG (JSON or a path).")
@click.option("--admin-port", metavar="PORT", default=None,
              help=f"Admin API port, 1-65535 (DANS_LB_ADMIN_PORT, default {_HELP_ADMIN_PORT}).")
@click.option("--admin-host", default="0.0.0.0", show_default=True,
              help="Address of the admin API.")
@click.option("--token-file", metavar="FILE",
              help="Admin token file (DANS_LB_TOKEN_FILE; else DANS_LB_TOKEN, else "
                   "/run/secrets/dans_lb_token).")
@click.option("--workers", metavar="N", default=None,
              help="Worker processes sharing the frontends (DANS_LB_WORKERS, default 1).")
@click.option("--grace", metavar="SECONDS", default=None,
              help="Seconds to let in-flight requests finish on SIGTERM (DANS_LB_GRACE, 30).")
@click.option("--admin-timeout", metavar="SECONDS", default=None,
              help="Seconds an admin client has to send a request head, and between two "
                   "reads of its body (DANS_LB_ADMIN_TIMEOUT, 10).")
@click.option("--admin-unix", hidden=True, default=None)
@click.option("--log-level", default=lambda: os.environ.get("DANS_LB_LOG", "info"),
              type=click.Choice(["debug", "info", "warning", "error"]), show_default="info")
@click.option("--debug", is_flag=True, help="Show the traceback of an internal error.")
@click.pass_context
def lb(ctx: click.Context, config_file: str | None, admin_port: str | None, admin_host: str,
       token_file: str | None, workers: str | None, grace: str | None,
       admin_timeout: str | None, admin_unix: str | None, log_level: str,
       debug: bool) -> None:
    """Run the application load balancer: HTTP frontends, TCP relays and the admin API.

    Routes frontends (listening ports) to groups of backends resolved through DNS
    (tasks.SERVICE, refreshed every second), switches and drains groups on command of the
    authenticated admin API, and finishes in-flight requests on SIGTERM.
    """
    if ctx.invoked_subcommand is not None:
        return
    from lb._settings import Flags, settings

    flags = Flags(config_file=config_file, admin_port=admin_port, admin_host=admin_host,
                  token_file=token_file, workers=workers, grace=grace,
                  admin_timeout=admin_timeout, admin_unix=admin_unix)

    def start() -> None:
        checked = settings(flags)
        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from lb._server import run

        run(checked)

    _guarded(ctx, start)


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
    from lb._transparent import RelaySettings, run_relay

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def start() -> None:
        try:
            run_relay(RelaySettings(target=target, listen=listen, redirect=redirect,
                                    idle_timeout=idle_timeout))
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None

    _guarded(click.get_current_context(), start)


@lb.command("waypoint")
@click.option("--target", required=True, metavar="SERVICE",
              help="The real service's full name, e.g. shop_api (reached as tasks.SERVICE).")
@click.option("--callee", required=True, metavar="NAME",
              help="Its short name: the callee of the per-hop metrics.")
@click.option("--http", "http_ports", default="", metavar="PORTS",
              help="Comma-separated ports the waypoint speaks HTTP on (counted per hop); "
                   "every other TCP port is relayed as it is.")
@click.option("--trace-header", default="", metavar="HEADER",
              help="An application header that names a trace when traceparent and "
                   "x-b3-traceid are missing.")
@click.option("--redirect/--no-redirect", default=True, show_default=True,
              help="Install the iptables rules that relay the other ports (needs NET_ADMIN).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=15090,
              show_default=True, help="Where /metrics and /healthz answer (read-only).")
def waypoint(target: str, callee: str, http_ports: str, trace_header: str, redirect: bool,
             metrics_port: int) -> None:
    """Stand in for a meshed service: hold its names, forward to it, count every hop.

    `dans deploy --mesh` runs one for every service another service calls. HTTP ports go
    through the LB's engine (per-hop metrics, trace ids read); the others are relayed
    transparently. No admin API, no token.
    """
    from lb._mesh import WaypointSettings, run_waypoint
    from lb.table import HEADER_NAME, check_name

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def start() -> None:
        try:
            ports = tuple(int(p) for p in http_ports.split(",") if p.strip())
        except ValueError:
            raise click.BadParameter("--http: ports must be numbers") from None
        if not all(0 < p < 65536 for p in ports) or metrics_port in ports:
            raise click.BadParameter("--http: ports 1-65535, not the metrics port")
        if trace_header and not HEADER_NAME.fullmatch(trace_header):
            raise click.BadParameter("--trace-header: a header name (letters, digits, '-')")
        settings = WaypointSettings(target=check_name(target, "--target"),
                                    callee=check_name(callee, "--callee"),
                                    http_ports=ports, trace_header=trace_header,
                                    redirect=redirect, metrics_port=metrics_port)
        try:
            run_waypoint(settings)
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None

    _guarded(click.get_current_context(), start)


@lb.command("admin-pipe", hidden=True)
@click.option("--target", required=True, metavar="HOST", help="The LB, e.g. tasks.shop_dans-lb.")
@click.option("--port", type=click.IntRange(1, 65535), default=_HELP_ADMIN_PORT,
              show_default=True, help="The LB's admin port.")
@click.option("--token-file", default="/run/secrets/dans_lb_token", show_default=True,
              help="The LB's token (the Docker secret the helper mounts).")
def admin_pipe(target: str, port: int, token_file: str) -> None:
    """Forward admin requests (JSON lines on stdin) to the LB, adding the token.

    The far end of dans's admin channel, run by `docker exec` in the per-upgrade helper
    container on the LB's network (lb._admin_pipe); not meant to be typed.
    """
    import sys

    from lb._admin_pipe import run_pipe

    sys.exit(run_pipe(target, port, token_file))


def main() -> None:
    """`python -m lb.cli ...`: `dans lb ...` without loading the rest of the dans CLI.

    Workers and the LB image start this way: it imports only the LB.
    """
    from lb.errors import LBError

    try:
        lb.main(prog_name="dans lb", standalone_mode=False)
    except LBError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)


if __name__ == "__main__":
    main()
