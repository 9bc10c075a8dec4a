"""The HTTP service: FastAPI on ONNX Runtime (no torch). ``create_app`` builds it from settings;
``facerecon serve`` runs it under uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.formparsers import MultiPartParser

from service.dependencies import check_api_key
from service.engine import ReconstructionEngine
from service.metrics import ServiceMetrics
from service.middleware import (
    AdmissionMiddleware,
    ApiKeyMiddleware,
    RequestContextMiddleware,
    UnhandledErrorMiddleware,
    UploadLimitMiddleware,
)
from service.problems import Problem, install_problem_handlers
from service.routes import operations, person, reconstruction, transfer
from service.schemas import MODEL_VERSION_HELP
from service.settings import ServiceSettings
from service.web import install_api_docs, install_web_page

REF_TEMPLATE = "#/components/schemas/{model}"


# Response headers that a browser page on another origin (allowed by cors_origins) may read.
EXPOSED_HEADERS = ("X-Face-Count", "X-Faces-Dropped", "X-Request-ID", "X-Model-Version", "Retry-After",
                   "WWW-Authenticate")
# Headers on every answer, documented on every response of the OpenAPI document.
_COMMON_HEADERS = {
    "X-Request-ID": {"description": "the request's id (the client's X-Request-ID when sane): quote it to support",
                     "schema": {"type": "string"}},
    "X-Model-Version": {"description": MODEL_VERSION_HELP, "schema": {"type": "string"},
                        "example": "30700-steps-1ab74d2ac082"},
}
# Models that the routes reference by hand ({"$ref": "#/components/schemas/<name>"}) rather than through a
# response model, which FastAPI would put in the components by itself.
_REFERENCED_MODELS: tuple[type[BaseModel], ...] = (Problem,)


def install_openapi_document(app: FastAPI) -> None:
    """FastAPI's OpenAPI document, plus the schemas of _REFERENCED_MODELS in its components and the headers of
    every answer on every response (built once, on the first call)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        _, definitions = models_json_schema([(model, "serialization") for model in _REFERENCED_MODELS],
                                            ref_template=REF_TEMPLATE)
        for name, schema in definitions.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        document["components"]["schemas"] = dict(sorted(schemas.items()))
        for path in document.get("paths", {}).values():
            for operation in path.values():
                for response in operation.get("responses", {}).values():
                    response.setdefault("headers", {}).update(_COMMON_HEADERS)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load and warm up the models before serving; drain and stop them on shutdown."""
    settings: ServiceSettings = app.state.settings
    engine = await asyncio.to_thread(ReconstructionEngine, settings, app.state.metrics)
    app.state.engine = engine
    app.state.model_version = engine.model_version  # the X-Model-Version header of every answer from now on
    await engine.start()
    try:
        yield
    finally:
        await engine.stop()


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    # Uploads stay in memory: Starlette spools multipart files to a temporary file past this
    # size, and the upload limit (enforced before) keeps every file below it.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes + 1)

    app = FastAPI(
        title="facerecon",
        version="0.1.0",
        summary="Single-image 3D face reconstruction: upload a photo, get each face as a mesh.",
        description=("Finds the faces in a photo and returns each as a dense mesh (GLB, OBJ or PLY; the same "
                     "vertices for every face, counted in `/v1/info`) or as JSON with 68 landmarks and head pose. "
                     "Errors are RFC 9457 problem documents "
                     "(`application/problem+json`) with a stable `type`. Every answer carries `X-Request-ID` and "
                     "`X-Model-Version` (the model that answered, as in `/v1/info`)."),
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: served by install_api_docs from packaged assets, no CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.model_version = None  # known once the lifespan has loaded the model
    install_problem_handlers(app)
    install_web_page(app)
    install_api_docs(app)
    install_openapi_document(app)

    # Middleware, innermost first (each add_middleware wraps the ones before): admission, the body guard,
    # the API key, unexpected errors, CORS, the request context. So authentication comes before admission
    # and before the body is read, and CORS headers and request ids reach every answer, also the
    # middleware's own 401/408/413/503 and the 500 of an unexpected error.
    routers = (reconstruction.router, transfer.router, person.router)
    reconstruct_paths = tuple(route.path for router in routers for route in router.routes
                              if isinstance(route, APIRoute))
    app.add_middleware(AdmissionMiddleware, limit=settings.max_in_flight, retry_after_s=settings.retry_after_s,
                       paths=reconstruct_paths, metrics=metrics)
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes, grace_s=settings.body_timeout_s,
                       min_rate=settings.min_upload_rate, idle_timeout_s=settings.body_idle_timeout_s)
    app.add_middleware(ApiKeyMiddleware, paths=reconstruct_paths, authenticate=partial(check_api_key, settings))
    app.add_middleware(UnhandledErrorMiddleware)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "X-Request-ID", "Content-Type"],
                           expose_headers=list(EXPOSED_HEADERS))
    app.add_middleware(RequestContextMiddleware, metrics=metrics, routes=app.router.routes,
                       model_version=lambda: app.state.model_version)

    app.include_router(operations.router)
    for router in routers:
        app.include_router(router)
    return app
