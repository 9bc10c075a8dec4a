"""ASGI middleware: request ids, access logs and metrics; admission control; the upload limit."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import ServiceMetrics
from service.problems import overloaded, problem_response

log = logging.getLogger("facerecon.access")
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _route_template(scope: Scope) -> str:
    """The matched route's path template, so metrics keep a bounded set of labels."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestContextMiddleware:
    """Gives each request an id (the client's X-Request-ID when sane), echoes it, and records
    one structured access-log line and the request metrics. Never logs bodies or file names."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

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
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.info("request", extra={"request_id": request_id, "method": scope["method"], "route": route,
                                       "status": status, "duration_ms": round(seconds * 1000.0, 2)})


class UploadLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413 while they stream in: at once when the
    Content-Length says so, else as soon as the count passes the limit (nothing is spooled)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"the request body is larger than the limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            exc = self._too_large()
            response = problem_response(Request(scope), 413, "upload-too-large", "Content Too Large", exc.detail,
                                        headers={"Connection": "close"})
            return await response(scope, receive, send)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counting_receive, send)


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
            problem = overloaded(self.retry_after_s)
            response = problem_response(Request(scope), problem.status, problem.slug, problem.title, problem.detail,
                                        problem.headers)
            return await response(scope, receive, send)
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
