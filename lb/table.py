"""The routing table: what the LB listens on and where each frontend sends traffic.

A table is plain data with a JSON round trip (`to_json` / `from_json`), shared by the LB
process, its admin API and the upgrade manager's admin client. JSON shape:

    {"frontends": [
        {"name": "web", "listen": 8080, "mode": "http", "active": "v1",
         "groups": {
             "v1": {"backends": ["tasks.shop_front:80"], "state": "active"},
             "v2": {"backends": ["tasks.shop_front-next:80"], "state": "active"}},
         "timeouts": {"connect": 2.0, "read": 60.0, "header": 10.0, "body": 30.0,
                      "keepalive": 60.0, "tunnel": 3600.0},
         "retries": 2,
         "policy": "active"}]}

A backend is "host:port"; a host that is not an IP literal (usually `tasks.SERVICE`) is
resolved through DNS at most `refresh` seconds apart. `policy` names how a request picks a
group; "active" sends every new request to the active group, "pinned" (lb._pinning) sends a
request presenting a group's `version` stamp to that group and stamps every answer.
`timeouts` (seconds, all optional): `connect` and `read` for backends (read: between two reads
of an answer), `header` for a whole request head, `body` between two reads of a request body
(and for a client that stops reading its answer), `keepalive` for an idle client connection,
`tunnel` for an idle WebSocket tunnel or TCP relay connection. There is one HTTP engine
(`lb._http_engine`); the `engine` key of older tables is refused with a message that says so. A
per-trace pinning policy (the version-consistency backend) plugs in by name without a
change of this format: it reads the trace id and may pick a non-active, non-draining group.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from lb.errors import LBError

__all__ = [
    "ACTIVE",
    "DRAINING",
    "MODES",
    "POLICIES",
    "Frontend",
    "FrontendTimeouts",
    "Group",
    "RoutingTable",
    "split_target",
]

ACTIVE = "active"
DRAINING = "draining"
GROUP_STATES = (ACTIVE, DRAINING)
MODES = ("http", "tcp")
POLICIES = ("active", "pinned")
# A version stamp (`Group.version`): what the LB writes into answers and reads back from
# clients (lb._pinning), so it is a short token that needs no quoting in a cookie or URL.
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# An application header to route by instead of the LB's own stamp (`Frontend.pin_header`).
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
MAX_TIMEOUT = 30 * 86400.0  # seconds; a longer wait is a typo, and asyncio needs finite ones
MAX_NAME = 200
# A backend host: a DNS name (tasks.SERVICE) or an IPv4 literal; IPv6 literals come in [].
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")


def split_target(target: str) -> tuple[str, int]:
    """Split "host:port" (or "[v6]:port") into host and port; raise LBError when malformed."""
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isascii() or not port_text.isdigit() \
            or len(port_text) > 5 or not 0 < int(port_text) < 65536:
        raise LBError(f"backend {target!r}: expected host:port (port 1-65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host or not is_ip(host):
            raise LBError(f"backend {target!r}: [{host}] is not an IPv6 address")
    elif not _HOSTNAME.fullmatch(host):
        raise LBError(f"backend {target!r}: {host!r} is not a host name or IPv4 address")
    return host, int(port_text)


def check_name(value: Any, what: str) -> str:
    """`value` as a frontend or group name: a non-empty printable string of at most MAX_NAME
    characters (names end up in logs, metrics labels and admin URLs)."""
    if not isinstance(value, str) or not value:
        raise LBError(f"{what} must be a non-empty string")
    if len(value) > MAX_NAME or not value.isprintable() or value != value.strip() \
            or '"' in value or "\\" in value or "/" in value:
        raise LBError(f"{what} {value[:MAX_NAME]!r}: use at most {MAX_NAME} printable "
                      "characters, no quotes, backslashes, slashes or surrounding spaces")
    return value


def check_port(value: Any, what: str) -> int:
    """`value` as a TCP port number (1-65535)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise LBError(f"{what} must be a port number from 1 to 65535, not {value!r}")
    return value


