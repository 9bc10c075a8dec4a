"""The HTTP service: FastAPI on ONNX Runtime (no torch). ``create_app`` builds it from settings;
``facerecon serve`` runs it under uvicorn."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.formparsers import MultiPartParser

from service.dependencies import require_api_key
from service.engine import ReconstructionEngine
from service.metrics import ServiceMetrics
from service.middleware import (
    AdmissionMiddleware,
    ApiKeyMiddleware,
    RequestContextMiddleware,
    UnhandledErrorMiddleware,
    UploadLimitMiddleware,
)
from service.problems import install_problem_handlers
from service.routes import operations, reconstruction
from service.settings import ServiceSettings
from service.web import install_web_page


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load and warm up the models before serving; drain and stop them on shutdown."""
    settings: ServiceSettings = app.state.settings
    engine = await asyncio.to_thread(ReconstructionEngine, settings, app.state.metrics)
    app.state.engine = engine
    with open(settings.model_path, "rb") as model_file:
        app.state.model_version = hashlib.sha256(model_file.read()).hexdigest()[:12]
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
        description=("Finds the faces in a photo and returns each as a 7,257-vertex mesh (GLB, OBJ or PLY) "
                     "or as JSON with 68 landmarks and head pose. Errors are RFC 9457 problem documents "
                     "(`application/problem+json`) with a stable `type`."),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_problem_handlers(app)
    install_web_page(app)

    # Middleware, innermost first (each add_middleware wraps the ones before): admission, the body guard,
    # the API key, unexpected errors, CORS, the request context. So authentication comes before admission
    # and before the body is read, and CORS headers and request ids reach every answer, also the
    # middleware's own 401/408/413/503 and the 500 of an unexpected error.
    reconstruct_paths = tuple(route.path for route in reconstruction.router.routes if isinstance(route, APIRoute))
    app.add_middleware(AdmissionMiddleware, limit=settings.max_in_flight, retry_after_s=settings.retry_after_s,
                       paths=reconstruct_paths, metrics=metrics)
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes, grace_s=settings.body_timeout_s,
                       min_rate=settings.min_upload_rate, idle_timeout_s=settings.body_idle_timeout_s)
    app.add_middleware(ApiKeyMiddleware, paths=reconstruct_paths, authenticate=partial(require_api_key, settings))
    app.add_middleware(UnhandledErrorMiddleware)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "X-Request-ID", "Content-Type"],
                           expose_headers=["X-Face-Count", "X-Faces-Dropped", "X-Request-ID", "Retry-After",
                                           "WWW-Authenticate"])
    app.add_middleware(RequestContextMiddleware, metrics=metrics, routes=app.router.routes)

    app.include_router(operations.router)
    app.include_router(reconstruction.router)
    return app
