"""One client connection of the HTTP engine: llhttp parsing every byte, the state table.

Shape (uvicorn's httptools protocol, h11's state table): `ClientConnection` owns the socket,
the llhttp request parser, flow control and timeouts; each request is a `lb._http_cycle.Cycle`;
`lb._upstream.Upstream` parses the answer. The connection's state is one of
`lb._http_states.STATES` and every change goes through `_to`, which refuses any transition
not in TRANSITIONS (the hot path's three usual ones are checked against it at import).

llhttp always knows where a message ends, so body bytes are never taken for a head; requests
pipelined behind the current one are parsed and held (bounded) until it is answered. Flow
control: `read_paused` / `write_paused` of this connection and of the Upstream; a side whose
peer's write buffer is above HIGH_WATER stops reading, so at most HIGH_WATER plus one read is
buffered per direction. Deadlines (`deadline`, `up_deadline`) are checked by the engine's
sweep (`lb._http_engine.HttpEngine`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING, cast

import httptools

from lb._http_cycle import Cycle
from lb._http_heads import BadMessage, RequestHead, request_head
from lb._http_states import (
    BODY,
    CLOSED,
    DISCARD,
    DISCARD_LIMIT,
    DISCARD_TIME,
    HEAD,
    IDLE,
    MAX_HEAD,
    MAX_HEADERS,
    MAX_PIPELINE,
    MAX_RAW_HEAD,
    MAX_TARGET,
    REASONS,
    STATES,
    TRANSITIONS,
    TUNNEL,
    WAIT,
)
from lb._http_tunnel import TunnelSide
from lb._upstream import HIGH_WATER

if TYPE_CHECKING:
    from lb._http_engine import HttpEngine

__all__ = ["IDLE", "STATES", "TRANSITIONS", "ClientConnection"]

log = logging.getLogger("dans.lb")


class ClientConnection(TunnelSide, asyncio.Protocol):
    """One client connection: its parser, its requests one after the other, its timeouts."""

    def __init__(self, engine: HttpEngine) -> None:
        self.engine = engine
        self.fe = engine.fe
        self.pool = engine.pool
        self.balancer = engine.balancer
        self.timeouts = engine.fe.spec.timeouts
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.state = IDLE
        self.peer = b""
        self.cycle: Cycle | None = None  # the request being answered
        self.reading: Cycle | None = None  # the request llhttp is parsing (maybe queued)
        self.queue: deque[Cycle] = deque()  # pipelined requests behind `cycle`
        self.pending = 0  # request bytes held in cycles, not yet written to a backend
        self.in_head = False
        self.head_raw = 0
        self.read_paused = False
        self.write_paused = False
        self.eof = False
        # The read being parsed when it began at a message boundary (its first byte is a
        # request's first byte), else None: lets on_headers_complete read the version there.
        self.line_at: bytes | None = None
        self.last_raw = b""  # the bytes of the head of `last`, when known
        self.broken: BadMessage | None = None  # a bad pipelined request, answered in turn
        self.hold: bytearray | None = None  # bytes after an Upgrade request, until answered
        self.discard_left = 0
        # The last request head built: (method, target, version, fields, RequestHead).
        self.last: tuple[bytes, bytes, str, list[tuple[bytes, bytes]], RequestHead] | None = None
        self.tunnel_eofs = 0  # half-closes seen in a tunnel; both: it is over
        # Deadlines (monotonic seconds, 0 = none) for the client and the backend side.
        self.deadline = monotonic() + self.timeouts.header
        self.up_deadline = 0.0

    def state_name(self) -> str:
        """The connection state's name (for logs and tests)."""
        return STATES[self.state]

    def _to(self, state: int) -> None:
        if state not in TRANSITIONS[self.state]:
            # A bug, never the client's fault: refuse to guess, drop the connection.
            log.error("frontend %s: illegal transition %s -> %s", self.fe.name,
                      STATES[self.state], STATES[state])
            self.abort()
            raise RuntimeError("illegal connection state transition")
        self.state = state

    # -- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if peer else b""
        self.engine.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.conns.discard(self)
        self._closed()
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == TUNNEL:
            self._tunnel_to_backend(data)
            return
        if state == CLOSED or self.broken is not None:
            return
        if self.hold is not None:
            self.hold += data
            self.pending += len(data)
            self.flow()
            return
        if self.in_head:
            self.head_raw += len(data)
            if self.head_raw > MAX_HEAD:
                self._bad(BadMessage(431, "request head too large"))
                return
        elif state == BODY or state == DISCARD:
            self.deadline = monotonic() + self.timeouts.body
        self.line_at = data if self.reading is None else None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The request asked to switch protocols: what follows is not HTTP until the
            # backend answers (a 101 opens the tunnel; anything else closes).
            rest = data[exc.args[0]:]
            self.hold = bytearray(rest)
            self.pending += len(rest)
            self.flow()
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, BadMessage):
                self._bad(cause)
            else:
                log.exception("frontend %s: engine error", self.fe.name, exc_info=cause)
                self.abort()
        except httptools.HttpParserError as exc:
            self._bad(BadMessage(400, str(exc) or "malformed request"))

    def eof_received(self) -> bool:
        # The client shut its write side. Requests already complete still get their answers
        # (the write side stays open); a request cut short can never complete.
        self.eof = True
        if self.state == TUNNEL:
            return self._tunnel_eof_to_backend()
        reading = self.reading
        if reading is not None:
            self.reading = None
            if reading is self.cycle and reading.head is not None and not reading.finished:
                reading.fail(400, b"the request ended early", "client")
                return True
            if reading is self.cycle or reading.discarding:
                self.close()
                return True
            if reading in self.queue:
                self.queue.remove(reading)
        return self.cycle is not None

    def pause_writing(self) -> None:
        self._client_full(True)

    def resume_writing(self) -> None:
        self._client_full(False)

    def _client_full(self, full: bool) -> None:
        """The client stopped (or went back to) reading: the backend's bytes wait meanwhile."""
        self.write_paused = full
        cycle = self.cycle
        if cycle is not None and cycle.up is not None:
            (cycle.up.pause_reading if full else cycle.up.resume_reading)()
            if self.up_deadline:
                # While the client does not read, its stall is timed like a body stall.
                wait = self.timeouts.body if full else self.timeouts.read
                self.up_deadline = monotonic() + wait

    def flow(self) -> None:
        """Pause or resume reading from the client: its bytes wait while a peer is full."""
        cycle = self.cycle
        up_full = cycle is not None and cycle.up is not None and cycle.up.write_paused
        paused = up_full or self.pending > HIGH_WATER or len(self.queue) >= MAX_PIPELINE
        if paused != self.read_paused and self.transport is not None and self.state != CLOSED:
            self.read_paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    # -- llhttp callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.state == CLOSED or self.state == DISCARD:
            raise BadMessage(400, "no request may follow")  # stops llhttp; nothing is sent
        now = monotonic()
        cycle = Cycle(self, now)
        self.reading = cycle
        self.in_head = True
        self.head_raw = 0
        if self.cycle is None:
            self.cycle = cycle
            if self.state == IDLE:
                self.state = HEAD  # in TRANSITIONS; the hot path skips the look-up
            else:
                self._to(HEAD)
            self.deadline = now + self.timeouts.header
        else:
            self.queue.append(cycle)
            if len(self.queue) > MAX_PIPELINE * 2:
                raise BadMessage(400, "too many pipelined requests")

    def on_url(self, url: bytes) -> None:
        cycle = self.reading
        assert cycle is not None
        cycle.url += url
        if len(cycle.url) > MAX_TARGET:
            raise BadMessage(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        cycle = self.reading
        assert cycle is not None
        cycle.head_size += len(name) + len(value) + 4
        if cycle.head_size > MAX_HEAD:
            raise BadMessage(431, "request head too large")
        if cycle.head is None:
            cycle.headers.append((name, value))
            if len(cycle.headers) > MAX_HEADERS:
                raise BadMessage(431, "too many header fields")
        # else a trailer field: counted, dropped (the LB ends a re-chunked body itself)

    def on_headers_complete(self) -> None:
        cycle = self.reading
        assert cycle is not None
        self.in_head = False
        # A keep-alive client often sends the same request again: the head the backend gets
        # depends on nothing else (peer and port are the connection's), so it is reused.
        # When this head began the read, its bytes are there: the same bytes as the last
        # head's (compared at C speed) are the same request.
        line_at = self.line_at
        self.line_at = None
        last_raw = self.last_raw
        if line_at is not None and last_raw and line_at.startswith(last_raw):
            assert self.last is not None
            cycle.head = self.last[4]
        else:
            self._new_head(cycle, line_at)
        if cycle is self.cycle:
            head = cycle.head
            assert head is not None
            if cycle.body_done or not head.has_body:
                # _begin's usual case, inline: no body to wait for
                if self.state == HEAD:
                    self.state = WAIT  # in TRANSITIONS
                else:
                    self._to(WAIT)
                self.deadline = 0.0
                cycle.start()
            else:
                self._begin(cycle)
        else:
            self.pending += cycle.head_size
            self.flow()

    def _new_head(self, cycle: Cycle, line_at: bytes | None) -> None:
        parser = self.parser
        method = parser.get_method()
        version = parser.get_http_version()
        last = self.last
        if last is not None and last[0] == method and last[1] == cycle.url \
                and last[2] == version and last[3] == cycle.headers \
                and not last[4].fresh_trace:  # a new trace is never given twice
            cycle.head = last[4]
        else:
            cycle.head = request_head(method, cycle.url, version, cycle.headers, self.peer,
                                      self.engine.port, self.fe.spec.trace)
            self.last = (method, cycle.url, version, cycle.headers, cycle.head)
        # Past a valid head's first CRLF CRLF is its end (llhttp allows no bare CR or LF).
        self.last_raw = b""
        if line_at is not None:
            end = line_at.find(b"\r\n\r\n")
            if 0 < end < MAX_RAW_HEAD:
                self.last_raw = line_at[:end + 4]

    def on_body(self, data: bytes) -> None:
        cycle = self.reading
        assert cycle is not None
        cycle.body(data)

    def on_message_complete(self) -> None:
        cycle = self.reading
        assert cycle is not None
        self.reading = None
        if cycle.discarding:
            self.close()  # the body after an early answer is read; its answer is sent
            return
        cycle.end()
        if cycle is self.cycle and self.state == BODY:
            self._to(WAIT)
            self.deadline = 0.0

    # -- requests ---------------------------------------------------------------------------

    def _begin(self, cycle: Cycle) -> None:
        """The current request's head is complete: send it on."""
        if cycle.body_done:
            self._to(WAIT)
            self.deadline = 0.0
        elif cycle.head is not None and cycle.head.has_body:
            self._to(BODY)
            self.deadline = monotonic() + self.timeouts.body
        else:
            self._to(WAIT)  # llhttp calls on_message_complete right after
            self.deadline = 0.0
        cycle.start()

    def closing_after(self, cycle: Cycle) -> bool:
        """True when the connection closes after `cycle`'s answer."""
        head = cycle.head
        return (self.balancer.closing or head is None or not head.keep_alive
                or self.hold is not None or (self.eof and not self.queue)
                or self.broken is not None)

    def cycle_done(self, cycle: Cycle, now: float) -> None:
        """The current request is answered (at `now`): close, discard, or take the next."""
        self.up_deadline = 0.0
        if self.state == CLOSED:
            return
        if not cycle.body_done:
            # An early answer: the rest of this body is read and dropped, within bounds.
            self._to(DISCARD)
            cycle.discarding = True
            self.pending = 0
            self.discard_left = DISCARD_LIMIT
            self.deadline = now + min(self.timeouts.body, DISCARD_TIME)
            self.cycle = None
            self.flow()
            return
        if self.broken is not None:
            self._answer_bad(self.broken)
            return
        if self.closing_after(cycle):
            self.close()
            return
        self.cycle = None
        if self.queue:
            following = self.queue.popleft()
            self.cycle = following
            if following.head is None:
                self._to(HEAD)
                self.deadline = following.begun + self.timeouts.header
            else:
                self.pending -= following.head_size
                self._begin(following)
        else:
            if self.state == WAIT:
                self.state = IDLE  # in TRANSITIONS
            else:
                self._to(IDLE)
            self.deadline = now + self.timeouts.keepalive
        if self.read_paused or self.pending:
            self.flow()

    def discarded(self, n: int) -> None:
        """Body bytes dropped after an early answer."""
        self.discard_left -= n
        if self.discard_left < 0:
            self.close()

    # -- timeouts ---------------------------------------------------------------------------

    def client_timeout(self) -> None:
        """The client side's deadline passed (the sweep calls this)."""
        self.deadline = 0.0
        state = self.state
        metrics = self.balancer.metrics
        if state == IDLE or state == DISCARD or state == TUNNEL:
            self.close()
        elif state == HEAD:
            metrics.error(self.fe.name, "-", "header_timeout")
            metrics.observe(self.fe.name, "-", 408, self.timeouts.header)
            if self.cycle is not None:
                self.cycle.finished = True
            self.local(408, b"the request head did not arrive in time")
        elif state == BODY and self.cycle is not None:
            self.cycle.timed_out(408, "body_timeout", b"the request body stalled")

    def backend_timeout(self) -> None:
        """The backend side's deadline passed: no answer in time, or the client stalled."""
        self.up_deadline = 0.0
        cycle = self.cycle
        if cycle is None or cycle.finished or self.state == TUNNEL:
            return
        if self.write_paused:
            cycle.timed_out(408, "client_timeout", b"the client does not read")
        else:
            cycle.timed_out(504, "timeout", b"the backend did not answer in time")

    # -- endings ----------------------------------------------------------------------------

    def _bad(self, bad: BadMessage) -> None:
        """A malformed request: answered in its turn (after the ones before it), closed."""
        if self.state == CLOSED or self.state == DISCARD:
            self.close()  # an answer went out already
            return
        cycle = self.cycle
        if cycle is not None and self.reading is cycle and cycle.head is not None \
                and not cycle.finished:
            cycle.fail(400, bad.reason.encode(), "client")  # its body broke mid-way
            return
        if cycle is not None and self.reading is not cycle and not cycle.finished:
            self.broken = bad  # the current request is answered first
            self.flow()
            return
        self._answer_bad(bad)

    def _answer_bad(self, bad: BadMessage) -> None:
        self.balancer.metrics.error(self.fe.name, "-", "bad_request")
        self.balancer.metrics.observe(self.fe.name, "-", bad.status, 0.0)
        self.local(bad.status, bad.reason.encode())

    def send(self, data: bytes) -> None:
        """Bytes for the client."""
        if self.transport is not None:
            self.transport.write(data)

    def local(self, status: int, text: bytes) -> None:
        """Answer from the LB itself, then close (the request's rest may be unread)."""
        if self.transport is not None and not self.transport.is_closing():
            body = text + b"\n"
            self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                 % (status, REASONS.get(status, b"Error"), len(body), body))
        self.close()

    def close(self) -> None:
        """Close after what was written is sent."""
        self._closed()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping anything unsent."""
        self._closed()
        if self.transport is not None:
            self.transport.abort()

    def _closed(self) -> None:
        status = 101 if self.state == TUNNEL else 499
        self.state = CLOSED
        self.deadline = self.up_deadline = 0.0
        for cycle in (self.cycle, *self.queue):
            if cycle is not None and not cycle.finished:
                cycle.client_gone(status)
