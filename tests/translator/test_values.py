"""Table-driven tests of the scalar parsers (Go semantics) and YAML scalar rules."""

from __future__ import annotations

from typing import Any

import pytest

from compose_translator import ComposeError
from compose_translator import _values as v
from compose_translator._yaml import parse_yaml


@pytest.mark.parametrize(("text", "ns"), [
    ("10s", 10 * 10**9), ("1m30s", 90 * 10**9), ("1.5s", 1_500_000_000), ("500ms", 5 * 10**8),
    ("2h", 7200 * 10**9), ("1us", 1000), ("0", 0), ("1h2m3s4ms", 3723004000000),
], ids=lambda x: str(x))
def test_duration(text: str, ns: int) -> None:
    assert v.parse_duration(text) == ns


@pytest.mark.parametrize("bad", ["10", "s", "1x", 10, ""], ids=str)
def test_duration_bad(bad: Any) -> None:
    with pytest.raises(ValueError):
        v.parse_duration(bad)


@pytest.mark.parametrize(("text", "size"), [
    ("50M", 50 * 2**20), ("1g", 2**30), ("512k", 512 * 1024), ("1.5G", 3 * 2**29),
    ("100", 100), (4096, 4096), ("64MiB", 64 * 2**20), ("2 GB", 2 * 2**30),
], ids=str)
def test_size(text: Any, size: int) -> None:
    assert v.parse_size(text) == size


@pytest.mark.parametrize(("value", "nano"), [
    ("0.5", 500_000_000), ("2", 2_000_000_000), (0.25, 250_000_000), (1, 10**9),
    ("0.000000001", 1),
], ids=str)
def test_cpus(value: Any, nano: int) -> None:
    assert v.parse_cpus(value) == nano


def test_cpus_too_precise() -> None:
    with pytest.raises(ValueError, match="too precise"):
        v.parse_cpus("0.0000000001")


@pytest.mark.parametrize(("value", "text"), [
    (True, "true"), (False, "false"), (1, "1"), (1.0, "1"), (1.5, "1.5"), (1e6, "1e+06"),
    (123456.0, "123456"), (0.0001, "0.0001"), (0.00001, "1e-05"), ("x", "x"),
], ids=str)
def test_go_str(value: Any, text: str) -> None:
    assert v.go_str(value) == text


@pytest.mark.parametrize(("spec", "expected"), [
    ("80", [(80, None, "tcp")]),
    ("8080:80", [(80, 8080, "tcp")]),
    ("53:53/udp", [(53, 53, "udp")]),
    ("127.0.0.1:8080:80", [(80, 8080, "tcp")]),
    ("[::1]:8080:80", [(80, 8080, "tcp")]),
    ("9000-9001:90-91", [(90, 9000, "tcp"), (91, 9001, "tcp")]),
    ("90-91", [(90, None, "tcp"), (91, None, "tcp")]),
    (443, [(443, None, "tcp")]),
], ids=str)
def test_ports(spec: Any, expected: list[tuple[int, int | None, str]]) -> None:
    got = [(p["target"], p["published"], p["protocol"]) for p in v.parse_ports(spec)]
    assert got == expected
    assert all(p["mode"] == "ingress" for p in v.parse_ports(spec))


@pytest.mark.parametrize("bad", ["x", "80/icmp", "1-2:80", "70000"], ids=str)
def test_ports_bad(bad: str) -> None:
    with pytest.raises(ValueError):
        v.parse_ports(bad)


@pytest.mark.parametrize(("spec", "expected"), [
    ("/data", {"type": "volume", "target": "/data"}),
    ("data:/data", {"type": "volume", "source": "data", "target": "/data"}),
    ("data:/data:ro", {"type": "volume", "source": "data", "target": "/data",
                       "read_only": True}),
    ("./src:/app:rw,rshared", {"type": "bind", "source": "./src", "target": "/app",
                               "read_only": False, "bind": {"propagation": "rshared"}}),
    ("~/x:/x", {"type": "bind", "source": "~/x", "target": "/x"}),
    ("data:/d:nocopy", {"type": "volume", "source": "data", "target": "/d",
                        "volume": {"nocopy": True}}),
    ("/h:/c:z", {"type": "bind", "source": "/h", "target": "/c", "_selinux": "z"}),
    ("c:\\data:/data", {"type": "bind", "source": "c:\\data", "target": "/data"}),
], ids=str)
def test_volume_spec(spec: str, expected: dict[str, Any]) -> None:
    assert v.parse_volume(spec) == expected


@pytest.mark.parametrize("bad", ["", "ab::c", "ab:/b:ro:x"], ids=repr)
def test_volume_spec_bad(bad: str) -> None:
    with pytest.raises(ValueError):
        v.parse_volume(bad)


@pytest.mark.parametrize(("text", "expected"), [
    ("a: yes", {"a": "yes"}), ("a: on", {"a": "on"}), ("a: 80:80", {"a": "80:80"}),
    ("a: 0440", {"a": 0o440}), ("a: 0o17", {"a": 15}), ("a: 0x1f", {"a": 31}),
    ("a: True", {"a": True}), ("a: ~", {"a": None}), ("a: 1.5", {"a": 1.5}),
    ("a: 08", {"a": 8}), ("a: '0440'", {"a": "0440"}),
], ids=str)
def test_yaml_scalars_like_go(text: str, expected: dict[str, Any]) -> None:
    assert parse_yaml(text, "f")[0] == expected


def test_yaml_duplicate_key_names_line() -> None:
    with pytest.raises(ComposeError, match=r"f\.yml:4: mapping key 'c' already defined"):
        parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\n", "f.yml")


def test_yaml_syntax_error_names_line() -> None:
    with pytest.raises(ComposeError, match=r"f\.yml:2: invalid YAML"):
        parse_yaml("a: 1\n  b: [\n", "f.yml")
