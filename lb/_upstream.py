"""Backend connections of the HTTP engine: the answer's parser, flow control, the pool.

An `Upstream` belongs to one request cycle (`lb._http_cycle.Cycle`) while it carries that
request and its answer, then goes back to the pool. Its llhttp response parser drives the
callbacks below; the answer's head is kept raw as llhttp validated it and re-framed for the
client in one pass (`lb._http_heads.response_head`: no Python call per header field), and
everything one read produced goes out in one write. An answer is complete only when llhttp
says so; bytes after it in the same read (an answer nobody asked for) make the connection
unusable, so a backend can never answer the next client with a stale message.

Idle connections are reused newest first and dropped after POOL_IDLE seconds, shorter than
the idle timeout of common backends (5 s and up), so the LB seldom sends into a connection
the backend is closing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import httptools

from lb._http_heads import BadMessage, ResponseHead, response_head

if TYPE_CHECKING:
    from lb._http_cycle import Cycle

__all__ = ["HIGH_WATER", "POOL_IDLE", "Upstream", "UpstreamPool"]

log = logging.getLogger("dans.lb")
POOL_IDLE = 4.0
# Write buffer high-water mark of every transport: past it the other side stops reading.
HIGH_WATER = 64 * 1024
MAX_ANSWER_HEAD = 64 * 1024
MAX_ANSWER_HEADERS = 200


class _Unasked(Exception):
    """Raised inside llhttp's callbacks to stop at an answer nobody asked for."""


