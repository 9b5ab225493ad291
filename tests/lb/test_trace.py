"""Trace identity (`lb._trace`): the edge's traceparent and the trace id a waypoint reads.

The parser is tested table-driven and by properties; the edge behaviour on a real LB process
with a byte-capturing backend: what reaches the backend is what the test asserts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb._http_heads import request_head
from lb._trace import (
    edge_traceparent,
    new_traceparent,
    trace_id,
    traceparent_trace_id,
    valid_traceparent,
)
from lb.errors import LBError
from lb.table import Frontend, RoutingTable
from tests.lb.raw import CaptureBackend, talk
from tests.lb.support import LBProcess, LoopThread, free_port, frontend, wait_until

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GOOD = f"00-{TRACE}-00f067aa0ba902b7-01".encode()
W3C = re.compile(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-01")



def _hexstr(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdef", min_size=n, max_size=n)


@pytest.mark.parametrize("value, ok", [
    (GOOD, True),
    (GOOD.replace(b"-01", b"-00"), True),  # not sampled: still valid context
    (b"  " + GOOD + b" ", True),  # optional whitespace around a field value
    (GOOD[:-1], False),  # too short
    (GOOD + b"0", False),  # version 00 is exactly 55 characters
    (GOOD.upper(), False),  # lower-case hex only
    (b"ff" + GOOD[2:], False),  # version ff is invalid
    (b"0x" + GOOD[2:], False),
    (b"00-" + b"0" * 32 + GOOD[35:], False),  # all-zero trace id
    (GOOD[:36] + b"0" * 16 + b"-01", False),  # all-zero parent id
    (GOOD.replace(b"-00f0", b"_00f0"), False),
    (GOOD[:-2] + b"0g", False),
    (b"01" + GOOD[2:] + b"-what-comes-later", True),  # a later version may add fields
    (b"01" + GOOD[2:] + b"x", False),
    (b"", False),
], ids=["good", "unsampled", "ows", "short", "long-v00", "upper", "v-ff", "v-not-hex",
        "zero-trace", "zero-parent", "bad-dash", "flags-not-hex", "future-version",
        "future-no-dash", "empty"])
def test_traceparent_validity(value: bytes, ok: bool) -> None:
    assert valid_traceparent(value) is ok
    assert (traceparent_trace_id(value) == TRACE.encode()) is ok


def test_new_traceparents_are_valid_and_distinct() -> None:
    made = {new_traceparent() for _ in range(200)}
    assert len(made) == 200
    assert all(W3C.fullmatch(v) and valid_traceparent(v) for v in made)
    assert len({v[3:35] for v in made}) == 200


@pytest.mark.parametrize("values, kept", [
    ([GOOD], True), (None, False), ([GOOD, GOOD], False), ([b"junk"], False),
    ([b"ff" + GOOD[2:]], False),
], ids=["valid", "none", "twice", "junk", "v-ff"])
def test_edge_keeps_one_valid_traceparent_else_gives_one(values: list[bytes] | None,
                                                         kept: bool) -> None:
    value, fresh = edge_traceparent(values)
    assert fresh is not kept
    assert (value == GOOD) is kept
    assert valid_traceparent(value)


@pytest.mark.parametrize("headers, extra, want", [
    ([(b"Traceparent", GOOD)], b"", TRACE),
    ([(b"x-b3-traceid", TRACE.encode())], b"", TRACE),
    ([(b"X-B3-TraceId", b"a3ce929d0e0e4736")], b"", "0" * 16 + "a3ce929d0e0e4736"),
    ([(b"X-B3-TraceId", TRACE.upper().encode())], b"", TRACE),
    ([(b"traceparent", b"junk"), (b"x-b3-traceid", b"a3ce929d0e0e4736")], b"",
     "0" * 16 + "a3ce929d0e0e4736"),
    ([(b"x-b3-traceid", b"abc")], b"", None),  # neither 16 nor 32 digits
    ([(b"x-b3-traceid", b"0" * 32)], b"", None),
    ([(b"X-Request-Id", b"order-17")], b"x-request-id", "order-17"),
    ([(b"X-Request-Id", b"order 17")], b"x-request-id", None),  # not a token
    ([(b"X-Request-Id", b"x" * 129)], b"x-request-id", None),
    ([(b"X-Request-Id", b"order-17")], b"", None),  # no header named in the settings
    ([(b"traceparent", GOOD), (b"traceparent", GOOD)], b"", None),  # repeated: invalid
    ([(b"traceparent", GOOD), (b"x-b3-traceid", b"a3ce929d0e0e4736")], b"", TRACE),
    ([], b"", None),
], ids=["traceparent", "b3-128", "b3-64", "b3-upper", "bad-parent-then-b3", "b3-short",
        "b3-zero", "own", "own-space", "own-long", "own-unnamed", "parent-twice",
        "parent-first", "nothing"])
def test_trace_id_sources(headers: list[tuple[bytes, bytes]], extra: bytes,
                          want: str | None) -> None:
    assert trace_id(headers, extra) == want


@given(_hexstr(2), _hexstr(32), _hexstr(16), _hexstr(2))
def test_traceparent_parse_property(version: str, trace: str, parent: str, flags: str) -> None:
    value = f"{version}-{trace}-{parent}-{flags}".encode()
    expect = version != "ff" and set(trace) != {"0"} and set(parent) != {"0"}
    assert valid_traceparent(value) is expect
    got = trace_id([(b"traceparent", value)])
    assert got == (trace if expect else None)


@given(st.binary(max_size=80))
def test_any_bytes_never_raise_and_valid_means_well_formed(value: bytes) -> None:
    found = traceparent_trace_id(value)
    if found is not None:
        assert re.fullmatch(rb"[0-9a-f]{32}", found) and found != b"0" * 32
    kept, fresh = edge_traceparent([value])
    assert valid_traceparent(kept)
    assert fresh is (found is None)


@given(_hexstr(32), _hexstr(16), st.sampled_from(["00", "01"]))
def test_trace_id_ignores_the_parent_id(trace: str, parent: str, flags: str) -> None:
    # Every hop sends a new parent id: the trace is the trace-id field alone.
    a = f"00-{trace}-{parent}-{flags}".encode()
    b = f"00-{trace}-{'1' * 16}-01".encode()
    if set(trace) != {"0"} and set(parent) != {"0"}:
        assert trace_id([(b"traceparent", a)]) == trace_id([(b"traceparent", b)]) == trace


def _forwarded(head: bytes) -> list[bytes]:
    return [line.split(b": ", 1)[1] for line in head.split(b"\r\n")
            if line.lower().startswith(b"traceparent:")]


def test_request_head_adds_or_keeps_exactly_one_traceparent() -> None:
    host = [(b"Host", b"x")]
    plain = request_head(b"GET", b"/", "1.1", host, b"10.0.0.1", b"80")
    assert _forwarded(plain.data) == [] and not plain.fresh_trace
    new = request_head(b"GET", b"/", "1.1", host, b"10.0.0.1", b"80", True)
    assert len(_forwarded(new.data)) == 1 and W3C.fullmatch(_forwarded(new.data)[0])
    assert new.fresh_trace
    kept = request_head(b"GET", b"/", "1.1", [*host, (b"traceparent", GOOD)], b"1", b"80", True)
    assert _forwarded(kept.data) == [GOOD] and not kept.fresh_trace
    # Nominating it in Connection does not drop it: the edge always forwards one.
    nominated = request_head(b"GET", b"/", "1.1", [*host, (b"Connection", b"traceparent"),
                                                   (b"traceparent", b"junk")], b"1", b"80", True)
    assert len(_forwarded(nominated.data)) == 1 and _forwarded(nominated.data) != [b"junk"]


def test_table_round_trip_and_refusals() -> None:
    fe = frontend("web", 8080, {"a": ["x:1"]}, "a", trace=True, hop="api",
                  trace_header="X-Request-Id")
    table = RoutingTable.from_dict({"frontends": [fe]})
    assert table.frontends[0].trace and table.frontends[0].hop == "api"
    assert RoutingTable.from_json(table.to_json()) == table
    for bad in ({"trace": "yes"}, {"trace_header": "Bad Header"}, {"hop": ""},
                {"hop": "a/b"}):
        if bad == {"hop": ""}:
            assert not RoutingTable.from_dict({"frontends": [{**fe, **bad}]}).frontends[0].hop
            continue
        with pytest.raises(LBError):
            RoutingTable.from_dict({"frontends": [{**fe, **bad}]})


@pytest.fixture(scope="module")
def capture(loops: LoopThread) -> Iterator[CaptureBackend]:
    b = CaptureBackend(loops)
    yield b
    b.close()


@pytest.fixture(scope="module")
def ports(capture: CaptureBackend) -> Iterator[tuple[int, int]]:
    edge, plain = free_port(), free_port()
    p = LBProcess({"frontends": [frontend("edge", edge, {"a": [capture.addr]}, "a"),
                                 frontend("plain", plain, {"a": [capture.addr]}, "a",
                                          trace=False)]})
    yield edge, plain
    p.stop()


def _seen_traces(capture: CaptureBackend, n: int) -> list[list[bytes]]:
    wait_until(lambda: len(capture.seen) >= n, timeout=10, what=f"{n} requests at the backend")
    return [[v for k, v in s.headers if k.lower() == b"traceparent"] for s in capture.seen]


def test_edge_gives_each_request_its_own_trace(ports: tuple[int, int],
                                               capture: CaptureBackend) -> None:
    capture.seen.clear()
    req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    got = talk(ports[0], req * 3, answers=3)  # the same head thrice on one connection
    assert [s for s, _, _ in got.done] == [200, 200, 200]
    traces = _seen_traces(capture, 3)
    assert all(len(t) == 1 and W3C.fullmatch(t[0]) for t in traces)
    assert len({t[0][3:35] for t in traces}) == 3  # never the cached head's trace again


def test_edge_keeps_a_valid_and_replaces_an_invalid_traceparent(
        ports: tuple[int, int], capture: CaptureBackend) -> None:
    capture.seen.clear()
    bad = b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01"
    talk(ports[0], b"GET /k HTTP/1.1\r\nHost: x\r\ntraceparent: " + GOOD + b"\r\n\r\n")
    talk(ports[0], b"GET /r HTTP/1.1\r\nHost: x\r\ntraceparent: " + bad + b"\r\n\r\n")
    kept, replaced = _seen_traces(capture, 2)
    assert kept == [GOOD]
    assert len(replaced) == 1 and replaced != [bad] and W3C.fullmatch(replaced[0])


def test_a_frontend_without_trace_forwards_headers_as_they_came(
        ports: tuple[int, int], capture: CaptureBackend) -> None:
    capture.seen.clear()
    talk(ports[1], b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
    talk(ports[1], b"GET /q HTTP/1.1\r\nHost: x\r\ntraceparent: junk\r\n\r\n")
    assert _seen_traces(capture, 2) == [[], [b"junk"]]


@pytest.mark.parametrize(("data", "trace", "written"), [
    pytest.param({}, True, None, id="edge-default-on-not-written"),
    pytest.param({"trace": False}, False, False, id="edge-off-written"),
    pytest.param({"hop": "api"}, False, None, id="waypoint-default-off"),
    pytest.param({"mode": "tcp"}, True, None, id="tcp-default-not-written"),
])
def test_trace_is_the_edge_default_and_written_only_when_not(
        data: dict[str, Any], trace: bool, written: bool | None) -> None:
    # A table without the key is what dans deployed before tracing existed: it must mean the
    # same and serialize the same, so the LB's spec (and an older LB image) sees no change.
    raw = {"name": "f", "listen": 8080, "active": "a", "groups": {"a": {"backends": ["b:1"]}},
           **data}
    fe = Frontend.from_dict(raw)
    assert fe.trace is trace
    assert fe.to_dict().get("trace") is written
    assert Frontend.from_dict(fe.to_dict()) == fe
