"""ASGI middleware: request ids, access logs and metrics; unexpected errors; authentication; the body's
size and rate limits; admission control. And the HTTP/1.1 protocol guard that ``facerecon serve`` runs
uvicorn with: limits on the request head (size, field count, arrival time) that apply before a request
reaches the app.

Order, outermost first (see ``service.app.create_app``): request context, CORS, unexpected errors, API
key, body guard, admission, the routes. So every answer, also one made by a middleware, carries the
request id and the CORS headers and is counted under its route; a client without a valid key never takes
an admission slot and never has its body read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import fastapi.routing
import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, compile_path, get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from service.metrics import ServiceMetrics
from service.problems import (
    PROBLEM_MEDIA_TYPE,
    HTTPProblem,
    ProblemError,
    internal_error_response,
    overloaded,
    problem_document,
    problem_response,
    request_timeout,
    upload_too_large,
)
from service.settings import ServiceSettings

log = logging.getLogger("facerecon.access")
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RouteLabels:
    """The path template of the route a request was for, so metrics keep a bounded set of labels: the
    matched route's, or, for an answer made by a middleware before routing, the first route whose path
    matches (whatever the method). Other paths: ``unmatched``."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = routes
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def _compile(self) -> list[tuple[re.Pattern[str], str]]:
        # FastAPI keeps included routers unflattened in recent versions; iter_route_contexts walks them.
        walk = getattr(fastapi.routing, "iter_route_contexts", None)
        found = ([(context.path, context.original_route) for context in walk(self.routes)] if walk is not None
                 else [(getattr(route, "path", None), route) for route in self.routes])
        patterns = []
        for path, route in found:
            if path:
                regex, _, _ = compile_path(path + "/{path:path}" if isinstance(route, Mount) else path)
                patterns.append((regex, path))
        return patterns

    def __call__(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if path:
            return path
        if self._patterns is None:  # once the routes are all there: the first request
            self._patterns = self._compile()
        request_path = get_route_path(scope)
        return next((template for regex, template in self._patterns if regex.match(request_path)), "unmatched")


async def answer_problem(scope: Scope, receive: Receive, send: Send, problem: ProblemError) -> None:
    """Answer with a problem document from a middleware (the app's exception handlers are further in)."""
    response = problem_response(Request(scope), problem.status, problem.slug, problem.title, problem.detail,
                                problem.headers)
    await response(scope, receive, send)


def _no_version() -> str | None:
    return None


class RequestContextMiddleware:
    """Gives each request an id (the client's X-Request-ID when sane), echoes it, adds ``X-Model-Version``
    (``model_version()``, once known), and records one structured access-log line and the request metrics.
    Never logs bodies or file names."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: Sequence[BaseRoute] = (),
                 model_version: Callable[[], str | None] = _no_version) -> None:
        self.app, self.metrics, self.route_label = app, metrics, RouteLabels(routes)
        self.model_version = model_version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                version = self.model_version()
                if version:
                    headers.append((b"x-model-version", version.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = self.route_label(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.info("request", extra={"request_id": request_id, "method": scope["method"], "route": route,
                                       "status": status, "duration_ms": round(seconds * 1000.0, 2)})


class UnhandledErrorMiddleware:
    """Answers an unexpected error with the 500 problem here, inside CORS and the request context, so
    that answer too carries the CORS headers and the request id (Starlette's outermost error middleware
    would answer it outside them). An error once the answer has started is left to the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            await internal_error_response(Request(scope), exc)(scope, receive, send)


class ApiKeyMiddleware:
    """Authenticates requests to ``paths`` before admission and before their body is read: a client
    without a valid key takes no admission slot and its upload is never parsed. ``authenticate`` is the
    one function that decides (it raises the 401 problem); CORS preflights pass."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], authenticate: Callable[[str | None], None]) -> None:
        self.app, self.paths, self.authenticate = app, paths, authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        key = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"x-api-key"), None)
        try:
            self.authenticate(key)
        except ProblemError as problem:
            return await answer_problem(scope, receive, send, problem)
        await self.app(scope, receive, send)


class UploadLimitMiddleware:
    """Guards the request body while it streams in. Over ``max_bytes``: 413, at once when the
    Content-Length says so, else as soon as the count passes the limit (nothing is spooled). Too slow:
    408 once a piece takes longer than ``idle_timeout_s`` to come, or once the body falls behind
    ``min_rate`` bytes/s after a grace of ``grace_s`` (a whole body of N bytes may take grace_s + N /
    min_rate; a Content-Length larger than the body ends by the idle timeout). Both answers close the
    connection, since the rest of the body is not read."""

    def __init__(self, app: ASGIApp, max_bytes: int, grace_s: float = 10.0, min_rate: int = 16 * 1024,
                 idle_timeout_s: float = 10.0) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.grace_s, self.min_rate, self.idle_timeout_s = grace_s, min_rate, idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await answer_problem(scope, receive, send, upload_too_large(self.max_bytes))
        loop = asyncio.get_running_loop()
        received, started, complete = 0, -1.0, False

        async def guarded_receive() -> Message:
            nonlocal received, started, complete
            if complete:  # the body is in: what is left to receive is the disconnect, which may take any time
                return await receive()
            now = loop.time()
            if started < 0.0:
                started = now
            behind = started + self.grace_s + received / self.min_rate - now
            budget = min(self.idle_timeout_s, behind)
            try:
                if budget <= 0.0:
                    raise TimeoutError
                async with asyncio.timeout(budget):
                    message = await receive()
            except TimeoutError:
                detail = (f"no part of the request body arrived for {self.idle_timeout_s:g} s"
                          if budget == self.idle_timeout_s else
                          f"the request body arrived slower than {self.min_rate} bytes/s")
                raise HTTPProblem(request_timeout(detail)) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPProblem(upload_too_large(self.max_bytes))
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, guarded_receive, send)


class AdmissionMiddleware:
    """Bounds the reconstruction requests in flight: beyond ``limit`` it answers 503 with
    Retry-After at once, before reading the body, instead of letting latency pile up."""

    def __init__(self, app: ASGIApp, limit: int, retry_after_s: int, paths: tuple[str, ...],
                 metrics: ServiceMetrics) -> None:
        self.app, self.limit, self.retry_after_s, self.paths, self.metrics = app, limit, retry_after_s, paths, metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limit:
            self.metrics.rejected.inc()
            return await answer_problem(scope, receive, send, overloaded(self.retry_after_s))
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)


class _HeadGuardConnection(h11.Connection):
    """h11's server connection, which already bounds the bytes of an incomplete request head, plus a
    bound on its header fields and callbacks when a head is awaited and once it is complete. Keeps the
    error it raised."""

    def __init__(self, max_headers: int, on_head: Callable[[], None], on_cycle: Callable[[], None],
                 max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_headers, self.on_head, self.on_cycle = max_headers, on_head, on_cycle
        self.error: h11.RemoteProtocolError | None = None

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        self.on_cycle()

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                if len(event.headers) > self.max_headers:
                    raise h11.RemoteProtocolError(f"more than {self.max_headers} header fields",
                                                  error_status_hint=431)
                self.on_head()
            return event
        except h11.RemoteProtocolError as err:
            self.error = err
            raise


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with limits on the request head, which reach no ASGI middleware: the
    line and headers must fit in ``h11_max_incomplete_event_size`` bytes and ``max_headers`` fields (else
    431) and arrive within ``header_timeout_s`` of the connection or of the previous answer (else 408).
    The same timer bounds how long the unread rest of a body is drained after an early answer (401, 503)
    and how long a connection may stay idle. Its answers are problem documents, and the connection
    closes after them."""

    header_timeout_s: ClassVar[float] = 10.0
    max_headers: ClassVar[int] = 100
    metrics: ClassVar[ServiceMetrics | None] = None

    @staticmethod
    def model_version() -> str | None:
        """The X-Model-Version of the protocol's own answers (None: not sent)."""
        return None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        self.conn = _HeadGuardConnection(self.max_headers, self._cancel_head_timer, self._arm_head_timer,
                                         self.max_head_bytes)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._arm_head_timer()  # before super(), which may parse a pipelined request's head at once
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this for every request it cannot parse; h11 hints 431 for a head over the limit."""
        error = getattr(self.conn, "error", None)
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):  # an answer has begun: just hang up
            self._count("bad-request")
            self.transport.close()
        elif error is not None and error.error_status_hint == 431:
            self._refuse(431, "headers-too-large", f"the request line and headers must fit in {self.max_head_bytes} "
                                                   f"bytes and {self.max_headers} header fields")
        else:
            self._refuse(400, "bad-request", "the request is not valid HTTP/1.1")

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.conn.our_state is h11.IDLE and self.conn.trailing_data[0]:  # part of a request head came
            self._refuse(408, "request-timeout",
                         f"the request line and headers did not arrive within {self.header_timeout_s:g} s")
        else:  # nothing came, or the rest of a body already answered is still trickling in
            self._count("idle")
            self.transport.close()

    def _refuse(self, status: int, slug: str, detail: str) -> None:
        """Answer outside the app (no request reached it) and close."""
        self._count(slug)
        log.info("refused", extra={"status": status, "reason": slug})
        body = json.dumps(problem_document(status, slug, slug, detail)).encode()
        version = self.model_version()
        version_line = f"x-model-version: {version}\r\n" if version else ""
        head = (f"HTTP/1.1 {status} {STATUS_PHRASES[status].decode()}\r\ncontent-type: {PROBLEM_MEDIA_TYPE}\r\n"
                f"content-length: {len(body)}\r\n{version_line}connection: close\r\n\r\n").encode("latin-1")
        self.transport.write(head + body)
        self.transport.close()

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.connections_refused.labels(reason).inc()


def guarded_h11_protocol(settings: ServiceSettings, metrics: ServiceMetrics | None = None,
                         model_version: Callable[[], str | None] = _no_version) -> type[H11Protocol]:
    """The protocol class to give uvicorn (``http=``) for these settings; uvicorn must also get
    ``h11_max_incomplete_event_size=settings.max_header_bytes``. ``model_version``: the X-Model-Version
    of its own answers (None: not sent)."""

    class Protocol(GuardedH11Protocol):
        @staticmethod
        def model_version() -> str | None:
            return model_version()

    Protocol.header_timeout_s, Protocol.max_headers, Protocol.metrics = (settings.header_timeout_s,
                                                                        settings.max_headers, metrics)
    return Protocol
