"""Version pinning at the edge (lb._pinning): stamps on answers, stamps routing requests, hostile
stamps, pinned-request metrics. Unit tests of the parsing, then the LB on loopback sockets."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any

import pytest

from lb._pinning import TARGET, request_target, wanted_version
from lb.errors import LBError
from lb.table import RoutingTable
from tests.lb.promtext import values
from tests.lb.support import Backend, LBProcess, free_port, frontend

StartBackend = Callable[[str], Backend]
StartLB = Callable[..., LBProcess]


@pytest.mark.parametrize(("headers", "want"), [
    ({"x-dans-version": "v1"}, "v1"),
    ({"cookie": "a=b; dans-version=v1; c=d"}, "v1"),
    ({"cookie": 'dans-version="v1"'}, "v1"),
    ({TARGET: "/vote?x=1&dans-version=v1"}, "v1"),
    ({"x-dans-version": "v2", "cookie": "dans-version=v1"}, "v2"),
    ({"cookie": "dans-version=v1", TARGET: "/?dans-version=v2"}, "v1"),
    ({}, None),
    ({"x-dans-version": "../etc"}, None),
    ({"x-dans-version": "v1\r\nX-Evil: 1"}, None),
    ({"x-dans-version": "v" * 65}, None),
    ({"x-dans-version": ""}, None),
    ({"cookie": "dans-version=%76%31"}, None),
    ({"cookie": "xdans-version=v1"}, None),
    ({TARGET: "/?dans-version=v1%00"}, None),
    ({TARGET: "/#?dans-version=v1"}, None),
    ({"cookie": "x" * 9000 + "; dans-version=v1"}, None),  # beyond the bytes looked at
], ids=["header", "cookie", "quoted-cookie", "query", "header-first", "cookie-before-query",
        "none", "path", "crlf", "too-long", "empty", "percent", "other-cookie", "nul", "fragment",
        "huge-cookie"])
def test_wanted_version(headers: dict[str, str], want: str | None) -> None:
    assert wanted_version(headers) == want


def test_app_header_replaces_the_stamps() -> None:
    headers = {"accept-version": "v1", "x-dans-version": "v2"}
    assert wanted_version(headers, "Accept-Version") == "v1"
    assert wanted_version({"x-dans-version": "v2"}, "Accept-Version") is None


def test_request_target() -> None:
    assert request_target(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n") == "/a?b=c"
    assert request_target(b"garbage") == ""


@pytest.mark.parametrize("bad", [
    {"version": "v 1"}, {"version": 3}, {"version": "-v1"}, {"version": "a" * 65},
], ids=["space", "number", "dash-first", "long"])
def test_table_refuses_bad_versions(bad: dict[str, Any]) -> None:
    fe = frontend("web", 8080, {"a": ["x:1"]}, "a")
    fe["groups"]["a"].update(bad)
    with pytest.raises(LBError, match="version"):
        RoutingTable.from_dict({"frontends": [fe]})


def test_table_keeps_versions_and_pin_header() -> None:
    fe = frontend("web", 8080, {"a": ["x:1"]}, "a", policy="pinned", pin_header="Accept-Version")
    fe["groups"]["a"]["version"] = "v1.2_3"
    table = RoutingTable.from_dict({"frontends": [fe]})
    assert RoutingTable.from_dict(table.to_dict()) == table
    with pytest.raises(LBError, match="pin_header"):
        RoutingTable.from_dict({"frontends": [{**fe, "pin_header": "Bad Header"}]})


def pinned_table(port: int, groups: dict[str, tuple[Backend, str]], active: str,
                 **extra: Any) -> dict[str, Any]:
    fe = frontend("web", port, {g: [b.addr] for g, (b, _) in groups.items()}, active,
                  policy="pinned", **extra)
    for g, (_, version) in groups.items():
        fe["groups"][g]["version"] = version
    return {"frontends": [fe]}


def ask(port: int, path: str = "/", headers: dict[str, str] | None = None
        ) -> tuple[int, str, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), resp
    finally:
        conn.close()


def test_answers_are_stamped_and_stamps_route(backend: StartBackend,
                                              lb_process: StartLB) -> None:
    old, mid, new = backend("V1"), backend("V2"), backend("V3")
    port = free_port()
    lb = lb_process(pinned_table(port, {"main": (new, "v3"), "keep-a": (old, "v1"),
                                        "keep-b": (mid, "v2")}, "main"))
    status, body, resp = ask(port)
    assert (status, body) == (200, "V3")
    assert resp.getheader("X-Dans-Version") == "v3"
    assert "dans-version=v3" in (resp.getheader("Set-Cookie") or "")
    cases = [({"X-Dans-Version": "v1"}, "/", "V1"), ({"Cookie": "dans-version=v2"}, "/", "V2"),
             ({}, "/?dans-version=v1", "V1"), ({"X-Dans-Version": "v9"}, "/", "V3"),
             ({"X-Dans-Version": "v1;drop"}, "/", "V3"), ({"Cookie": "dans-version=" + "v" * 500},
                                                        "/", "V3")]
    for headers, path, served in cases:
        status, body, resp = ask(port, path, headers)
        assert (status, body) == (200, served), (headers, path)
        assert resp.getheader("X-Dans-Version") == served.lower()
    pinned = {dict(labels)["version"]: n for labels, n in
              values(lb.admin.metrics(), "dans_lb_pinned_requests_total").items()}
    assert pinned == {"v1": 2, "v2": 1}
    assert values(lb.admin.metrics(), "dans_lb_pinned_last_timestamp_seconds", version="v1")


def test_a_draining_kept_version_sends_its_clients_to_the_current_one(
        backend: StartBackend, lb_process: StartLB) -> None:
    old, new = backend("V1"), backend("V2")
    port = free_port()
    table = pinned_table(port, {"main": (new, "v2"), "keep": (old, "v1")}, "main")
    table["frontends"][0]["groups"]["keep"]["state"] = "draining"
    lb_process(table)
    assert ask(port, headers={"X-Dans-Version": "v1"})[1] == "V2"


def test_app_header_routes_when_configured(backend: StartBackend, lb_process: StartLB) -> None:
    old, new = backend("V1"), backend("V2")
    port = free_port()
    lb_process(pinned_table(port, {"main": (new, "v2"), "keep": (old, "v1")}, "main",
                            pin_header="Accept-Version"))
    assert ask(port, headers={"Accept-Version": "v1"})[1] == "V1"
    assert ask(port, headers={"X-Dans-Version": "v1"})[1] == "V2"


def test_groups_without_versions_are_not_stamped(backend: StartBackend,
                                                 lb_process: StartLB) -> None:
    a = backend("A")
    port = free_port()
    lb_process({"frontends": [frontend("web", port, {"a": [a.addr]}, "a")]})
    status, body, resp = ask(port, headers={"X-Dans-Version": "v1"})
    assert (status, body) == (200, "A")
    assert resp.getheader("X-Dans-Version") is None and resp.getheader("Set-Cookie") is None
