"""The HTTP service: FastAPI on ONNX Runtime (no torch). ``create_app`` builds it from settings;
``facerecon serve`` runs it under uvicorn."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from contextlib import asynccontextmanager
from typing import Annotated, AsyncIterator

from fastapi import Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.formparsers import MultiPartParser

from model.conventions import Box, FaceSelection, MeshSpace, parse_box as parse_box_text
from model.runtime.image_io import ImageDecodeError, ImageTooLarge, UnsupportedImageFormat
from model.runtime.pipeline import ImageReconstruction, InvalidBox, NoFaceFound
from service.encoding import build_meshes, mesh_files, mesh_payload, reconstruction_json, zip_files
from service.engine import ReconstructionEngine
from service.metrics import ServiceMetrics
from service.middleware import AdmissionMiddleware, RequestContextMiddleware, UploadLimitMiddleware
from service.problems import (PROBLEM_MEDIA_TYPE, TYPE_PREFIX, Problem, ProblemError, bad_image, image_too_large,
                              install_problem_handlers, invalid_options, no_face, problem_response,
                              unsupported_media_type)
from service.schemas import (BOX_HELP, FACES_HELP, FORMAT_HELP, MEDIA_TYPES, SPACE_HELP, TEXTURE_HELP, BatchItemJSON,
                             BatchJSON, InfoJSON, OutputFormat, ReadyJSON,
                             ReconstructionJSON, TextureMode)
from service.settings import ServiceSettings
from service.web import install_web_page

RECONSTRUCT_PATHS = ("/v1/reconstruct", "/reconstruct", "/v1/reconstruct/batch")
_SAFE_STEM = re.compile(r"[^A-Za-z0-9_-]+")

_BINARY = {"schema": {"type": "string", "format": "binary"}}


def _problem_doc(description: str) -> dict:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": Problem.model_json_schema()}}}


_ERRORS = {
    400: _problem_doc("unreadable, corrupt or truncated image, or a malformed request body"),
    401: _problem_doc("API keys are configured and X-API-Key is missing or wrong"),
    413: _problem_doc("upload over the byte limit, or image over the pixel limit"),
    415: _problem_doc("the upload is not a JPEG, PNG or WebP image"),
    422: _problem_doc("no face found, or invalid options"),
    503: {**_problem_doc("too many requests in flight: retry after the Retry-After header's seconds"),
          "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}},
}
_FACE_COUNT_HEADER = {"X-Face-Count": {"description": "faces reconstructed", "schema": {"type": "integer"}}}
_MESH_RESPONSES = {
    200: {
        "description": "the mesh file(s), or JSON with format=json",
        "headers": _FACE_COUNT_HEADER,
        "content": {
            MEDIA_TYPES["glb"]: _BINARY,
            MEDIA_TYPES["obj"]: _BINARY,
            MEDIA_TYPES["ply"]: _BINARY,
            MEDIA_TYPES["zip"]: _BINARY,
            "application/json": {"schema": {"$ref": "#/components/schemas/ReconstructionJSON"}},
        },
    },
    **_ERRORS,
}
_BATCH_RESPONSES = {
    200: {
        "description": "a zip with each image's mesh file(s) and results.json, or JSON with format=json",
        "content": {MEDIA_TYPES["zip"]: _BINARY, "application/json": {"schema": {"$ref": "#/components/schemas/BatchJSON"}}},
    },
    **_ERRORS,
}

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required on reconstruction routes when the server has API keys configured")


def require_api_key(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    keys = request.app.state.settings.api_keys
    if keys and not any(hmac.compare_digest((key or "").encode(), k.get_secret_value().encode()) for k in keys):
        raise ProblemError(401, "unauthenticated", "Unauthenticated", "a valid X-API-Key header is required",
                           headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'})


def parse_box(text: str | None) -> Box | None:
    if text is None or not text.strip():
        return None
    try:
        return parse_box_text(text)
    except ValueError as err:
        raise invalid_options(str(err)) from None


def _stem(filename: str | None, fallback: str) -> str:
    stem = _SAFE_STEM.sub("_", (filename or "").rsplit("/", 1)[-1].rsplit(".", 1)[0]).strip("_")
    return stem[:48] or fallback


async def reconstruct_upload(engine: ReconstructionEngine, data: bytes, faces: FaceSelection,
                             box: Box | None) -> ImageReconstruction:
    """engine.reconstruct with its errors turned into problems."""
    if not data:
        raise bad_image("the image file is empty")
    try:
        return await engine.reconstruct(data, faces=faces, box=box)
    except UnsupportedImageFormat as err:
        raise unsupported_media_type(str(err)) from None
    except ImageTooLarge as err:
        raise image_too_large(str(err)) from None
    except ImageDecodeError as err:
        raise bad_image(str(err)) from None
    except NoFaceFound as err:
        raise no_face(str(err)) from None
    except InvalidBox as err:
        raise invalid_options(str(err)) from None


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    # Uploads stay in memory: Starlette spools multipart files to a temporary file past this
    # size, and the upload limit (enforced before) keeps every file below it.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes + 1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = await asyncio.to_thread(ReconstructionEngine, settings, metrics)
        app.state.engine = engine
        with open(settings.model_path, "rb") as model_file:
            app.state.model_version = hashlib.sha256(model_file.read()).hexdigest()[:12]
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

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

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "X-Request-ID", "Content-Type"],
                           expose_headers=["X-Face-Count", "X-Request-ID", "Retry-After"])
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(AdmissionMiddleware, limit=settings.max_in_flight, retry_after_s=settings.retry_after_s,
                       paths=RECONSTRUCT_PATHS, metrics=metrics)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)

    def engine_of(request: Request) -> ReconstructionEngine:
        return request.app.state.engine

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: models loaded and warmed up",
             response_model=ReadyJSON, responses={503: _problem_doc("still loading or shutting down")})
    async def readyz(request: Request) -> ReadyJSON | JSONResponse:
        engine: ReconstructionEngine | None = getattr(request.app.state, "engine", None)
        if engine is None or not engine.ready:
            return problem_response(request, 503, "not-ready", "Not ready", "models are loading or the service is stopping")
        return ReadyJSON(status="ready", providers=engine.providers)

    @app.get("/v1/info", tags=["operations"], summary="Model, mesh and limits", response_model=InfoJSON)
    async def info(request: Request) -> InfoJSON:
        engine = engine_of(request)
        meta = engine.reconstructor.metadata
        return InfoJSON(
            model_version=f"{meta.training_steps}-steps-{request.app.state.model_version}",
            topology_version=meta.topology_version, trained=meta.trained, vertices=meta.num_vertices,
            triangles=meta.num_faces, input_size=meta.input_size, providers=engine.providers,
            limits={"max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
                    "max_faces": settings.max_faces, "max_batch_images": settings.max_batch_images,
                    "max_in_flight": settings.max_in_flight},
            batching={"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms},
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def reconstruct(
        request: Request,
        image: Annotated[UploadFile, File(description="the photo: JPEG, PNG or WebP (EXIF orientation honoured)")],
        format: Annotated[OutputFormat, Form(description=FORMAT_HELP)] = OutputFormat.glb,
        texture: Annotated[TextureMode, Form(description=TEXTURE_HELP)] = TextureMode.vertex,
        space: Annotated[MeshSpace, Form(description=SPACE_HELP)] = MeshSpace.image,
        faces: Annotated[FaceSelection, Form(description=FACES_HELP)] = FaceSelection.largest,
        include_mesh: Annotated[bool, Form(description="format=json: add vertices and triangles")] = False,
        box: Annotated[str | None, Form(description=BOX_HELP, examples=["120,80,360,350"])] = None,
        _auth: None = Depends(require_api_key),
    ) -> Response:
        engine = engine_of(request)
        face_box = parse_box(box)
        rec = await reconstruct_upload(engine, await image.read(), faces, face_box)
        headers = {"X-Face-Count": str(len(rec.faces))}
        if format is OutputFormat.json:
            body = await engine.run_cpu(reconstruction_json, rec, space, engine.topology, include_mesh)
            return JSONResponse(body.model_dump(mode="json"), headers=headers)
        payload = await engine.run_cpu(
            lambda: mesh_payload(build_meshes(rec, engine.topology, space, texture, engine.uv_map), format))
        headers["Content-Disposition"] = f'attachment; filename="{payload.filename}"'
        return Response(payload.content, media_type=payload.media_type, headers=headers)

    reconstruct_doc = ("Reconstruct the largest face (or every face) of one photo. Binary formats answer with "
                       "the file itself; `X-Face-Count` tells how many faces it holds.")
    app.post("/v1/reconstruct", tags=["reconstruction"], summary="Reconstruct the faces of a photo",
             description=reconstruct_doc, response_class=Response, responses=_MESH_RESPONSES)(reconstruct)
    app.post("/reconstruct", tags=["reconstruction"], summary="Alias of /v1/reconstruct",
             description=reconstruct_doc, response_class=Response, responses=_MESH_RESPONSES,
             operation_id="reconstruct_alias")(reconstruct)

    @app.post("/v1/reconstruct/batch", tags=["reconstruction"], summary="Reconstruct several photos in one request",
              response_class=Response, responses=_BATCH_RESPONSES,
              description=("Every image is processed like /v1/reconstruct (concurrently, sharing network batches). "
                           "One bad image does not fail the others: each item reports its own status and problem."))
    async def reconstruct_batch(
        request: Request,
        images: Annotated[list[UploadFile], File(description="the photos (repeat the field)")],
        format: Annotated[OutputFormat, Form(description=FORMAT_HELP)] = OutputFormat.glb,
        texture: Annotated[TextureMode, Form(description=TEXTURE_HELP)] = TextureMode.vertex,
        space: Annotated[MeshSpace, Form(description=SPACE_HELP)] = MeshSpace.image,
        faces: Annotated[FaceSelection, Form(description=FACES_HELP)] = FaceSelection.largest,
        include_mesh: Annotated[bool, Form(description="format=json: add vertices and triangles")] = False,
        _auth: None = Depends(require_api_key),
    ) -> Response:
        engine = engine_of(request)
        if not images:
            raise invalid_options("send at least one image")
        if len(images) > settings.max_batch_images:
            raise invalid_options(f"{len(images)} images: at most {settings.max_batch_images} per batch")
        contents = [await upload.read() for upload in images]

        async def one(data: bytes) -> ImageReconstruction | ProblemError:
            try:
                return await reconstruct_upload(engine, data, faces, None)
            except ProblemError as err:
                return err

        outcomes = await asyncio.gather(*(one(data) for data in contents))
        items, files = [], {}
        for index, (upload, outcome) in enumerate(zip(images, outcomes)):
            if isinstance(outcome, ProblemError):
                problem = Problem(type=TYPE_PREFIX + outcome.slug, title=outcome.title,
                                  status=outcome.status, detail=outcome.detail)
                items.append(BatchItemJSON(index=index, filename=upload.filename, status=outcome.status,
                                           error=problem.model_dump(exclude_none=True)))
                continue
            result: ReconstructionJSON | None = None
            if format is OutputFormat.json:
                result = await engine.run_cpu(reconstruction_json, outcome, space, engine.topology, include_mesh)
            else:
                stem = f"{index:03d}_{_stem(upload.filename, 'image')}"
                meshes = await engine.run_cpu(build_meshes, outcome, engine.topology, space, texture, engine.uv_map, stem)
                files.update(await engine.run_cpu(mesh_files, meshes, format, stem))
            items.append(BatchItemJSON(index=index, filename=upload.filename, status=200, result=result))
        succeeded = sum(item.status == 200 for item in items)
        summary = BatchJSON(succeeded=succeeded, failed=len(items) - succeeded, items=items)
        if format is OutputFormat.json:
            return JSONResponse(summary.model_dump(mode="json"))
        files["results.json"] = json.dumps(summary.model_dump(mode="json"), indent=1).encode()
        return Response(zip_files(files), media_type=MEDIA_TYPES["zip"],
                        headers={"Content-Disposition": 'attachment; filename="batch.zip"'})

    return app
