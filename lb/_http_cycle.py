"""One request of the HTTP engine: its group, its backend attempts, its body and its answer.

A `Cycle` is created when llhttp sees a request begin and lives until its answer is
complete (or the request failed). The frontend's policy picks the group once, when the head
is complete, so a switch is atomic for new requests and in-flight ones finish where they
started. Attempts: a refused or timed-out connect never sent anything, so any request is
tried on another endpoint; a pooled connection that closes before any answer byte is tried
again for idempotent requests whose whole body the cycle still holds (REPLAY_LIMIT).
Answers of the LB itself: 503 no group or endpoint, 502 every attempt failed or the backend
broke its answer, 504 no answer within the read timeout, 408 the client stalled.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import TYPE_CHECKING

from lb._http_heads import REPLAY_LIMIT, response_fields
from lb._pinning import TARGET, request_target
from lb._trace import trace_id
from lb._upstream import Upstream

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lb._backends import Endpoint, GroupRuntime
    from lb._http_conn import ClientConnection
    from lb._http_heads import RequestHead

__all__ = ["REPLAY_LIMIT", "Cycle"]

log = logging.getLogger("dans.lb")


class Cycle:
    """The LB's work for one request, from its first byte to the end of its answer."""

    # Class-level defaults: a cycle sets only what it changes (one per request, hot path).
    head: RequestHead | None = None
    group: GroupRuntime | None = None
    ep: Endpoint | None = None
    up: Upstream | None = None
    started = 0.0
    attempts = 0
    stale_retries = 0
    refreshed = False
    tried: tuple[Endpoint, ...] = ()
    body_done = False  # the request message ended (llhttp's message complete)
    sent_all = False  # ... and all of it was written to the backend
    answered = False  # the answer's head went to the client
    got_bytes = False
    finished = False
    discarding = False
    status = 0
    head_size = 0
    body_bytes = 0
    replay: list[bytes] | None = None
    last_error = b"no backend answered"

    def __init__(self, conn: ClientConnection, begun: float) -> None:
        self.conn = conn
        self.begun = begun
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.pending: list[bytes] = []  # framed body bytes not yet written to a backend

    # -- start and backend attempts ---------------------------------------------------------

    def start(self) -> None:
        """The head is complete and this is the connection's current request: send it."""
        conn = self.conn
        head = self.head
        assert head is not None
        fe = conn.fe
        if fe.spec.hop:  # a waypoint: count the calls that carry no trace context
            spec = fe.spec
            if trace_id(head.headers, spec.trace_header.lower().encode()) is None:
                untraced = conn.balancer.metrics.untraced
                untraced[spec.hop] = untraced.get(spec.hop, 0) + 1
        policy = fe.policy
        headers = None
        if policy.needs_headers:
            headers = head.header_map()
            headers[TARGET] = request_target(head.data)  # for a ?dans-version= stamp
        group = policy.choose(fe, headers)
        if group is None:
            conn.balancer.metrics.error(fe.name, "-", "no_group")
            conn.balancer.metrics.observe(fe.name, "-", 503, 0.0)
            self.finished = True
            conn.local(503, b"no group takes requests")
            return
        self.group = group
        self.started = now = monotonic()
        group.begin()
        if head.replayable:
            self.replay = []
        if head.expect_continue and not self.pending and not self.body_done:
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        # The first attempt (dispatch's usual case, inline): nothing tried, no retry count
        # to check; anything unusual (no endpoint: refresh, 503) is left to dispatch.
        ep = group.pick()
        if ep is None:
            self.dispatch()
            return
        self.attempts = 1
        self.tried = (ep,)
        self.ep = ep
        up = conn.pool.get(ep.key, now)
        if up is not None:
            self._attach(up, now)
        else:
            asyncio.get_running_loop().create_task(self._connect(ep))

    def dispatch(self) -> None:
        """Send the request to the next endpoint of the group (pooled or new connection)."""
        group = self.group
        assert group is not None
        if self.attempts > self.conn.fe.spec.retries:
            self.fail(502, self.last_error, "connect")
            return
        ep = group.pick(self.tried)
        if ep is None:
            if not self.tried and not self.refreshed:
                self.refreshed = True
                asyncio.get_running_loop().create_task(self._refresh_then_dispatch())
                return
            if not self.tried:
                group.series.error("no_backend")
                self.fail(503, f"group {group.name} has no backend".encode(), "")
            else:
                self.fail(502, self.last_error, "")
            return
        if self.attempts:
            group.series.retries += 1
        self.attempts += 1
        self.tried += (ep,)
        self.ep = ep
        now = self.started if self.attempts == 1 else monotonic()
        up = self.conn.pool.get(ep.key, now) if not self.stale_retries else None
        if up is not None:
            self._attach(up, now)
        else:
            asyncio.get_running_loop().create_task(self._connect(ep))

    async def _refresh_then_dispatch(self) -> None:
        assert self.group is not None
        await self.group.refresh_now()
        if not self.finished:
            self.dispatch()

    async def _connect(self, ep: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        conn = self.conn
        try:
            _, up = await asyncio.wait_for(
                loop.create_connection(lambda: Upstream(conn.pool, ep.key), ep.host, ep.port),
                conn.fe.spec.timeouts.connect)
        except (OSError, TimeoutError) as exc:
            ep.mark_down()
            assert self.group is not None
            self.group.series.error("connect")
            self.last_error = f"cannot connect to {ep.addr}: {exc!r}".encode()
            if not self.finished:
                self.dispatch()
            return
        ep.mark_up()
        if self.finished:
            conn.pool.put(up, monotonic())
            return
        self._attach(up, monotonic())

    def _attach(self, up: Upstream, now: float) -> None:
        ep = self.ep
        head = self.head
        assert up.transport is not None and ep is not None and head is not None
        up.owner = self
        self.up = up
        ep.in_flight += 1
        pending = self.pending
        if pending:
            n = sum(map(len, pending))
            up.transport.write(b"".join([head.data, *pending]))
            self._sent(pending, n)
            self.pending = []
        else:
            up.transport.write(head.data)
        if self.body_done:
            self.sent_all = True
        conn = self.conn
        conn.up_deadline = now + conn.timeouts.read  # the backend's read timeout runs
        if conn.read_paused or conn.pending or up.write_paused:
            conn.flow()

    def _sent(self, parts: Sequence[bytes], n: int) -> None:
        """Body bytes went to the backend: no longer buffered; kept while replayable."""
        self.conn.pending -= n
        replay = self.replay
        if replay is not None:
            self.body_bytes += n
            if self.body_bytes > REPLAY_LIMIT:
                self.replay = None
            else:
                replay.extend(parts)
        self.conn.flow()

    # -- the request body -------------------------------------------------------------------

    def body(self, data: bytes) -> None:
        """Body bytes from llhttp (decoded): re-framed and sent, or held until a backend."""
        if self.discarding:
            self.conn.discarded(len(data))
            return
        if self.head is not None and self.head.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._forward(data)

    def end(self) -> None:
        """The request message ended."""
        if self.head is not None and self.head.chunked and not self.discarding:
            self._forward(b"0\r\n\r\n")
        self.body_done = True
        if self.up is not None and not self.pending:
            self.sent_all = True

    def _forward(self, data: bytes) -> None:
        up = self.up
        if up is not None and up.transport is not None and not up.closed:
            up.transport.write(data)
            replay = self.replay
            if replay is not None:
                self.body_bytes += len(data)
                if self.body_bytes > REPLAY_LIMIT:
                    self.replay = None
                else:
                    replay.append(data)
            return
        self.pending.append(data)
        self.conn.pending += len(data)
        self.conn.flow()

    # -- the answer (called by the Upstream) ------------------------------------------------

    def backend_read(self) -> None:
        """Answer bytes arrived, the answer is not complete: its read timeout starts again
        (the body timeout while the client does not take what it got)."""
        self.got_bytes = True
        conn = self.conn
        conn.up_deadline = monotonic() + (conn.timeouts.body if conn.write_paused
                                          else conn.timeouts.read)

    def answer_started(self, status: int, raw: bytes) -> bytes:
        """The answer's head (`raw`, as the backend sent it) is about to go to the client
        and the frontend's policy `needs_headers`: returns header lines it adds to it (a
        version stamp), usually none. (`status` and `answered` are set by the Upstream.)"""
        fe = self.conn.fe
        policy = fe.policy
        if policy.needs_headers and self.group is not None:
            policy.answered(fe, self.group, {n.decode("latin-1").lower(): v.decode("latin-1")
                                             for n, v in response_fields(raw)})
            if policy.stamps:
                return policy.stamp_of(self.group)
        return b""

    def to_client(self, data: bytes) -> None:
        """Answer bytes for the client."""
        self.conn.send(data)

    def answer_done(self, reusable: bool) -> None:
        """The answer is complete: recycle the backend connection, account, go on."""
        up = self.up
        now = monotonic()
        if up is not None:
            self.up = None
            if self.ep is not None:
                self.ep.in_flight -= 1
            if reusable and self.sent_all and not up.closed and not up.write_paused:
                self.conn.pool.put(up, now)
            else:
                up.close()
        if not self.finished:
            self.finished = True
            if self.group is not None:
                self.group.done(self.status, now - self.started)
        self.conn.cycle_done(self, now)

    def _finish(self, status: int, now: float = 0.0) -> None:
        if self.finished:
            return
        self.finished = True
        if self.group is not None:
            self.group.done(status, (now or monotonic()) - self.started)

    # -- tunnels (after a 101) --------------------------------------------------------------

    def tunnel_open(self, rest: bytes) -> None:
        """The backend switched protocols; `rest` are the new protocol's first bytes."""
        if rest:
            self.conn.send(rest)
        self.conn.tunnel_open(self)

    def tunnel_to_client(self, data: bytes) -> None:
        """Tunnelled bytes from the backend."""
        self.conn.tunnel_data_from_backend(data)

    def tunnel_eof_from_backend(self) -> bool:
        """The backend shut its write side of the tunnel: pass the half-close on."""
        return self.conn.tunnel_eof()

    # -- failures ---------------------------------------------------------------------------

    def upstream_lost(self, up: Upstream) -> None:
        """The backend connection closed before the answer was complete."""
        if up is not self.up:
            return
        self.up = None
        if self.ep is not None:
            self.ep.in_flight -= 1
        if self.finished:
            return
        if up.tunnel:
            self._finish(101)
            self.conn.close()
            return
        if not self.got_bytes:
            assert self.group is not None and self.head is not None
            self.group.series.error("disconnected")
            replay = self.replay
            if replay is not None and self.body_done and self.stale_retries < 2:
                # Most likely a pooled connection the backend had just closed: send again.
                self.stale_retries += 1
                self.tried = tuple(ep for ep in self.tried if ep is not self.ep)
                self.attempts -= 1
                self.pending = replay
                self.replay = []
                self.body_bytes = 0
                n = sum(map(len, replay))
                self.conn.pending += n
                self.sent_all = False
                self.dispatch()
                return
            self.fail(502, b"the backend closed the connection without answering", "")
            return
        self.abort("backend_abort")

    def backend_broke(self, why: str) -> None:
        """The backend's answer is malformed: 502 if nothing went out yet, else cut."""
        log.warning("frontend %s: backend %s: %s", self.conn.fe.name,
                    self.ep.addr if self.ep else "?", why)
        self.drop_upstream()
        if not self.answered:
            self.fail(502, why.encode(), "backend")
        else:
            self.abort("backend")

    def timed_out(self, status: int, kind: str, text: bytes) -> None:
        """A timeout of this request: answer `status` if nothing went out yet, else cut."""
        self.drop_upstream()
        if not self.answered:
            self.fail(status, text, kind)
        else:
            self.abort(kind)

    def drop_upstream(self) -> None:
        """Close the backend connection of this cycle (it will not be reused)."""
        up = self.up
        if up is not None:
            self.up = None
            if self.ep is not None:
                self.ep.in_flight -= 1
            up.close()

    def fail(self, status: int, text: bytes, kind: str) -> None:
        """Answer `status` from the LB and close the client connection."""
        if kind and self.group is not None:
            self.group.series.error(kind)
        self.drop_upstream()
        self._finish(status)
        self.conn.local(status, text)

    def abort(self, kind: str) -> None:
        """The answer started and broke: cut the client (no silent short body)."""
        if self.group is not None:
            self.group.series.error(kind)
        self.drop_upstream()
        self._finish(502)
        self.conn.abort()

    def client_gone(self, status: int) -> None:
        """The client connection closed: free the backend and leave the in-flight count."""
        self.drop_upstream()
        self._finish(status)
