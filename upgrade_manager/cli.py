"""The `dans` command line: a thin click group; commands parse, call the library, format.

Every `DansError` becomes `Error: <message>` on stderr and the error's exit code; anything
else reaching the user would be a bug, so it is reported as such in one line, with a pointer
to `--debug` for the traceback, and exit status 70.

Subcommands load lazily (click's documented lazy group): the group knows each command by
"module:attribute" and imports it only when it is run or its help is shown. The command
modules themselves import only click at the top, the Docker SDK, aiohttp, networkx,
jsonschema and yaml inside the command bodies, so `dans --help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from upgrade_manager import __version__
from upgrade_manager._lb import LBFault
from upgrade_manager.errors import DansError

__all__ = ["COMMANDS", "main"]

HELP = """\
dans upgrades Docker Swarm stacks with zero failed requests and zero mixed-version calls.

Use it on a Swarm manager where you would run `docker stack deploy`. `dans deploy` creates a
stack from Compose files; `dans upgrade` moves it to a new Compose file by starting the changed
services' new versions on an isolated network (DANS), switching traffic at an application
load balancer, and converging to exactly what a fresh deploy would have created.
"""

# Command name -> "module:attribute"; the order is the order of `dans --help`.
COMMANDS: dict[str, str] = {
    "deploy": "upgrade_manager._cli_compose:deploy_cmd",
    "plan": "upgrade_manager._cli_upgrade:plan_cmd",
    "upgrade": "upgrade_manager._cli_upgrade:upgrade_cmd",
    "status": "upgrade_manager._cli_upgrade:status_cmd",
    "rollback": "upgrade_manager._cli_upgrade:rollback_cmd",
    "translate": "upgrade_manager._cli_compose:translate_cmd",
    "doctor": "upgrade_manager._cli_engine:doctor",
    "install-plugin": "upgrade_manager._cli_plugin:install_plugin_cmd",
    "lb": "upgrade_manager._cli_lb:lb",
}


class DansGroup(click.Group):
    """Loads subcommands lazily and turns dans errors into `Error: ...` lines and exit codes."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        eager = [name for name in super().list_commands(ctx) if name not in self.lazy_subcommands]
        return [*self.lazy_subcommands, *sorted(eager)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            return self._lazy_load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _lazy_load(self, cmd_name: str) -> click.Command:
        module_name, attribute = self.lazy_subcommands[cmd_name].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise ValueError(f"{module_name}:{attribute} is not a click command")
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGV] = tuple(args)  # for a subcommand's own --debug, seen on errors
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (DansError, LBFault) as exc:  # LBFault: from `dans lb`, lb's own error
            click.echo(f"Error: {_printable_lines(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:
            if _debug(ctx):
                raise
            name = type(exc).__name__
            click.echo(f"Error: internal error in dans ({name}: "
                       f"{_printable_lines(str(exc))[:300]}). This is a bug; run the same "
                       "command with --debug (or DANS_DEBUG=1) to see the traceback, and "
                       "report it.", err=True)
            sys.exit(EXIT_INTERNAL)


EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE
_ARGV = "dans.argv"


def _debug(ctx: click.Context) -> bool:
    # `dans --debug CMD`, DANS_DEBUG=1, or a subcommand's own --debug (`dans lb --debug`).
    root = ctx.find_root()
    return (bool(root.params.get("debug")) or "--debug" in ctx.meta.get(_ARGV, ())
            or os.environ.get("DANS_DEBUG", "") not in ("", "0"))


def _printable_lines(text: str) -> str:
    # Messages may quote hostile input: keep their own line breaks, escape every other
    # control character so no value can forge or hide a line.
    return "\n".join("".join(c if c.isprintable() or c == "\t" else
                              c.encode("unicode_escape").decode("ascii") for c in line)
                      for line in text.split("\n"))


@click.group(cls=DansGroup, help=HELP, lazy_subcommands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dans")
@click.option("--debug", is_flag=True, envvar="DANS_DEBUG",
              help="Show the Python traceback of an internal error (a bug) instead of a "
                   "one-line message.")
def main(debug: bool) -> None:
    """Entry point of the `dans` console script."""


if __name__ == "__main__":
    main()
