"""The fast HTTP data plane: asyncio protocols that pass bytes, parsing only message heads.

aiohttp's server and client spend most of a proxied request building objects the proxy never
needs; this engine parses the request head (strictly, `lb.http_wire`), writes a rewritten
head and the body bytes to a pooled keep-alive backend connection, and streams the answer
back with back-pressure both ways. Same semantics as the aiohttp engine (`lb.http_proxy`):
the group is chosen per request at arrival, refused or timed-out connects are retried on
another endpoint, a pooled connection that closes before answering is retried for idempotent
buffered requests, 503/502/504 as there, 400 for malformed requests, and `Upgrade` requests
(WebSocket) become a tunnel after the backend's 101.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import TYPE_CHECKING

from lb.http_wire import BadRequest, Chunked, Request, Response, parse_request, parse_response
from lb.upstream import Upstream, UpstreamPool

if TYPE_CHECKING:
    from lb.backends import Endpoint, GroupRuntime
    from lb.balancer import Balancer, FrontendRuntime

__all__ = ["CLIENT_IDLE", "FastHttp", "UpstreamPool"]

log = logging.getLogger("dans.lb")
MAX_HEAD = 64 * 1024
BUFFER_LIMIT = 1 << 20  # request bodies up to this size are buffered whole (and retriable)
HIGH_WATER = 256 * 1024
CLIENT_IDLE = 75.0
REASONS = {400: b"Bad Request", 502: b"Bad Gateway", 503: b"Service Unavailable",
           504: b"Gateway Timeout"}
# Client-side states.
HEAD, COLLECT, BODY, WAIT, TUNNEL, CLOSED = range(6)
# Response framings.
NONE, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)


class FastHttp:
    """The fast HTTP engine of one frontend: a protocol factory plus its connections."""

    def __init__(self, balancer: Balancer, fe: FrontendRuntime, pool: UpstreamPool) -> None:
        self.balancer = balancer
        self.fe = fe
        self.pool = pool
        self.conns: set[ClientConn] = set()
        self.port = str(fe.spec.listen).encode()

    def __call__(self) -> ClientConn:
        return ClientConn(self)

    def close_idle(self, older_than: float = 0.0) -> None:
        """Close client connections that wait for a request (all, or idle for a while)."""
        now = monotonic()
        for conn in list(self.conns):
            if conn.state == HEAD and now - conn.idle_since >= older_than:
                conn.close()

    def abort_all(self) -> None:
        """Cut every connection (the end of a shutdown grace period)."""
        for conn in list(self.conns):
            conn.abort()


class ClientConn(asyncio.Protocol):
    """One client connection: requests one after the other, each proxied to a backend."""

    def __init__(self, engine: FastHttp) -> None:
        self.engine = engine
        self.fe = engine.fe
        self.pool = engine.pool
        self.balancer = engine.balancer
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = HEAD
        self.peer = b""
        self.idle_since = monotonic()
        self.client_paused = False
        # One read-timeout timer per connection, re-armed from the last read, not one per
        # request: keep-alive connections under load then cost no timer work per request.
        self.timer: asyncio.TimerHandle | None = None
        # Request body and answer framing: set for each request where they apply.
        self.body_left = 0
        self.req_chunks: Chunked | None = None
        self.framing = NONE
        self.resp_left = 0
        self.resp_chunks: Chunked | None = None
        self.started = 0.0
        self.last_read = 0.0
        self.req: Request | None = None
        self.group: GroupRuntime | None = None
        self.close_after = False
        self.finished = True
        self.ep: Endpoint | None = None
        self.up: Upstream | None = None
        self.out = b""  # request bytes to send (head, and the body when buffered)
        self.resp_head = b""  # an answer head split over reads, until complete
        self._reset()

    def _reset(self) -> None:
        """Forget the previous request's progress (`up` and `resp_head` end empty anyway)."""
        self.tried: tuple[Endpoint, ...] = ()
        self.attempts = 0
        self.stale_retries = 0
        self.refreshed = False
        self.resp: Response | None = None
        self.got_bytes = False

    # -- client side ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if peer else b""
        self.engine.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        state = self.state
        self.state = CLOSED
        if not self.finished:
            self._drop_upstream()
            self._finish(499 if state != TUNNEL else 101)

    def pause_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == TUNNEL:
            if self.up is not None and self.up.transport is not None:
                self.up.transport.write(data)
            return
        if state == HEAD and not self.buf:
            # The usual case, a whole head in one read: no copy through the buffer.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                if end + 4 < len(data):
                    self.buf += data[end + 4:]
                self._request(data[:end])
                return
        self.buf += data
        if state == HEAD:
            self._parse()
        elif state == COLLECT:
            self._collect()
        elif state == BODY:
            self._stream_body()
            if len(self.buf) > HIGH_WATER:
                self.pause_client()  # until a backend takes the body
        elif len(self.buf) > HIGH_WATER:
            self.pause_client()  # pipelined requests wait for this answer

    def pause_client(self) -> None:
        """Stop reading from the client (its bytes wait: back-pressure)."""
        if self.transport is not None:
            self.transport.pause_reading()
            self.client_paused = True

    def resume_client(self) -> None:
        """Read from the client again, if reading was paused."""
        if self.client_paused and self.transport is not None:
            self.client_paused = False
            self.transport.resume_reading()

    def _parse(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._reject("request head too large")
            return
        head = bytes(self.buf[:end])
        del self.buf[:end + 4]
        self._request(head)

    def _request(self, head: bytes) -> None:
        """Start proxying the request whose head (without CRLF CRLF) arrived."""
        if len(head) > MAX_HEAD:
            self._reject("request head too large")
            return
        try:
            req = parse_request(head)
        except BadRequest as exc:
            self._reject(str(exc))
            return
        fe = self.fe
        self._reset()
        self.req = req
        policy = fe.policy
        group = policy.choose(fe, req.header_map() if policy.needs_headers else None)
        if group is None:
            self.balancer.metrics.error(fe.name, "-", "no_group")
            self.balancer.metrics.observe(fe.name, "-", 503, 0.0)
            self.group = None
            self._local(503, b"no group takes requests")
            return
        self.started = monotonic()
        self.finished = False
        self.group = group
        group.begin()
        self.out = req.head_for_backend(self.peer, self.engine.port)
        self.close_after = not req.keep_alive or self.balancer.closing
        if req.chunked or req.length:
            self._request_body(req)
            return
        self.state = WAIT
        self._dispatch()

    def _request_body(self, req: Request) -> None:
        """Collect a small body (then dispatch), or dispatch and stream a large one."""
        if req.expect_continue and not self.buf and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if req.chunked:
            self.req_chunks = Chunked()
            self.body_left = 0
            self.state = BODY
            self._dispatch()
            return
        self.req_chunks = None
        self.body_left = req.length or 0
        if self.body_left <= BUFFER_LIMIT:
            self.state = COLLECT
            self._collect()
            return
        self.state = BODY
        self._dispatch()

    def _collect(self) -> None:
        if len(self.buf) < self.body_left:
            return
        self.out += bytes(self.buf[:self.body_left])
        del self.buf[:self.body_left]
        self.body_left = 0
        self.state = WAIT
        self._dispatch()

    def _stream_body(self) -> None:
        """Forward the body bytes that arrived (once a backend is attached)."""
        up = self.up
        if up is None or up.transport is None or not self.buf:
            return
        if self.req_chunks is not None:
            try:
                end, done = self.req_chunks.feed(self.buf)
            except BadRequest as exc:
                self._fail(400, str(exc).encode(), "client")
                return
        else:
            end = min(self.body_left, len(self.buf))
            self.body_left -= end
            done = self.body_left == 0
        up.transport.write(bytes(self.buf[:end]))
        del self.buf[:end]
        self.resume_client()
        if done:
            self.state = WAIT

    # -- backend side -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        group = self.group
        assert group is not None
        if self.attempts > self.fe.spec.retries:
            self._fail(502, self._last_error, "connect")
            return
        ep = group.pick(self.tried)
        if ep is None:
            if not self.tried and not self.refreshed:
                self.refreshed = True
                asyncio.get_running_loop().create_task(self._refresh_then_dispatch())
                return
            if not self.tried:
                group.series.error("no_backend")
                self._fail(503, f"group {group.name} has no backend".encode(), "")
            else:
                self._fail(502, self._last_error, "")
            return
        if self.attempts:
            group.series.retries += 1
        self.attempts += 1
        self.tried += (ep,)
        self.ep = ep
        now = self.started if self.attempts == 1 else monotonic()
        up = self.pool.get(ep.key, now) if not self.stale_retries else None
        if up is not None:
            self._attach(up, now)
        else:
            asyncio.get_running_loop().create_task(self._connect(ep))

    _last_error = b"no backend answered"

    async def _refresh_then_dispatch(self) -> None:
        assert self.group is not None
        await self.group.refresh_now()
        if self.state != CLOSED:
            self._dispatch()

    async def _connect(self, ep: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        fe = self.engine.fe
        key = ep.key
        try:
            _, up = await asyncio.wait_for(
                loop.create_connection(lambda: Upstream(self.engine.pool, key), ep.host,
                                       ep.port),
                fe.spec.timeouts.connect)
        except (OSError, TimeoutError) as exc:
            ep.mark_down()
            assert self.group is not None
            self.group.series.error("connect")
            self._last_error = f"cannot connect to {ep.addr}: {exc!r}".encode()
            if self.state != CLOSED:
                self._dispatch()
            return
        ep.mark_up()
        now = monotonic()
        if self.state == CLOSED:
            self.engine.pool.put(up, now)
            return
        self._attach(up, now)

    def _attach(self, up: Upstream, now: float) -> None:
        ep = self.ep
        assert up.transport is not None and ep is not None
        up.owner = self
        self.up = up
        ep.in_flight += 1
        up.transport.write(self.out)
        self.last_read = now
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(
                self.engine.fe.spec.timeouts.read, self._check_timeout)
        if self.state == BODY:
            self._stream_body()

    def _drop_upstream(self) -> None:
        """Close the backend connection of this request (it will not be reused)."""
        up = self.up
        if up is not None:
            self.up = None
            if self.ep is not None:
                self.ep.in_flight -= 1
            up.close()

    def _check_timeout(self) -> None:
        self.timer = None
        if self.finished or self.state == TUNNEL:
            return
        limit = self.engine.fe.spec.timeouts.read
        idle = monotonic() - self.last_read
        if idle < limit:
            self.timer = asyncio.get_running_loop().call_later(limit - idle, self._check_timeout)
            return
        self._drop_upstream()
        if self.got_bytes:
            self._abort("timeout")
        else:
            self._fail(504, b"the backend did not answer in time", "timeout")

    def upstream_data(self, data: bytes) -> None:
        """Bytes from the backend: the answer's head, then its body."""
        self.last_read = now = monotonic()
        self.got_bytes = True
        if self.state == TUNNEL:
            if self.transport is not None:
                self.transport.write(data)
            return
        if self.resp is None:
            if self.resp_head:
                data = self.resp_head + data
                self.resp_head = b""
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.resp_head = data
                if len(data) > MAX_HEAD:
                    self._backend_broke("answer head too large")
                return
            head = data[:end]
            rest = data[end + 4:]
            client_head = self._answer_head(head)
            if client_head is None:
                if rest:
                    if self.state == TUNNEL:
                        self._send(rest)  # the upgraded protocol's first bytes
                    elif self.resp is None and self.up is not None:
                        self.upstream_data(rest)  # the answer after an interim one
                return
            framing = self.framing
            if framing == LENGTH and len(rest) == self.resp_left:
                # The usual answer: head and whole body in one read, sent in one write.
                self._send(client_head + rest)
                self._done(now)
                return
            if framing == NONE or (framing == LENGTH and not self.resp_left):
                self._send(client_head)
                self._done(now, reusable=not rest)
                return
            if not rest:
                self._send(client_head)
                return
            # Head and body in one write: one system call instead of two.
            self._answer_body(rest, client_head, now)
            return
        self._answer_body(data, b"", now)

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _answer_head(self, head: bytes) -> bytes | None:
        """Parse the answer head; the head for the client, or None when not to send it."""
        req = self.req
        assert req is not None and self.transport is not None
        try:
            resp = parse_response(head, req.upgrade is not None)
        except ValueError as exc:
            self._backend_broke(str(exc))
            return None
        status = resp.status
        if status < 200 and status != 101:
            return None  # an interim answer (100 Continue, 103): skipped
        self.resp = resp
        policy = self.fe.policy
        if policy.needs_headers and self.group is not None:
            policy.answered(self.fe, self.group, resp.header_map())
        if status == 101 and req.upgrade is not None:
            self.transport.write(resp.client_head(False, False))
            self.state = TUNNEL
            if self.buf and self.up is not None and self.up.transport is not None:
                self.up.transport.write(bytes(self.buf))
                self.buf.clear()
            return None
        if req.method == b"HEAD" or status == 204 or status == 304 or status < 200:
            self.framing = NONE
        elif resp.chunked:
            self.framing = CHUNKED
            self.resp_chunks = Chunked()
        elif resp.length is not None:
            self.framing = LENGTH
            self.resp_left = resp.length
        else:
            self.framing = UNTIL_CLOSE
            self.close_after = True
        if self.balancer.closing:
            self.close_after = True
        keep_1_0 = req.version == b"HTTP/1.0" and not self.close_after
        return resp.client_head(self.close_after, keep_1_0)

    def _answer_body(self, data: bytes, head: bytes, now: float) -> None:
        """Forward body bytes (after `head`, the client head when not sent yet)."""
        assert self.transport is not None
        framing = self.framing
        if framing == LENGTH:
            n = len(data)
            if n >= self.resp_left:
                extra = n > self.resp_left
                body = data[:self.resp_left] if extra else data
                self.transport.write(head + body if head else body)
                self.resp_left = 0
                self._done(now, reusable=not extra)
                return
            self.transport.write(head + data if head else data)
            self.resp_left -= n
        elif framing == CHUNKED:
            assert self.resp_chunks is not None
            try:
                end, done = self.resp_chunks.feed(data)
            except BadRequest:
                if head:
                    self.transport.write(head)
                self._backend_broke("invalid chunked answer")
                return
            extra = end < len(data)
            body = data[:end] if extra else data
            self.transport.write(head + body if head else body)
            if done:
                self._done(now, reusable=not extra)
        elif framing == UNTIL_CLOSE:
            self.transport.write(head + data if head else data)

    def upstream_lost(self, up: Upstream) -> None:
        """The backend connection closed while serving this client."""
        if up is not self.up:
            return
        self.up = None
        if self.ep is not None:
            self.ep.in_flight -= 1
        if self.finished:
            return
        if self.state == TUNNEL or self.framing == UNTIL_CLOSE and self.resp is not None:
            self.close_after = True
            self._done(monotonic(), reusable=False, counted=True)
            return
        if not self.got_bytes:
            req = self.req
            assert req is not None and self.group is not None
            self.group.series.error("disconnected")
            replayable = self.state == WAIT and req.idempotent and not req.chunked \
                and (req.length or 0) <= BUFFER_LIMIT
            if replayable and self.stale_retries < 2:
                # Most likely a pooled connection the backend had just closed: send again.
                self.stale_retries += 1
                self.tried = tuple(ep for ep in self.tried if ep is not self.ep)
                self.attempts -= 1
                self._dispatch()
                return
            self._fail(502, b"the backend closed the connection without answering", "")
            return
        self._abort("backend_abort")

    def _backend_broke(self, why: str) -> None:
        log.warning("frontend %s: backend %s: %s", self.engine.fe.name,
                    self.ep.addr if self.ep else "?", why)
        self._drop_upstream()
        if self.resp is None:
            self._fail(502, why.encode(), "backend")
        else:
            self._abort("backend")

    # -- endings ----------------------------------------------------------------------------

    def _done(self, now: float, reusable: bool = True, counted: bool = False) -> None:
        """The answer is complete: recycle the backend connection, account, next request."""
        up = self.up
        if up is not None and not counted:
            self.up = None
            if self.ep is not None:
                self.ep.in_flight -= 1
            resp = self.resp
            if reusable and resp is not None and resp.reusable and self.state == WAIT \
                    and not up.closed:
                self.pool.put(up, now)
            else:
                up.close()
        status = self.resp.status if self.resp is not None else 0
        self._finish(status, now)
        if self.close_after or self.balancer.closing:
            self.close()
            return
        self.state = HEAD
        self.idle_since = now
        if self.client_paused:
            self.resume_client()
        if self.buf:
            self._parse()

    def _finish(self, status: int, now: float = 0.0) -> None:
        if self.finished:
            return
        self.finished = True
        group = self.group
        if group is not None:
            group.done(status, (now or monotonic()) - self.started)

    def _fail(self, status: int, text: bytes, kind: str) -> None:
        if kind and self.group is not None:
            self.group.series.error(kind)
        self._finish(status)
        self._local(status, text)

    def _abort(self, kind: str) -> None:
        """The answer started and broke: cut the client connection (no silent short body)."""
        if self.group is not None:
            self.group.series.error(kind)
        self._finish(502)
        self.abort()

    def _reject(self, why: str) -> None:
        self.balancer.metrics.error(self.engine.fe.name, "-", "bad_request")
        self._local(400, why.encode())

    def _local(self, status: int, text: bytes) -> None:
        """Answer from the LB itself, then close (the request body may be unread)."""
        if self.transport is not None and not self.transport.is_closing():
            body = text + b"\n"
            self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                 % (status, REASONS.get(status, b"Error"), len(body), body))
        self.close()

    def close(self) -> None:
        """Close after what was written is sent."""
        self.state = CLOSED
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping anything unsent."""
        self.state = CLOSED
        self._drop_upstream()
        if self.transport is not None:
            self.transport.abort()

