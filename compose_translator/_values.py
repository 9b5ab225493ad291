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
    "INT64_MAX",
    "go_str",
    "parse_cpus",
    "parse_duration",
    "parse_ports",
    "parse_size",
    "parse_volume",
    "shell_split",
    "shown",
    "to_bool",
    "to_float",
    "to_int",
    "to_port",
    "to_uint",
]

INT64_MAX = 2**63 - 1
_UINT_BITS_MAX = {32: 2**32 - 1, 64: 2**64 - 1}
_DECIMAL_INT = re.compile(r"[-+]?[0-9]+")
_SHOWN = 60


def shown(value: Any) -> str:
    """A value for a message: its repr, cut to a readable length."""
    text = repr(value)
    if len(text) <= _SHOWN:
        return text
    size = len(value) if isinstance(value, str) else len(text)
    return f"{text[:_SHOWN - 5]}...{text[-4:]} ({size} characters)"

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
    """A Go duration string (`1m30s`, `500ms`) in nanoseconds, within int64 as in Go."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"invalid duration {shown(value)}: write it as a string like '10s'")
    text = value.strip()
    if len(text) > 100:
        raise ValueError(f"invalid duration {shown(value)}: too long")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    if text == "0":
        return 0
    pos, total = 0, Fraction(0)
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match or match.group(1) in ("", "."):
            raise ValueError(f"invalid duration {shown(value)}")
        total += Fraction(match.group(1)) * _UNITS_NS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError(f"invalid duration {shown(value)}")
    if total > INT64_MAX:
        raise ValueError(f"invalid duration {shown(value)}: more than about 292 years "
                         "(the largest duration is 2562047h47m16.854775807s)")
    return sign * int(total)


_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?) ?([kKmMgGtTpP])?[iI]?[bB]?\Z")


def parse_size(value: Any) -> int:
    """A memory size (`512M`, `1g`, or a number of bytes) in bytes, binary multipliers; not
    negative and within int64, as the Engine stores it."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {shown(value)}")
    if isinstance(value, int | float):
        number, multiplier = value, 1
    else:
        text = str(value)
        match = _SIZE.match(text) if len(text) <= 100 else None
        if not match:
            raise ValueError(f"invalid size {shown(value)}")
        number = float(match.group(1))
        multiplier = 1024 ** " kmgtp".index((match.group(2) or " ").lower())
    if number != number or not 0 <= number * multiplier <= INT64_MAX:
        raise ValueError(f"invalid size {shown(value)}: must be between 0 and {INT64_MAX} bytes")
    return int(number * multiplier)


def parse_cpus(value: Any) -> int:
    """A CPU count (`0.5`, `2`) in nano-CPUs; more than nine decimals is an error.

    The magnitude is checked on the decimal exponent before any exact arithmetic, so
    `1e999999999` is refused at once instead of computing a billion-digit fraction.
    """
    text = go_str(value) if not isinstance(value, str) else value.strip()
    try:
        if isinstance(value, bool) or len(text) > 100:
            raise ValueError
        decimal = Decimal(text)
        if not decimal.is_finite() or decimal < 0:
            raise ValueError
    except (ValueError, ArithmeticError):
        raise ValueError(f"invalid CPU count {shown(value)}: write a number like 0.5 or 2"
                         ) from None
    if decimal.adjusted() > 9:
        raise ValueError(f"invalid CPU count {shown(value)}: more CPUs than any machine has")
    if decimal.adjusted() < -10:
        raise ValueError(f"value {shown(value)} is too precise")
    nano = Fraction(decimal) * 10**9
    if nano.denominator != 1:
        raise ValueError(f"value {shown(value)} is too precise")
    return int(nano)


def to_int(value: Any, low: int = -INT64_MAX - 1, high: int = INT64_MAX) -> int:
    """An integer that interpolation may have turned into a string, in `low..high` (int64
    by default, like the Go fields the CLI decodes into)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {shown(value)}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and len(value) <= 40 and _DECIMAL_INT.fullmatch(value.strip()):
        number = int(value.strip(), 10)
    else:
        raise ValueError(f"expected a number (a whole one), got {shown(value)}")
    if not low <= number <= high:
        limits = f"at least {low}" if high >= INT64_MAX else f"between {low} and {high}"
        raise ValueError(f"{number} is out of range: must be {limits}")
    return number


def to_uint(value: Any, bits: int = 64) -> int:
    """An unsigned integer (Go uint64 or uint32): negative values are refused."""
    return to_int(value, 0, _UINT_BITS_MAX[bits])


def to_port(value: Any, low: int = 0) -> int:
    """A port number, 0-65535 (`low` 1 for a target port)."""
    return to_int(value, low, 65535)


def to_float(value: Any) -> float:
    """A float that interpolation may have turned into a string."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"expected a number, got {shown(value)}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite number, got {shown(value)}")
    return number


def to_bool(value: Any) -> bool:
    """A boolean that interpolation may have turned into a string (Go strconv.ParseBool)."""
    if isinstance(value, bool):
        return value
    text = str(value)
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"expected true or false, got {shown(value)}")


def shell_split(value: Any) -> list[str]:
    """A command given as a string, split like a POSIX shell would (no expansion)."""
    if isinstance(value, list):
        return [go_str(v) for v in value]
    try:
        return shlex.split(str(value))
    except ValueError as exc:
        raise ValueError(f"cannot split command {shown(value)}: {exc}") from None


_PORT_DIGITS = re.compile(r"[0-9]{1,5}")


def _port_range(text: str) -> tuple[int, int]:
    if not text:
        raise ValueError("empty port")
    start, _, end = text.partition("-")
    if not _PORT_DIGITS.fullmatch(start) or not _PORT_DIGITS.fullmatch(end or start):
        raise ValueError(f"invalid port {shown(text)}")
    low, high = int(start), int(end or start)
    if not (0 <= low <= 65535 and 0 <= high <= 65535) or high < low:
        raise ValueError(f"invalid port range {shown(text)}")
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
            raise ValueError(f"invalid port specification {shown(text)}: ranges differ in size")
    else:
        hlow = None
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid protocol {shown(proto)} in port {shown(text)}")
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


def _volume_option(volume: dict[str, Any], option: str) -> None:
    if option in ("ro", "rw"):
        volume["read_only"] = option == "ro"
    elif option == "nocopy":
        volume["volume"] = {"nocopy": True}
    elif option in _PROPAGATIONS:
        volume["bind"] = {"propagation": option}
    elif option in ("z", "Z"):
        volume["_selinux"] = option


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
                raise ValueError(f"invalid spec {shown(spec)}: empty section between colons")
            if "source" not in volume and char == "\0":
                volume["target"] = buffer
            elif "source" not in volume:
                volume["source"] = buffer
            elif "target" not in volume:
                volume["target"] = buffer
            elif char == ":":
                raise ValueError(f"invalid spec {shown(spec)}: too many colons")
            else:
                for option in buffer.split(","):
                    _volume_option(volume, option)
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
