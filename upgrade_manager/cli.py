"""The `dans` command line: a thin click group; commands parse, call the library, format.

Every `DansError` becomes `Error: <message>` on stderr and the error's exit code; anything
else reaching the user would be a bug, so it is reported as such with a hint, not a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from upgrade_manager import __version__
from upgrade_manager.errors import DansError

HELP = """\
dans upgrades Docker Swarm stacks with zero failed requests and zero mixed-version calls.

Use it on a Swarm manager where you would run `docker stack deploy`. `dans deploy` creates a
stack from Compose files; `dans upgrade` moves it to a new Compose file by starting the changed
services' new versions on an isolated network (DANS), switching traffic at an application
load balancer, and converging to exactly what a fresh deploy would have created.
"""


class DansGroup(click.Group):
    """Turns dans errors into `Error: ...` lines and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DansError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)


@click.group(cls=DansGroup, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dans")
def main() -> None:
    """Entry point of the `dans` console script."""


def _register() -> None:
    # Each command lives in its own module so the group stays thin.
    from lb.cli import lb
    from upgrade_manager import _cli_engine

    main.add_command(_cli_engine.doctor)
    from upgrade_manager import _cli_compose

    main.add_command(_cli_compose.translate_cmd)
    main.add_command(_cli_compose.deploy_cmd)
    from upgrade_manager import _cli_upgrade

    for command in (_cli_upgrade.plan_cmd, _cli_upgrade.upgrade_cmd, _cli_upgrade.status_cmd,
                    _cli_upgrade.rollback_cmd):
        main.add_command(command)
    main.add_command(lb)


_register()

if __name__ == "__main__":
    main()