def check_seconds(value: Any, what: str, *, zero: bool = False) -> float:
    """`value` as a finite number of seconds, > 0 (or >= 0 with `zero`), at most
    MAX_TIMEOUT; NaN and infinities are refused (NaN would silently disable a timeout)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and isinstance(value, int):
        ok = -1 <= value <= MAX_TIMEOUT  # before float(): a huge int overflows
    seconds = float(value) if ok else math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero) \
            or seconds > MAX_TIMEOUT:
        lowest = "0" if zero else "more than 0"
        raise LBError(f"{what} must be a finite number of seconds, {lowest} and at most "
                      f"{MAX_TIMEOUT:.0f}, not {value!r}")
    return seconds


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 literal (which needs no DNS)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


TIMEOUT_KEYS = ("connect", "read", "header", "body", "keepalive", "tunnel")


@dataclass(frozen=True)
class FrontendTimeouts:
    """Seconds the LB waits: for backends (connect, read) and for clients (header, body,
    keepalive) and idle tunnels; every connection is timed, so none can hold a drain."""

    connect: float = 2.0
    read: float = 60.0
    header: float = 10.0
    body: float = 30.0
    keepalive: float = 60.0
    tunnel: float = 3600.0

    def to_dict(self) -> dict[str, float]:
        """The JSON form."""
        return {k: getattr(self, k) for k in TIMEOUT_KEYS}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> FrontendTimeouts:
        """Parse the JSON form; `where` names the frontend in errors."""
        if not isinstance(data, dict):
            raise LBError(f"{where}: timeouts must be an object")
        _only(data, set(TIMEOUT_KEYS), where)
        return cls(**{k: check_seconds(data[k], f"{where}: timeouts.{k}")
                      for k in TIMEOUT_KEYS if k in data})


@dataclass(frozen=True)
class Group:
    """A set of backends ("host:port") that serves one version; active or draining."""

    backends: tuple[str, ...]
    state: str = ACTIVE
    version: str = ""  # the version it serves, stamped on its answers ("": no stamp)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {"backends": list(self.backends), "state": self.state}
        if self.version:
            out["version"] = self.version
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Group:
        """Parse the JSON form; `where` names frontend and group in errors."""
        if not isinstance(data, dict):
            raise LBError(f"{where}: expected an object")
        _only(data, {"backends", "state", "version"}, where)
        backends = data.get("backends", [])
        if not isinstance(backends, list) or not all(isinstance(b, str) for b in backends):
            raise LBError(f"{where}: backends must be a list of \"host:port\" strings")
        for target in backends:
            try:
                split_target(target)
            except LBError as exc:
                raise LBError(f"{where}: {exc}") from None
        state = data.get("state", ACTIVE)
        if state not in GROUP_STATES:
            raise LBError(f"{where}: state must be one of {', '.join(GROUP_STATES)}")
        version = data.get("version", "")
        if version != "" and (not isinstance(version, str) or not VERSION.fullmatch(version)):
            raise LBError(f"{where}: version must be 1-64 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
        return cls(backends=tuple(backends), state=state, version=version)


@dataclass(frozen=True)
class Frontend:
    """A listening port, its mode, its groups and which group takes new requests."""

    name: str
    listen: int
    groups: dict[str, Group]
    active: str
    mode: str = "http"
    host: str = "0.0.0.0"
    timeouts: FrontendTimeouts = field(default_factory=FrontendTimeouts)
    retries: int = 2
    policy: str = "active"
    pin_header: str = ""  # with policy "pinned": the application's version header, if any
    # Every HTTP request of an edge frontend (no `hop`) gets a W3C traceparent when it has no
    # valid one (lb._trace). The default, so it is written only when off ("trace": false):
    # tables of LBs deployed before tracing existed stay the same, and an LB image of that
    # time is never sent a key it would refuse.
    trace: bool = True
    # A waypoint: the callee it stands in for (per-hop metrics, lb._mesh), and an application
    # header that names a trace when traceparent and x-b3-traceid are missing.
    hop: str = ""
    trace_header: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out = {
            "name": self.name,
            "listen": self.listen,
            "host": self.host,
            "mode": self.mode,
            "active": self.active,
            "groups": {name: g.to_dict() for name, g in self.groups.items()},
            "timeouts": self.timeouts.to_dict(),
            "retries": self.retries,
            "policy": self.policy,
        }
        if self.pin_header:
            out["pin_header"] = self.pin_header
        if self.trace != (not self.hop):
            out["trace"] = self.trace
        if self.hop:
            out["hop"] = self.hop
        if self.trace_header:
            out["trace_header"] = self.trace_header
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Frontend:
        """Parse and validate the JSON form."""
        if not isinstance(data, dict):
            raise LBError("frontend: expected an object")
        name = check_name(data.get("name"), "frontend: name")
        where = f"frontend {name}"
        if "engine" in data:
            raise LBError(f"{where}: the 'engine' key is gone: the LB has one HTTP engine now "
                          f"(remove \"engine\": {json.dumps(data['engine'])} from the table)")
        _only(data, {"name", "listen", "host", "mode", "active", "groups", "timeouts",
                     "retries", "policy", "pin_header", "trace", "hop", "trace_header"},
              where)
        listen = check_port(data.get("listen"), f"{where}: listen")
        mode = data.get("mode", "http")
        if mode not in MODES:
            raise LBError(f"{where}: mode must be one of {', '.join(MODES)}")
        policy = data.get("policy", "active")
        if policy not in POLICIES:
            raise LBError(f"{where}: policy must be one of {', '.join(POLICIES)}")
        raw_groups = data.get("groups")
        if not isinstance(raw_groups, dict) or not raw_groups:
            raise LBError(f"{where}: groups must be a non-empty object")
        groups = {check_name(g, f"{where}: group name"): Group.from_dict(v, f"{where} group {g}")
                  for g, v in raw_groups.items()}
        active = data.get("active")
        if active not in groups:
            raise LBError(f"{where}: active group {active!r} is not one of its groups")
        if groups[active].state == DRAINING:
            raise LBError(f"{where}: the active group {active} cannot be draining")
        retries = data.get("retries", 2)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
            raise LBError(f"{where}: retries must be an integer from 0 to 10")
        host = data.get("host", "0.0.0.0")
        if not isinstance(host, str) or not is_ip(host):
            raise LBError(f"{where}: host must be an IP address to listen on, not {host!r}")
        return cls(
            name=name,
            listen=listen,
            host=host,
            mode=mode,
            active=str(active),
            groups=groups,
            timeouts=FrontendTimeouts.from_dict(data.get("timeouts", {}), where),
            retries=retries,
            policy=policy,
            pin_header=_pin_header(data.get("pin_header", ""), where),
            **_tracing(data, where),
        )


@dataclass(frozen=True)
class RoutingTable:
    """Every frontend of one LB; names and listening ports are unique."""

    frontends: tuple[Frontend, ...] = ()
    # Which table this is: dans numbers the tables it sends so that it can tell when every
    # LB replica has the same one (`upgrade_manager.lb_replicas`); 0 is the start-up table.
    version: int = 0

    def frontend(self, name: str) -> Frontend:
        """The frontend of that name; LBError when there is none."""
        for fe in self.frontends:
            if fe.name == name:
                return fe
        raise LBError(f"no frontend named {name!r}", 404)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ("version" only when it is not 0)."""
        data: dict[str, Any] = {"frontends": [fe.to_dict() for fe in self.frontends]}
        if self.version:
            data["version"] = self.version
        return data

    def to_json(self) -> str:
        """The table as JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> RoutingTable:
        """Parse and validate the JSON form (LBError names what is wrong)."""
        if not isinstance(data, dict):
            raise LBError("routing table: expected an object with 'frontends'")
        _only(data, {"frontends", "version"}, "routing table")
        version = data.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise LBError("routing table: version must be a whole number >= 0")
        raw = data.get("frontends", [])
        if not isinstance(raw, list):
            raise LBError("routing table: frontends must be a list")
        frontends = tuple(Frontend.from_dict(fe) for fe in raw)
        seen_names: set[str] = set()
        seen_ports: set[tuple[str, int]] = set()
        for fe in frontends:
            if fe.name in seen_names:
                raise LBError(f"routing table: two frontends named {fe.name}")
            seen_names.add(fe.name)
            if (fe.host, fe.listen) in seen_ports:
                raise LBError(f"routing table: two frontends listen on port {fe.listen}")
            seen_ports.add((fe.host, fe.listen))
        return cls(frontends, version)

    @classmethod
    def from_json(cls, text: str | bytes) -> RoutingTable:
        """Parse JSON text."""
        return cls.from_dict(parse_json(text, "routing table"))


def _pin_header(value: Any, where: str) -> str:
    if value != "" and (not isinstance(value, str) or not HEADER_NAME.fullmatch(value)):
        raise LBError(f"{where}: pin_header must be a header name (1-64 letters, digits, '-')")
    return str(value)


def _tracing(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The frontend's trace keys: `trace` (bool), `hop` (a name), `trace_header`."""
    hop = data.get("hop", "")
    if hop != "":
        hop = check_name(hop, f"{where}: hop")
    trace = data.get("trace", not hop)
    if not isinstance(trace, bool):
        raise LBError(f"{where}: trace must be true or false")
    header = data.get("trace_header", "")
    if header != "" and (not isinstance(header, str) or not HEADER_NAME.fullmatch(header)):
        raise LBError(f"{where}: trace_header must be a header name (1-64 letters, digits, "
                      "'-')")
    return {"trace": trace, "hop": hop, "trace_header": header}


def _no_constant(name: str) -> Any:
    raise LBError(f"{name} is not a JSON number")


def parse_json(text: str | bytes, what: str) -> Any:
    """JSON text as Python data; LBError (one line) for anything that is not strict JSON:
    invalid syntax, bytes that are not UTF-8, NaN or Infinity, nesting too deep to parse."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except LBError as exc:
        raise LBError(f"{what}: {exc}") from None
    except UnicodeDecodeError:
        raise LBError(f"{what}: not UTF-8 text") from None
    except ValueError as exc:
        raise LBError(f"{what}: not valid JSON ({exc})") from None
    except RecursionError:
        raise LBError(f"{what}: JSON nested too deeply") from None


def _only(data: dict[str, Any], allowed: set[str], where: str) -> None:
    # Unknown keys are typos far more often than features: refuse them.
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise LBError(f"{where}: unknown key(s) {', '.join(unknown)}")
