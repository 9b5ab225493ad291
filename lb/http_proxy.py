"""The HTTP data plane: one aiohttp low-level server per frontend, proxying to its groups.

Per request: the frontend's policy picks a group at arrival (so a switch is atomic for new
requests and in-flight requests finish where they started), the group picks an endpoint
round-robin, and the request goes out over a pooled keep-alive connection. Bodies stream in
both directions; small ones are buffered, which is faster and lets a request be retried.

Retries: a connection that was refused or timed out never reached a backend, so any method is
retried on another endpoint; a pooled connection that closed before any answer is retried
only for idempotent methods with a buffered body. Answers: 503 when no group or endpoint can
take the request, 502 when every attempt failed or the backend broke its answer, 504 when the
backend did not answer within the read timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

if TYPE_CHECKING:
    from lb.backends import Endpoint, GroupRuntime
    from lb.balancer import Balancer, FrontendRuntime

__all__ = ["HttpProxy"]

log = logging.getLogger("dans.lb")

HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
    "TE", "Trailer", "Trailers", "Transfer-Encoding", "Upgrade",
))
# Set by aiohttp from the body it sends or returns.
_DROP_REQUEST = HOP_BY_HOP | {"content-length", "expect"}
_DROP_RESPONSE = HOP_BY_HOP | {"content-length"}
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
BUFFER_LIMIT = 1 << 20  # request bodies up to this size are buffered (and retriable)
SMALL_ANSWER = 1 << 16  # answers up to this size are read whole, not streamed
_CONNECT_TIMEOUT = getattr(aiohttp, "ConnectionTimeoutError", None)


class _NoBackend(Exception):
    pass


def _request_headers(request: web.BaseRequest, port: int) -> CIMultiDict[str]:
    """The client's headers without hop-by-hop ones, plus X-Forwarded-*."""
    src = request.headers
    headers = _end_to_end(src, _DROP_REQUEST)
    peer = request.remote or ""
    prior = src.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Port"] = str(port)
    if "Host" in src:
        headers["X-Forwarded-Host"] = src["Host"]
    return headers


def _response_headers(resp: aiohttp.ClientResponse) -> CIMultiDict[str]:
    return _end_to_end(resp.headers, _DROP_RESPONSE)


def _end_to_end(src: Any, hop_by_hop: frozenset[str] | set[str]) -> CIMultiDict[str]:
    """A copy of `src` without hop-by-hop headers, those named in `Connection` included."""
    dropped = set(hop_by_hop)
    connection = src.get("Connection")
    if connection:
        dropped |= {t.strip().lower() for t in connection.split(",")}
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in src.items():
        if key.lower() not in dropped:
            headers.add(key, value)
    return headers


def _is_connect_timeout(exc: BaseException) -> bool:
    if _CONNECT_TIMEOUT is not None:
        return isinstance(exc, _CONNECT_TIMEOUT)
    return isinstance(exc, aiohttp.ServerTimeoutError) and str(exc).startswith("Connection")


def _plain(status: int, text: str, closing: bool) -> web.Response:
    resp = web.Response(status=status, text=text + "\n")
    if closing:
        resp.force_close()
    return resp


