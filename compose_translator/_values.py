"""Scalar parsers with the semantics of the Go libraries the docker CLI uses.

Durations follow `time.ParseDuration`, sizes `units.RAMInBytes`, CPUs `opts.ParseCPUs`,
port specs `nat.ParsePortSpec`, volume specs the CLI's `ParseVolume`, and numbers printed
into strings Go's `%v`. Each raises ValueError with a message fit for the user.
"""

from __future__ import annotations

import re
import shlex
from decimal import Decimal
from fractions import Fraction
from typing import Any

__all__ = [
    "go_str", "parse_duration", "parse_size", "parse_cpus", "parse_ports", "parse_volume",
    "shell_split", "to_int", "to_bool", "to_float",
]

_UNITS_NS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 10**6, "s": 10**9,
             "m": 60 * 10**9, "h": 3600 * 10**9}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def go_str(value: Any) -> str:
    """A YAML scalar as Go's fmt.Sprint prints it (`true`, `1`, `1.5`, `1e+06`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "+Inf" if value > 0 else "-Inf"
        dec = Decimal(repr(value)).normalize()
        exp = dec.adjusted()
        if exp < -4 or exp >= 6:  # strconv shortest %g switches at 1e6
            digits = f"{dec:e}"
            mant, e = digits.split("e")
            return f"{mant}e{int(e):+03d}"
        return format(dec, "f")
    return str(value)


def parse_duration(value: Any) -> int:
    """A Go duration string (`1m30s`, `500ms`) in nanoseconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: write it as a string like '10s'")
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    if text == "0":
        return 0
    pos, total = 0, Fraction(0)
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match or match.group(1) in ("", "."):
            raise ValueError(f"invalid duration {value!r}")
        total += Fraction(match.group(1)) * _UNITS_NS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError(f"invalid duration {value!r}")
    return sign * int(total)


_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")


def parse_size(value: Any) -> int:
    """A memory size (`512M`, `1g`, or a number of bytes) in bytes, binary multipliers."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int | float):
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"invalid size {value!r}")
    number = float(match.group(1))
    unit = (match.group(2) or "").lower()
    return int(number * 1024 ** " kmgtp".index(unit or " "))


def parse_cpus(value: Any) -> int:
    """A CPU count (`0.5`, `2`) in nano-CPUs; more than nine decimals is an error."""
    try:
        nano = Fraction(str(value)) * 10**9
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"failed to parse {value!r} as a rational number") from None
    if nano.denominator != 1:
        raise ValueError(f"value {value!r} is too precise")
    return int(nano)


def to_int(value: Any) -> int:
    """An integer that interpolation may have turned into a string."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip(), 10)
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None


def to_float(value: Any) -> float:
    """A float that interpolation may have turned into a string."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def to_bool(value: Any) -> bool:
    """A boolean that interpolation may have turned into a string (Go strconv.ParseBool)."""
    if isinstance(value, bool):
        return value
    text = str(value)
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def shell_split(value: Any) -> list[str]:
    """A command given as a string, split like a POSIX shell would (no expansion)."""
    if isinstance(value, list):
        return [go_str(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError as exc:
        raise ValueError(f"cannot split command {value!r}: {exc}") from None


def _port_range(text: str) -> tuple[int, int]:
    if not text:
        raise ValueError("empty port")
    start, _, end = text.partition("-")
    try:
        low, high = int(start), int(end or start)
    except ValueError:
        raise ValueError(f"invalid port {text!r}") from None
    if not (0 <= low <= 65535 and 0 <= high <= 65535) or high < low:
        raise ValueError(f"invalid port range {text!r}")
    return low, high


def parse_ports(spec: Any) -> list[dict[str, Any]]:
    """A short-syntax port (`8080:80/udp`, `127.0.0.1:80:80`, `9000-9001:90-91`) as long form."""
    text = str(spec)
    container, _, proto = text.rpartition("/") if "/" in text else (text, "", "tcp")
    parts = container.rsplit(":", 2) if container.count(":") <= 2 else None
    if parts is None:  # IPv6 host address: [::1]:80:80
        head, host, cport = container.rsplit(":", 2)
        parts = [head, host, cport]
    host_ip, host_port, cport = ([""] * (3 - len(parts)) + parts)
    del host_ip  # Swarm publishes on every address; the CLI ignores it too
    low, high = _port_range(cport)
    if host_port:
        hlow, hhigh = _port_range(host_port)
        if hhigh - hlow != high - low:
            raise ValueError(f"invalid port specification {text!r}: ranges differ in size")
    else:
        hlow = None
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid protocol {proto!r} in port {text!r}")
    result = []
    for i in range(high - low + 1):
        published = hlow + i if hlow is not None else None
        result.append({"target": low + i, "published": published, "protocol": proto,
                       "mode": "ingress"})
    # nat.ParsePortSpecs keys ports by "port/proto" and the CLI walks them sorted as strings.
    result.sort(key=lambda p: f"{p['target']}/{p['protocol']}")
    return result


_PROPAGATIONS = {"rprivate", "private", "rshared", "shared", "rslave", "slave"}


def _is_windows_drive(buffer: str, char: str) -> bool:
    return char == ":" and len(buffer) == 1 and buffer.isalpha()


def parse_volume(spec: str) -> dict[str, Any]:
    """A short-syntax volume (`data:/data:ro`, `./src:/app`, `/cache`) as long form.

    Unknown options are ignored as the CLI does; `z`/`Z` come back under `_selinux` so the
    caller can warn about them.
    """
    if not spec:
        raise ValueError("invalid empty volume spec")
    volume: dict[str, Any] = {}
    if len(spec) <= 2:
        return {"type": "volume", "target": spec}
    buffer = ""
    for char in spec + "\0":
        if _is_windows_drive(buffer, char):
            buffer += char
        elif char in (":", "\0"):
            if not buffer:
                raise ValueError(f"invalid spec {spec!r}: empty section between colons")
            if "source" not in volume and char == "\0":
                volume["target"] = buffer
            elif "source" not in volume:
                volume["source"] = buffer
            elif "target" not in volume:
                volume["target"] = buffer
            elif char == ":":
                raise ValueError(f"invalid spec {spec!r}: too many colons")
            else:
                for option in buffer.split(","):
                    if option == "ro":
                        volume["read_only"] = True
                    elif option == "rw":
                        volume["read_only"] = False
                    elif option == "nocopy":
                        volume["volume"] = {"nocopy": True}
                    elif option in _PROPAGATIONS:
                        volume["bind"] = {"propagation": option}
                    elif option in ("z", "Z"):
                        volume["_selinux"] = option
            buffer = ""
        else:
            buffer += char
    source = volume.get("source", "")
    if not source:
        volume["type"] = "volume"
    elif source[0] in "./~" or source.startswith("\\\\") or (
            len(source) > 1 and _is_windows_drive(source[0], source[1])):
        volume["type"] = "bind"
    else:
        volume["type"] = "volume"
    return volume
