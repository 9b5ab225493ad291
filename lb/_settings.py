"""The settings of one `dans lb` process: flags and environment, validated in one place.

Start-up needs no admin call: the initial routing table comes from `DANS_LB_CONFIG` (JSON
text, or a path to a JSON file) or `--config FILE`; the admin token from `DANS_LB_TOKEN`, or a
file named by `DANS_LB_TOKEN_FILE` (a Docker secret), or /run/secrets/dans_lb_token.
Every value is checked before anything starts: a bad one is one `LBError` line naming the
flag or variable and what it accepts (ports 1-65535, finite seconds, UTF-8 files, ...).
This module imports no aiohttp, so `dans lb` refuses bad input without loading the server.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lb.errors import LBError
from lb.table import MAX_TIMEOUT, RoutingTable, check_port, check_seconds, is_ip

__all__ = ["DEFAULT_ADMIN_PORT", "Flags", "Settings", "load_table", "load_token", "settings"]

DEFAULT_ADMIN_PORT = 9900
DEFAULT_ADMIN_TIMEOUT = 10.0
DEFAULT_GRACE = 30.0
DEFAULT_SECRET = "/run/secrets/dans_lb_token"
MAX_FILE = 16 << 20  # bytes read at most from a table or token file
MAX_WORKERS = 64


@dataclass(frozen=True)
class Settings:
    """Everything one LB process needs to start."""

    table: RoutingTable
    token: str | None
    admin_host: str = "0.0.0.0"
    admin_port: int = DEFAULT_ADMIN_PORT
    admin_unix: str | None = None  # a worker's internal admin socket
    grace: float = 30.0
    workers: int = 1
    # Seconds an admin client has for a request head, and between two reads of its body.
    admin_timeout: float = DEFAULT_ADMIN_TIMEOUT


def load_table(config_file: str | None, env: Mapping[str, str] | None = None) -> RoutingTable:
    """The initial table: `config_file`, else DANS_LB_CONFIG (JSON or a path), else empty."""
    env = os.environ if env is None else env
    if config_file:
        return _read_table(Path(config_file))
    raw = env.get("DANS_LB_CONFIG", "").strip()
    if not raw:
        return RoutingTable()
    # os.environ keeps bytes that are not UTF-8 as lone surrogates: refuse them here.
    _utf8(raw, "DANS_LB_CONFIG")
    if raw[0] in "{[":  # JSON text; anything else names a file
        try:
            return RoutingTable.from_json(raw)
        except LBError as exc:
            raise LBError(f"DANS_LB_CONFIG: {exc}") from None
    return _read_table(Path(raw))


def _utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise LBError(f"{what} is not UTF-8 text") from None


def _read_text(path: Path, what: str) -> str:
    """A small text file, or LBError naming it (missing, unreadable, not UTF-8, too big)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise LBError(f"the {what} {path} is not a regular file")
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise LBError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the path
        raise LBError(f"cannot read the {what} {path!r}: {exc}") from None
    if len(data) > MAX_FILE:
        raise LBError(f"the {what} {path} is larger than {MAX_FILE >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LBError(f"the {what} {path} is not UTF-8 text (byte {exc.start})") from None


def _read_table(path: Path) -> RoutingTable:
    text = _read_text(path, "routing table")
    try:
        return RoutingTable.from_json(text)
    except LBError as exc:
        raise LBError(f"{path}: {exc}") from None


def load_token(token_file: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The admin token: `token_file`, DANS_LB_TOKEN_FILE, DANS_LB_TOKEN, or the default secret."""
    env = os.environ if env is None else env
    path = token_file or env.get("DANS_LB_TOKEN_FILE")
    if path:
        token = _check_token(_read_text(Path(path), "admin token file"), f"admin token file {path}")
        if not token:
            raise LBError(f"the admin token file {path} is empty")
        return token
    if env.get("DANS_LB_TOKEN"):
        return _check_token(env["DANS_LB_TOKEN"], "DANS_LB_TOKEN")
    if Path(DEFAULT_SECRET).is_file():
        return _check_token(_read_text(Path(DEFAULT_SECRET), "admin token file"),
                            f"admin token file {DEFAULT_SECRET}") or None
    return None


def _check_token(text: str, what: str) -> str:
    # The token is compared with what clients send in a header: printable ASCII only.
    _utf8(text, what)
    token = text.strip()
    if not token.isascii() or not token.isprintable():
        raise LBError(f"the {what} holds characters other than printable ASCII")
    return token


@dataclass(frozen=True)
class Flags:
    """`dans lb`'s flags as typed (None: not given, the environment or the default holds)."""

    config_file: str | None = None
    admin_port: str | None = None
    admin_host: str = "0.0.0.0"
    token_file: str | None = None
    workers: str | None = None
    grace: str | None = None
    admin_timeout: str | None = None
    admin_unix: str | None = None


def settings(flags: Flags, env: Mapping[str, str] | None = None) -> Settings:
    """Validated settings from flags, else the environment (DANS_LB_*), else defaults."""
    env = os.environ if env is None else env
    workers = _integer(_pick(flags.workers, env, "DANS_LB_WORKERS", "--workers", "1"))
    if not 1 <= workers[0] <= MAX_WORKERS:
        raise LBError(f"{workers[1]} must be a number of worker processes from 1 to "
                      f"{MAX_WORKERS}, not {workers[0]}")
    port, port_what = _integer(_pick(flags.admin_port, env, "DANS_LB_ADMIN_PORT",
                                     "--admin-port", str(DEFAULT_ADMIN_PORT)))
    grace = _seconds(_pick(flags.grace, env, "DANS_LB_GRACE", "--grace", str(DEFAULT_GRACE)),
                     zero=True)
    timeout = _seconds(_pick(flags.admin_timeout, env, "DANS_LB_ADMIN_TIMEOUT",
                             "--admin-timeout", str(DEFAULT_ADMIN_TIMEOUT)))
    host = flags.admin_host
    if not is_ip(host) and not _is_hostname(host):
        raise LBError(f"--admin-host must be an IP address or host name, not {host!r}")
    return Settings(
        table=load_table(flags.config_file, env),
        token=load_token(flags.token_file, env),
        admin_host=host,
        admin_port=check_port(port, port_what),
        admin_unix=flags.admin_unix,
        grace=grace,
        workers=workers[0],
        admin_timeout=timeout,
    )


def _pick(flag: str | None, env: Mapping[str, str], name: str, option: str,
          default: str) -> tuple[str, str]:
    """(text, where it came from) for one setting."""
    if flag is not None:
        return flag, option
    if name in env:
        return env[name], name
    return default, option


def _integer(given: tuple[str, str]) -> tuple[int, str]:
    text, what = given
    stripped = text.strip()
    if not stripped.isascii() or not stripped.lstrip("-").isdigit() or len(stripped) > 9:
        raise LBError(f"{what} must be an integer, not {text!r}")
    return int(stripped), what


def _seconds(given: tuple[str, str], zero: bool = False) -> float:
    text, what = given
    try:
        value = float(text) if text.strip().isascii() else None
    except ValueError:
        value = None
    if value is None:
        raise LBError(f"{what} must be a number of seconds (at most {MAX_TIMEOUT:.0f}), "
                      f"not {text!r}")
    return check_seconds(value, what, zero=zero)


def _is_hostname(host: str) -> bool:
    labels = host.split(".")
    return 0 < len(host) <= 253 and all(
        0 < len(label) <= 63 and label.isascii() and label.replace("-", "").isalnum()
        for label in labels)