class HttpProxy:
    """The request handler of one HTTP frontend."""

    def __init__(self, balancer: Balancer, fe: FrontendRuntime) -> None:
        self.balancer = balancer
        self.fe = fe

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Proxy one request to the group chosen by the frontend's policy."""
        fe = self.fe
        balancer = self.balancer
        metrics = balancer.metrics
        started = time.perf_counter()
        if request.version[0] != 1:  # aiohttp 3.8 parses any HTTP/x.y
            return _plain(505, "HTTP version not supported", True)
        policy = fe.policy
        group = policy.choose(fe, request.headers if policy.needs_headers else None)
        if group is None:
            metrics.error(fe.name, "-", "no_group")
            metrics.observe(fe.name, "-", 503, time.perf_counter() - started)
            return _plain(503, "no group takes requests", balancer.closing)
        group.begin()
        status = 0
        try:
            response = await self._forward(request, fe, group)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        finally:
            group.done(status, time.perf_counter() - started)

    async def _forward(self, request: web.BaseRequest, fe: FrontendRuntime,
                       group: GroupRuntime) -> web.StreamResponse:
        series = group.series
        closing = self.balancer.closing
        headers = _request_headers(request, fe.spec.listen)
        data: bytes | aiohttp.StreamReader | None = None
        replayable = True
        if request.body_exists:
            length = request.content_length
            if length is not None and length <= BUFFER_LIMIT:
                data = await request.read()
            else:
                data = request.content
                replayable = False
        method = request.method
        may_resend = replayable and method in IDEMPOTENT
        tried: set[Endpoint] = set()
        last_error = "no backend"
        for attempt in range(fe.spec.retries + 1):
            ep = await group.pick_or_refresh(tried)
            if ep is None:
                break
            if attempt:
                series.retries += 1
            tried.add(ep)
            url = URL(f"http://{ep.addr}{request.raw_path}", encoded=True)
            ep.in_flight += 1
            try:
                resp = await self.balancer.session.request(
                    method, url, headers=headers, data=data, timeout=fe.client_timeout,
                    allow_redirects=False,
                )
            except aiohttp.ClientConnectorError as exc:
                ep.in_flight -= 1
                ep.mark_down()
                series.error("connect")
                last_error = f"cannot connect to {ep.addr}: {exc.os_error}"
                if not replayable:
                    break
                continue
            except TimeoutError as exc:
                ep.in_flight -= 1
                if _is_connect_timeout(exc):
                    ep.mark_down()
                    series.error("connect_timeout")
                    last_error = f"connecting to {ep.addr} timed out"
                    if not replayable:
                        break
                    continue
                series.error("timeout")
                return _plain(504, f"backend {ep.addr} did not answer in time", closing)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                ep.in_flight -= 1
                series.error("disconnected")
                last_error = f"backend {ep.addr} closed the connection: {exc}"
                if may_resend:
                    continue
                return _plain(502, last_error, closing)
            except aiohttp.ClientError as exc:
                ep.in_flight -= 1
                series.error("backend")
                return _plain(502, f"backend {ep.addr} failed: {exc}", closing)
            try:
                ep.mark_up()
                return await self._answer(request, resp, fe, group, ep)
            finally:
                ep.in_flight -= 1
                resp.release()
        if not tried:
            series.error("no_backend")
            return _plain(503, f"group {group.name} has no backend", closing)
        return _plain(502, last_error, closing)

    async def _answer(self, request: web.BaseRequest, resp: aiohttp.ClientResponse,
                      fe: FrontendRuntime, group: GroupRuntime, ep: Endpoint
                      ) -> web.StreamResponse:
        headers = _response_headers(resp)
        if fe.policy.needs_headers:
            fe.policy.answered(fe, group, resp.headers)
        length = resp.content_length
        status = resp.status
        bodiless = request.method == "HEAD" or status in (204, 304) or status < 200
        try:
            if not bodiless and length is not None and length <= SMALL_ANSWER:
                body = await resp.read()
                out = web.Response(status=status, reason=resp.reason, headers=headers, body=body)
                if self.balancer.closing:
                    out.force_close()
                return out
            stream = web.StreamResponse(status=status, reason=resp.reason, headers=headers)
            if length is not None and status not in (204, 304) and status >= 200:
                stream.content_length = length
            if self.balancer.closing:
                stream.force_close()
        except TimeoutError:
            group.series.error("timeout")
            return _plain(504, f"backend {ep.addr} did not finish its answer in time",
                          self.balancer.closing)
        except aiohttp.ClientError as exc:
            group.series.error("backend")
            return _plain(502, f"backend {ep.addr} broke its answer: {exc}",
                          self.balancer.closing)
        await stream.prepare(request)
        if not bodiless:
            try:
                async for chunk in resp.content.iter_any():
                    await stream.write(chunk)
            except (TimeoutError, aiohttp.ClientError) as exc:
                # The status line is gone already: all we can do is cut the connection so
                # the client sees a broken answer rather than a short one.
                group.series.error("backend_abort")
                log.warning("frontend %s: backend %s broke off its answer: %r",
                            fe.name, ep.addr, exc)
                if request.transport is not None:
                    request.transport.close()
                return stream
        await stream.write_eof()
        return stream
