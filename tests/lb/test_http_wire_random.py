"""Random heads against a plain line-by-line model of what the proxy must do with them.

The parser in `lb.http_wire` is written for speed (one regex scan per head, special cases for
the usual Connection line); the model here splits lines and applies the rules of RFC 9110/9112
one by one. Both must agree on every generated head: framing, keep-alive, the values the LB
reads, and the exact header lines forwarded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from lb.http_wire import REQUEST_DROP, RESPONSE_DROP, BadRequest, parse_request, parse_response

PLAIN = {"close", "keep-alive", "upgrade", ""}
# (name, value choices): names get a random case, values random blanks around them.
REQUEST_FIELDS = [
    ("Host", ["shop", "example.com:8080", "127.0.0.1"]),
    ("Content-Length", ["0", "5", "12"]),
    ("Transfer-Encoding", ["chunked", "gzip, chunked"]),
    ("Connection", ["keep-alive", "close", "Upgrade", "keep-alive, X-Temp", "close, te"]),
    ("Keep-Alive", ["timeout=5"]),
    ("X-Forwarded-For", ["10.0.0.1", "10.0.0.2, 10.0.0.3"]),
    ("X-Forwarded-Proto", ["https"]),
    ("Upgrade", ["websocket", "h2c"]),
    ("Expect", ["100-continue", "something"]),
    ("TE", ["trailers"]),
    ("Proxy-Connection", ["keep-alive"]),
    ("X-Temp", ["1"]),
    ("Upgrade-Insecure-Requests", ["1"]),
    ("Accept", ["*/*", "text/html"]),
    ("User-Agent", ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5"]),
    ("Cookie", ["a=1; b=2"]),
]
RESPONSE_FIELDS = [
    ("Content-Length", ["0", "23", "1024"]),
    ("Transfer-Encoding", ["chunked", "gzip, chunked", "gzip"]),
    ("Connection", ["keep-alive", "close", "keep-alive, X-Temp", "Keep-Alive"]),
    ("Keep-Alive", ["timeout=5, max=100"]),
    ("Proxy-Authenticate", ["Basic"]),
    ("Upgrade", ["websocket"]),
    ("X-Temp", ["1"]),
    ("Server", ["nginx/1.22.1"]),
    ("Date", ["Sun, 22 Nov 2026 05:40:00 GMT"]),
    ("Content-Type", ["text/plain", "application/json; charset=utf-8"]),
    ("Set-Cookie", ["id=1; Path=/"]),
]


def _case(rng: random.Random, name: str) -> str:
    return rng.choice([name, name.lower(), name.upper(),
                       "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name)])


def _fields(rng: random.Random, pool: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    out = []
    for _ in range(rng.randint(0, 7)):
        name, values = rng.choice(pool)
        value = rng.choice(values)
        out.append((_case(rng, name), rng.choice(["", " ", "  ", "\t"]) + value +
                    rng.choice(["", " "])))
    return out


@dataclass
class Model:
    """What the proxy must make of a head, worked out line by line."""

    fields: list[tuple[str, str]]
    drop: frozenset[str]
    lower: list[tuple[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.lower = [(n.lower(), v.strip(" \t")) for n, v in self.fields]

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.lower if n == name]

    def options(self) -> set[str]:
        joined = ",".join(self.values("connection")).lower()
        return {t.strip(" \t") for t in joined.split(",")} if self.values("connection") else set()

    def forwarded_block(self) -> bytes:
        named = self.options() - PLAIN
        kept = [(n, v) for n, v in self.fields
                if n.lower() not in {d.decode() for d in self.drop} and n.lower() not in named]
        return "".join(f"\r\n{n}:{v}" for n, v in kept).encode()


@pytest.mark.parametrize("seed", range(40), ids=lambda s: f"seed-{s}")
def test_random_requests_match_the_model(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        fields = _fields(rng, REQUEST_FIELDS)
        version = rng.choice(["HTTP/1.1", "HTTP/1.0"])
        head = (f"{rng.choice(['GET', 'POST', 'PUT', 'HEAD'])} /p?q=1 {version}" +
                "".join(f"\r\n{n}:{v}" for n, v in fields)).encode()
        model = Model(fields, REQUEST_DROP)
        lengths = model.values("content-length")
        transfer = model.values("transfer-encoding")
        bad = (len(model.values("host")) > 1 or len(set(lengths)) > 1
               or (lengths and transfer)
               or (transfer and ",".join(transfer).split(",")[-1].strip().lower() != "chunked"))
        if bad:
            with pytest.raises(BadRequest):
                parse_request(head)
            continue
        req = parse_request(head)
        options = model.options()
        keep_alive = "close" not in options if version == "HTTP/1.1" else "keep-alive" in options
        upgrade = model.values("upgrade")[0].encode() \
            if "upgrade" in options and model.values("upgrade") else None
        hosts = model.values("host")
        forwarded = model.values("x-forwarded-for")
        assert req.block == model.forwarded_block(), head
        assert (req.length, req.chunked, req.keep_alive, req.upgrade) == (
            int(lengths[0]) if lengths else None, bool(transfer), keep_alive, upgrade), head
        assert req.host == (hosts[0].encode() if hosts else None), head
        assert req.forwarded_for == (", ".join(forwarded).encode() if forwarded else None), head
        assert req.expect_continue == ("100-continue" in [v.lower() for v in
                                                          model.values("expect")]), head


@pytest.mark.parametrize("seed", range(40), ids=lambda s: f"seed-{s}")
def test_random_responses_match_the_model(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(200):
        fields = _fields(rng, RESPONSE_FIELDS)
        version = rng.choice(["HTTP/1.1", "HTTP/1.0"])
        status = rng.choice([200, 204, 301, 404, 500])
        status_line = f"{version} {status} {rng.choice(['OK', 'Whatever It Is', ''])}".rstrip()
        head = (status_line + "".join(f"\r\n{n}:{v}" for n, v in fields)).encode()
        model = Model(fields, RESPONSE_DROP)
        resp = parse_response(head, upgrade=False)
        options = model.options()
        transfer = model.values("transfer-encoding")
        chunked = bool(transfer) and transfer[-1].lower().endswith("chunked")
        lengths = model.values("content-length")
        reusable = "close" not in options if version == "HTTP/1.1" else "keep-alive" in options
        assert resp.status == status
        assert (resp.chunked, resp.length, resp.reusable) == (
            chunked, int(lengths[0]) if lengths and not chunked else None, reusable), head
        assert resp.head == status_line.encode() + model.forwarded_block(), head
