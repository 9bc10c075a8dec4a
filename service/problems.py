"""RFC 9457 problem details: every error the service returns is ``application/problem+json``
with a stable ``type`` URI that clients can switch on."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:facerecon:problem:"

log = logging.getLogger("facerecon.service")


class Problem(BaseModel):
    """An error response (RFC 9457)."""

    type: str = Field(description="stable identifier of the kind of error", examples=[TYPE_PREFIX + "no-face"])
    title: str = Field(description="short summary of the kind of error", examples=["No face found"])
    status: int = Field(description="the HTTP status code", examples=[422])
    detail: str = Field(default="", description="what went wrong with this request",
                        examples=["no face was detected in the image"])
    instance: str | None = Field(default=None, description="the request path")
    request_id: str | None = Field(default=None, description="the X-Request-ID of the request, for support")
    errors: list[dict[str, Any]] | None = Field(default=None, description="invalid fields (validation errors only)")


class ProblemError(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(self, status: int, slug: str, title: str, detail: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail, self.headers = status, slug, title, detail, headers


# One title per problem type: problem_response takes the title from here whenever the slug is listed, so
# every path that answers with a type (route, middleware, framework error, HTTP protocol) names it alike.
TITLES = {
    "bad-request": "Bad request",
    "bad-image": "Unreadable image",
    "unauthenticated": "Unauthenticated",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "request-timeout": "Request timeout",
    "upload-too-large": "Upload too large",
    "image-too-large": "Image too large",
    "unsupported-media-type": "Unsupported media type",
    "headers-too-large": "Request headers too large",
    "no-face": "No face found",
    "invalid-options": "Invalid options",
    "internal-error": "Internal server error",
    "overloaded": "Service overloaded",
    "not-ready": "Not ready",
}


PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"  # the app's OpenAPI document defines it (service.app)


def problem_example(status: int, slug: str, detail: str, instance: str = "/v1/reconstruct") -> dict[str, Any]:
    """An OpenAPI example object: the problem document the service answers for ``slug``."""
    return {"summary": TITLES.get(slug, slug),
            "value": problem_document(status, slug, slug, detail, instance, "4f1c0f5a9d2b4e0c8a7e6b5d4c3b2a19")}


def problem_doc(description: str, *examples: tuple[int, str, str], instance: str = "/v1/reconstruct"
                ) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry whose body is a problem document (the shared ``Problem`` schema), with an
    example of each ``(status, slug, detail)`` given, as answered at the path ``instance``."""
    content: dict[str, Any] = {"schema": {"$ref": PROBLEM_SCHEMA_REF}}
    if examples:
        content["examples"] = {slug: problem_example(status, slug, detail, instance)
                               for status, slug, detail in examples}
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: content}}


def bad_image(detail: str) -> ProblemError:
    return ProblemError(400, "bad-image", TITLES["bad-image"], detail)


def unsupported_media_type(detail: str) -> ProblemError:
    return ProblemError(415, "unsupported-media-type", TITLES["unsupported-media-type"], detail)


def image_too_large(detail: str) -> ProblemError:
    return ProblemError(413, "image-too-large", TITLES["image-too-large"], detail)


def no_face(detail: str = "no face was detected in the image") -> ProblemError:
    return ProblemError(422, "no-face", TITLES["no-face"], detail)


def invalid_options(detail: str) -> ProblemError:
    return ProblemError(422, "invalid-options", TITLES["invalid-options"], detail)


def overloaded(retry_after_s: int) -> ProblemError:
    return ProblemError(503, "overloaded", TITLES["overloaded"],
                        f"too many requests in flight; retry after {retry_after_s} s",
                        headers={"Retry-After": str(retry_after_s)})


def upload_too_large(max_bytes: int) -> ProblemError:
    """The body is over the byte limit (said by its Content-Length, or counted while it streams in).
    The rest of the body is not read, so the connection closes after the answer."""
    return ProblemError(413, "upload-too-large", TITLES["upload-too-large"],
                        f"the request body is larger than the limit of {max_bytes} bytes",
                        headers={"Connection": "close"})


def request_timeout(detail: str) -> ProblemError:
    """The client sent its request (head or body) too slowly; the connection closes after the answer."""
    return ProblemError(408, "request-timeout", TITLES["request-timeout"], detail, headers={"Connection": "close"})


# HTTP errors raised by the framework itself (404, 405, 413 from the body limit, 401 ...)
_FRAMEWORK_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    404: "not-found",
    405: "method-not-allowed",
    408: "request-timeout",
    413: "upload-too-large",
    415: "unsupported-media-type",
    431: "headers-too-large",
}


class HTTPProblem(StarletteHTTPException):
    """A ProblemError raised where only HTTP exceptions pass through unchanged: from a middleware's
    ``receive`` while the framework parses the body (FastAPI turns other exceptions there into 400)."""

    def __init__(self, problem: ProblemError) -> None:
        super().__init__(problem.status, problem.detail, problem.headers)
        self.problem = problem


def problem_document(status: int, slug: str, title: str, detail: str = "", instance: str | None = None,
                     request_id: str | None = None, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The problem document as JSON-ready data (also written by the HTTP protocol guard, outside the app)."""
    problem = Problem(type=TYPE_PREFIX + slug, title=TITLES.get(slug, title), status=status, detail=detail,
                      instance=instance, request_id=request_id, errors=errors)
    return problem.model_dump(exclude_none=True)


def problem_response(request: Request, status: int, slug: str, title: str, detail: str = "",
                     headers: dict[str, str] | None = None, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    document = problem_document(status, slug, title, detail, request.url.path,
                                request.scope.get("state", {}).get("request_id"), errors)
    return JSONResponse(document, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", ""))}
            for error in exc.errors()]


def install_problem_handlers(app: FastAPI) -> None:
    """Render ProblemError, HTTP errors, validation errors and anything unexpected as problems."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(request, exc.status, exc.slug, exc.title, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        detail = "; ".join(f"{'.'.join(e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return problem_response(request, 422, "invalid-options", TITLES["invalid-options"], detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, HTTPProblem):
            problem = exc.problem
            return problem_response(request, problem.status, problem.slug, problem.title, problem.detail,
                                    problem.headers)
        title = HTTPStatus(exc.status_code).phrase
        slug = _FRAMEWORK_SLUGS.get(exc.status_code, title.lower().replace(" ", "-"))
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else ""
        if exc.status_code == 400 and not detail:
            detail = "the request body could not be parsed"
        return problem_response(request, exc.status_code, slug, title, detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error_response(request, exc)


def internal_error_response(request: Request, exc: BaseException) -> JSONResponse:
    """Logs an unexpected error with its traceback and answers 500 without its details."""
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return problem_response(request, 500, "internal-error", TITLES["internal-error"],
                            "the server failed to process the request; it has been logged")
