"""`docker dans ...`: dans as a Docker CLI plugin, and `dans install-plugin` that installs it.

The Docker CLI plugin protocol: docker finds an executable `docker-NAME` in its plugin
directories (`$DOCKER_CONFIG/cli-plugins`, default `~/.docker/cli-plugins`, then the system
ones), runs `docker-NAME docker-cli-plugin-metadata` and expects a JSON object with
SchemaVersion "0.1.0", Vendor, Version and ShortDescription; to run the plugin it calls
`docker-NAME NAME ARGS...`, so the first argument is the plugin's own name. The metadata
answer imports nothing but json: docker asks every plugin for it on `docker --help`.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import click

from upgrade_manager import __version__

__all__ = [
    "PLUGIN_NAME",
    "default_plugin_dir",
    "install_plugin_cmd",
    "metadata",
    "plugin_main",
]

PLUGIN_NAME = "dans"
METADATA_COMMAND = "docker-cli-plugin-metadata"


def metadata() -> dict[str, str]:
    """The plugin's answer to `docker-cli-plugin-metadata`."""
    return {
        "SchemaVersion": "0.1.0",
        "Vendor": "dans",
        "Version": __version__,
        "ShortDescription": "Upgrade Swarm stacks with zero failed requests (DANS)",
    }


def plugin_main(argv: list[str] | None = None) -> int:
    """Run as `docker-dans`: answer the metadata call, else run dans as `docker dans`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [METADATA_COMMAND]:
        click.echo(json.dumps(metadata()))
        return 0
    wants_help = args[:2] == ["help", PLUGIN_NAME]  # `docker help dans [CMD]`
    if wants_help:
        args = args[1:]
    if args[:1] == [PLUGIN_NAME]:
        args = args[1:]
    if wants_help:
        args.append("--help")
    from upgrade_manager.cli import main

    main(args=args, prog_name=f"docker {PLUGIN_NAME}")
    return 0


def default_plugin_dir() -> Path:
    """Where docker looks for a user's plugins: `$DOCKER_CONFIG/cli-plugins`."""
    config = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(config) / "cli-plugins"


def _script() -> str:
    # The plugin runs with this very interpreter, so it sees the same installed dans.
    return (f"#!{sys.executable}\n"
            "# docker-dans: the dans Docker CLI plugin, written by `dans install-plugin`.\n"
            "import sys\n\n"
            "from upgrade_manager._cli_plugin import plugin_main\n\n"
            "sys.exit(plugin_main())\n")


@click.command("install-plugin")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="Plugin directory (default: $DOCKER_CONFIG/cli-plugins, else "
                   "~/.docker/cli-plugins).")
def install_plugin_cmd(directory: Path | None) -> None:
    """Install dans as a Docker CLI plugin, so that `docker dans upgrade ...` works.

    Writes the executable DIR/docker-dans, which runs this installation of dans with the
    Python that runs this command. Run it again after moving the installation.
    """
    target_dir = directory or default_plugin_dir()
    target = target_dir / f"docker-{PLUGIN_NAME}"
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(_script())
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    except OSError as exc:
        raise click.ClickException(f"cannot write the plugin {target}: "
                                   f"{exc.strerror or exc}") from None
    click.echo(f"Installed {target}; try `docker {PLUGIN_NAME} --help`.")
    if directory is not None and directory.resolve() != default_plugin_dir().resolve():
        click.echo(f"Note: docker looks in {default_plugin_dir()} and the system plugin "
                   "directories; for another directory add it to 'cliPluginsExtraDirs' in "
                   "the docker config.json.")
