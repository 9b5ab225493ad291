"""The routing table model: JSON round trip and the errors that name what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from lb._server import load_table, load_token
from lb.errors import LBError
from lb.table import RoutingTable, split_target

FULL = {"frontends": [
    {"name": "web", "listen": 8080, "host": "0.0.0.0", "mode": "http", "active": "v2",
     "groups": {"v1": {"backends": ["tasks.shop_front:80"], "state": "draining"},
                "v2": {"backends": ["tasks.shop_front-next:80", "10.0.0.7:80"],
                       "state": "active"}},
     "timeouts": {"connect": 1.5, "read": 30.0, "header": 5.0, "body": 20.0, "keepalive": 30.0,
                  "tunnel": 600.0},
     "retries": 3, "policy": "active"},
    {"name": "db", "listen": 5432, "host": "0.0.0.0", "mode": "tcp", "active": "old",
     "groups": {"old": {"backends": ["tasks.shop_db:5432"], "state": "active"}},
     "timeouts": {"connect": 2.0, "read": 60.0, "header": 10.0, "body": 30.0,
                  "keepalive": 60.0, "tunnel": 3600.0},
     "retries": 2, "policy": "active"},
]}


def test_round_trip() -> None:
    table = RoutingTable.from_dict(FULL)
    assert table.to_dict() == FULL
    assert RoutingTable.from_json(table.to_json()) == table
    assert table.frontend("db").groups["old"].backends == ("tasks.shop_db:5432",)


def test_defaults() -> None:
    table = RoutingTable.from_dict({"frontends": [
        {"name": "w", "listen": 80, "active": "a", "groups": {"a": {"backends": ["h:1"]}}}]})
    fe = table.frontend("w")
    t = fe.timeouts
    assert (fe.mode, fe.retries, fe.groups["a"].state) == ("http", 2, "active")
    assert (t.connect, t.read, t.header, t.body, t.keepalive, t.tunnel) == \
        (2.0, 60.0, 10.0, 30.0, 60.0, 3600.0)


def _fe(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "w", "listen": 80, "active": "a",
                            "groups": {"a": {"backends": ["h:1"]}}}
    base.update(over)
    return {"frontends": [base]}


@pytest.mark.parametrize("data, message", [
    ([], "expected an object"),
    ({"frontend": []}, "unknown key"),
    (_fe(listen=70000), "listen must be a port number from 1 to 65535"),
    (_fe(listen=0), "listen must be a port number from 1 to 65535"),
    (_fe(timeouts={"read": float("nan")}), "timeouts.read must be a finite number"),
    (_fe(timeouts={"body": float("inf")}), "timeouts.body must be a finite number"),
    (_fe(timeouts={"tunnel": 10 ** 400}), "timeouts.tunnel must be a finite number"),
    (_fe(timeouts={"connect": True}), "timeouts.connect must be a finite number"),
    (_fe(name="we\nb"), "printable"),
    (_fe(name="x" * 300), "at most 200"),
    (_fe(groups={"a/b": {"backends": ["h:1"]}}, active="a/b"), "group name"),
    (_fe(host="caf\xe9"), "host must be an IP address"),
    (_fe(groups={"a": {"backends": ["h\x00:1"]}}), "not a host name"),
    (_fe(groups={"a": {"backends": ["h:0"]}}), "port 1-65535"),
    (_fe(groups={"a": {"backends": ["[x]:1"]}}), "not an IPv6 address"),
    (_fe(mode="udp"), "mode must be one of"),
    (_fe(active="b"), "active group 'b'"),
    (_fe(groups={}), "groups must be a non-empty"),
    (_fe(groups={"a": {"backends": ["nohost"]}}), "expected host:port"),
    (_fe(groups={"a": {"backends": ["h:1"], "state": "draining"}}), "cannot be draining"),
    (_fe(groups={"a": {"backends": ["h:1"], "state": "gone"}}), "state must be"),
    (_fe(timeouts={"read": -1}), "timeouts.read must be a finite number of seconds, more than 0"),
    (_fe(retries=99), "retries must be"),
    (_fe(policy="trace"), "policy must be one of"),
    (_fe(engine="fast"), "the 'engine' key is gone: the LB has one HTTP engine"),
    (_fe(timeouts={"header": 0}), "timeouts.header must be a finite number of seconds"),
    (_fe(colour="red"), "unknown key"),
    ({"frontends": [_fe()["frontends"][0], _fe()["frontends"][0]]}, "two frontends named"),
], ids=["not-object", "typo", "port", "port-0", "nan-timeout", "infinite-timeout",
        "huge-int-timeout", "bool-timeout", "control-char-name", "long-name", "slash-in-group",
        "non-ip-listen-host", "nul-backend", "backend-port-0", "bad-ipv6", "mode", "active",
        "no-groups", "target", "draining-active",
        "state", "timeout", "retries", "policy", "engine-key-gone", "header-timeout", "unknown",
        "duplicate"])
def test_invalid_tables(data: Any, message: str) -> None:
    with pytest.raises(LBError, match=message):
        RoutingTable.from_dict(data)


@pytest.mark.parametrize("target, expected", [
    ("tasks.web:80", ("tasks.web", 80)),
    ("10.0.0.1:8080", ("10.0.0.1", 8080)),
    ("[::1]:443", ("::1", 443)),
], ids=["name", "ipv4", "ipv6"])
def test_split_target(target: str, expected: tuple[str, int]) -> None:
    assert split_target(target) == expected


def test_start_up_configuration(tmp_path: Any) -> None:
    path = tmp_path / "routes.json"
    path.write_text(RoutingTable.from_dict(FULL).to_json())
    assert load_table(str(path), {}) == RoutingTable.from_dict(FULL)
    assert load_table(None, {"DANS_LB_CONFIG": str(path)}) == RoutingTable.from_dict(FULL)
    assert load_table(None, {"DANS_LB_CONFIG": '{"frontends": []}'}) == RoutingTable()
    assert load_table(None, {}) == RoutingTable()
    with pytest.raises(LBError, match="cannot read the routing table"):
        load_table(str(tmp_path / "missing.json"), {})
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    assert load_token(None, {"DANS_LB_TOKEN_FILE": str(secret), "DANS_LB_TOKEN": "x"}) == "s3cret"
    assert load_token(None, {"DANS_LB_TOKEN": "x"}) == "x"


@pytest.mark.parametrize("text, message", [
    ('{"frontends": [{"name": "w", "listen": 80, "active": "a", "timeouts": {"read": NaN},'
     ' "groups": {"a": {"backends": ["h:1"]}}}]}', "NaN is not a JSON number"),
    ('{"frontends": [], "x": Infinity}', "Infinity is not a JSON number"),
    ('{"frontends": [], "x": -Infinity}', "-Infinity is not a JSON number"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (b'{"frontends": [{"name": "caf\xe9"}]}', "not UTF-8"),
    ("{", "not valid JSON"),
], ids=["nan", "infinity", "minus-infinity", "deep-nesting", "not-utf8", "syntax"])
def test_table_json_that_is_not_strict_json_is_one_clear_error(
        text: str | bytes, message: str) -> None:
    with pytest.raises(LBError, match=message) as caught:
        RoutingTable.from_json(text)
    assert "\n" not in str(caught.value)