class Upstream(asyncio.Protocol):
    """One connection to a backend endpoint; idle in the pool or serving one cycle."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.owner: Cycle | None = None
        self.closed = False
        self.idle_since = 0.0
        self.parser = httptools.HttpResponseParser(self)
        self.read_paused = False
        self.write_paused = False
        self.tunnel = False
        self.out: list[bytes] = []  # bytes for the client from the current read
        # The last answer head built on this connection: (raw head, its request's kind, head).
        self.last: tuple[bytes, tuple[bool, bool, bool], ResponseHead] | None = None
        self._reset()

    def _reset(self) -> None:
        # The raw bytes of the answer head being parsed (from `hstart`): kept until llhttp
        # calls on_headers_complete, bounded by MAX_ANSWER_HEAD.
        self.hbuf = b""
        self.hstart = 0
        self.resp: ResponseHead | None = None
        self.interim = False
        self.complete = False  # the answer ended during the current read
        self.dirty = False  # bytes beyond the answer: never reuse
        self.ignoring = False  # the rest of this read follows a bodiless HEAD answer
        # llhttp's keep-alive verdict, taken at the answer's end (it resets right after).
        self.keep_alive = False

    # -- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            self.close()  # bytes on an idle connection: not reusable
            return
        if self.tunnel:
            owner.tunnel_to_client(data)
            return
        if self.resp is None:
            hbuf = self.hbuf
            self.hbuf = hbuf + data if hbuf else data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._switched(owner, data[exc.args[0]:])
            return
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Unasked):
                self._broke(owner, exc)
                return
            # A second answer began in the same read: the first is complete and goes out;
            # the connection is never reused (`dirty`).
        except httptools.HttpParserError as exc:
            self._broke(owner, exc)
            return
        finally:
            if self.ignoring:
                # The rest of a read after a HEAD answer is nobody's answer; a new parser
                # starts clean for the next request on this connection.
                self.ignoring = False
                self.parser = httptools.HttpResponseParser(self)
        if self.resp is None and len(self.hbuf) - self.hstart > MAX_ANSWER_HEAD:
            owner.backend_broke("answer head too large")
            return
        out = self.out
        if out:
            transport = owner.conn.transport
            if transport is not None:
                transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self.complete:
            reusable = not self.dirty and self.keep_alive
            # _reset, for what an answer changes (the hot path: one answer per read)
            self.hbuf = b""
            self.hstart = 0
            self.resp = None
            self.complete = self.dirty = self.keep_alive = False
            owner.answer_done(reusable)
        else:
            owner.backend_read()

    def _broke(self, owner: Cycle, exc: Exception) -> None:
        self._flush(owner)
        why = exc.__context__ if isinstance(exc.__context__, BadMessage) else exc
        owner.backend_broke(f"invalid answer: {why}")

    def _flush(self, owner: Cycle) -> None:
        out = self.out
        if out:
            owner.to_client(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _switched(self, owner: Cycle, rest: bytes) -> None:
        if self.resp is None:
            self._flush(owner)
            owner.backend_broke("the backend switched protocols unasked")
            return
        self.tunnel = True
        self._flush(owner)
        owner.tunnel_open(rest)

    def eof_received(self) -> bool | None:
        owner = self.owner
        if owner is not None and self.tunnel:
            return owner.tunnel_eof_from_backend()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        owner = self.owner
        if owner is None:
            return
        resp = self.resp
        if resp is not None and resp.until_close and not self.tunnel:
            self._flush(owner)
            self._reset()
            owner.answer_done(False)
            return
        owner.upstream_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.owner is not None:
            self.owner.conn.flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.owner is not None:
            self.owner.conn.flow()

    def pause_reading(self) -> None:
        """Stop reading the answer (the client does not take it fast enough)."""
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read the answer again."""
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close and forget the owner (its cycle handles the end itself)."""
        self.owner = None
        if self.transport is not None:
            self.transport.close()

    # -- llhttp callbacks -------------------------------------------------------------------

    # No on_header / on_status: the head is taken raw at on_headers_complete, and trailer
    # fields are dropped (the LB re-chunks and ends with an empty trailer).

    def on_message_begin(self) -> None:
        if self.ignoring:
            self.dirty = True
        elif self.complete:
            self.dirty = True
            raise _Unasked  # a second answer in one read: nobody asked for it; stop here

    def on_headers_complete(self) -> None:
        owner = self.owner
        assert owner is not None
        status = self.parser.get_status_code()
        start = self.hstart
        hbuf = self.hbuf
        end = hbuf.find(b"\r\n\r\n", start) + 4
        if status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: not passed on
            self.hstart = end
            return
        raw = hbuf[start:end]
        self.hbuf = b""
        self.hstart = 0
        head = owner.head
        assert head is not None
        head_request = head.method == b"HEAD"
        close = not owner.body_done or owner.conn.closing_after(owner)
        last = self.last
        if last is not None and last[0] == raw and last[1] == (head_request, head.http11, close) \
                and status != 101:
            resp = last[2]  # the same head as this connection's last answer (but its Date)
        else:
            if end - start > MAX_ANSWER_HEAD or raw.count(b"\r\n") > MAX_ANSWER_HEADERS + 2:
                raise BadMessage(502, "answer head too large")
            if status == 101 and head.upgrade is None:
                raise BadMessage(502, "the backend switched protocols unasked")
            resp = response_head(status, raw, head_request, head.http11, close, status == 101)
            if status != 101:
                self.last = (raw, (head_request, head.http11, close), resp)
        self.resp = resp
        owner.status = status
        owner.answered = True
        extra = owner.answer_started(status, raw) if owner.conn.fe.policy.needs_headers else b""
        # Added lines (a version stamp) go before the head's final CRLF.
        self.out.append(resp.data[:-2] + extra + b"\r\n" if extra else resp.data)
        if head_request:
            self.complete = True  # llhttp would wait for the body the headers announce
            self.ignoring = True
            self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        if self.ignoring:
            self.dirty = True
            return
        resp = self.resp
        if resp is None or resp.bodiless:
            return
        if resp.chunked:
            self.out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self.out.append(data)

    def on_message_complete(self) -> None:
        if self.ignoring:
            return
        if self.interim:
            self.interim = False
            return
        resp = self.resp
        if resp is not None and resp.chunked:
            self.out.append(b"0\r\n\r\n")
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()


class UpstreamPool:
    """Idle keep-alive connections per endpoint; closed after POOL_IDLE seconds unused."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int], list[Upstream]] = {}

    def get(self, key: tuple[str, int], now: float) -> Upstream | None:
        """The newest idle connection to `key` still fresh at `now` (monotonic), or None."""
        conns = self.idle.get(key)
        while conns:
            up = conns.pop()
            if not up.closed and now - up.idle_since < POOL_IDLE:
                return up
            up.close()
        return None

    def put(self, up: Upstream, now: float) -> None:
        """Keep `up` for reuse; `now` is the monotonic time it became idle."""
        up.owner = None
        up.idle_since = now
        if up.read_paused:
            up.resume_reading()  # an idle connection must see the backend's close
        conns = self.idle.get(up.key)
        if conns is None:
            self.idle[up.key] = [up]
        else:
            conns.append(up)

    def close(self) -> None:
        """Close every idle connection."""
        for conns in self.idle.values():
            for up in conns:
                up.close()
        self.idle.clear()
