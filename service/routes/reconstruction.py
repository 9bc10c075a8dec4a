"""The reconstruction routes: one photo (/v1/reconstruct and its alias /reconstruct) or several
(/v1/reconstruct/batch), each guarded by the API-key check."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response

from model.conventions import Box, FaceSelection
from model.conventions import parse_box as parse_box_text
from model.runtime.image_io import ImageDecodeError, ImageTooLarge, UnsupportedImageFormat
from model.runtime.pipeline import ImageReconstruction, InvalidBox, NoFaceFound
from service.dependencies import EngineDep, OptionsDep, SettingsDep, require_api_key
from service.encoding import build_meshes, mesh_files, mesh_payload, reconstruction_json, zip_files
from service.engine import ReconstructionEngine
from service.problems import (
    TYPE_PREFIX,
    Problem,
    ProblemError,
    bad_image,
    image_too_large,
    invalid_options,
    no_face,
    problem_doc,
    unsupported_media_type,
)
from service.schemas import BOX_HELP, MEDIA_TYPES, BatchItemJSON, BatchJSON, OutputFormat, ReconstructionJSON

_SAFE_STEM = re.compile(r"[^A-Za-z0-9_-]+")

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: problem_doc("unreadable, corrupt or truncated image, or a malformed request body"),
    401: problem_doc("API keys are configured and X-API-Key is missing or wrong"),
    413: problem_doc("upload over the byte limit, or image over the pixel limit"),
    415: problem_doc("the upload is not a JPEG, PNG or WebP image"),
    422: problem_doc("no face found, or invalid options"),
    503: {**problem_doc("too many requests in flight: retry after the Retry-After header's seconds"),
          "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}},
}
_MESH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the mesh file(s), or JSON with format=json",
        "headers": {"X-Face-Count": {"description": "faces reconstructed", "schema": {"type": "integer"}}},
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
_BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a zip with each image's mesh file(s) and results.json, or JSON with format=json",
        "content": {MEDIA_TYPES["zip"]: _BINARY,
                    "application/json": {"schema": {"$ref": "#/components/schemas/BatchJSON"}}},
    },
    **_ERRORS,
}
_RECONSTRUCT_DOC = ("Reconstruct the largest face (or every face) of one photo. Binary formats answer with "
                    "the file itself; `X-Face-Count` tells how many faces it holds.")

router = APIRouter(tags=["reconstruction"], dependencies=[Depends(require_api_key)])


def parse_box(text: str | None) -> Box | None:
    """The ``box`` form field: None when blank, else the box, or an invalid-options problem."""
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


async def _reconstruct_or_problem(engine: ReconstructionEngine, data: bytes,
                                  faces: FaceSelection) -> ImageReconstruction | ProblemError:
    try:
        return await reconstruct_upload(engine, data, faces, None)
    except ProblemError as err:
        return err


@router.post("/reconstruct", summary="Alias of /v1/reconstruct", description=_RECONSTRUCT_DOC,
             response_class=Response, responses=_MESH_RESPONSES, operation_id="reconstruct_alias")
@router.post("/v1/reconstruct", summary="Reconstruct the faces of a photo", description=_RECONSTRUCT_DOC,
             response_class=Response, responses=_MESH_RESPONSES)
async def reconstruct(
    engine: EngineDep,
    image: Annotated[UploadFile, File(description="the photo: JPEG, PNG or WebP (EXIF orientation honoured)")],
    options: OptionsDep,
    box: Annotated[str | None, Form(description=BOX_HELP, examples=["120,80,360,350"])] = None,
) -> Response:
    face_box = parse_box(box)
    rec = await reconstruct_upload(engine, await image.read(), options.faces, face_box)
    headers = {"X-Face-Count": str(len(rec.faces))}
    if options.format is OutputFormat.json:
        body = await engine.run_cpu(reconstruction_json, rec, options.space, engine.topology, options.include_mesh)
        return JSONResponse(body.model_dump(mode="json"), headers=headers)
    payload = await engine.run_cpu(lambda: mesh_payload(
        build_meshes(rec, engine.topology, options.space, options.texture, engine.uv_map), options.format))
    headers["Content-Disposition"] = f'attachment; filename="{payload.filename}"'
    return Response(payload.content, media_type=payload.media_type, headers=headers)


@router.post("/v1/reconstruct/batch", summary="Reconstruct several photos in one request",
             response_class=Response, responses=_BATCH_RESPONSES,
             description=("Every image is processed like /v1/reconstruct (concurrently, sharing network batches). "
                          "One bad image does not fail the others: each item reports its own status and problem."))
async def reconstruct_batch(
    engine: EngineDep,
    settings: SettingsDep,
    images: Annotated[list[UploadFile], File(description="the photos (repeat the field)")],
    options: OptionsDep,
) -> Response:
    if not images:
        raise invalid_options("send at least one image")
    if len(images) > settings.max_batch_images:
        raise invalid_options(f"{len(images)} images: at most {settings.max_batch_images} per batch")
    contents = [await upload.read() for upload in images]
    outcomes = await asyncio.gather(*(_reconstruct_or_problem(engine, data, options.faces) for data in contents))
    items, files = [], {}
    for index, (upload, outcome) in enumerate(zip(images, outcomes)):
        if isinstance(outcome, ProblemError):
            problem = Problem(type=TYPE_PREFIX + outcome.slug, title=outcome.title,
                              status=outcome.status, detail=outcome.detail)
            items.append(BatchItemJSON(index=index, filename=upload.filename, status=outcome.status,
                                       error=problem.model_dump(exclude_none=True)))
            continue
        result: ReconstructionJSON | None = None
        if options.format is OutputFormat.json:
            result = await engine.run_cpu(reconstruction_json, outcome, options.space, engine.topology,
                                          options.include_mesh)
        else:
            stem = f"{index:03d}_{_stem(upload.filename, 'image')}"
            meshes = await engine.run_cpu(build_meshes, outcome, engine.topology, options.space, options.texture,
                                          engine.uv_map, stem)
            files.update(await engine.run_cpu(mesh_files, meshes, options.format, stem))
        items.append(BatchItemJSON(index=index, filename=upload.filename, status=200, result=result))
    succeeded = sum(item.status == 200 for item in items)
    summary = BatchJSON(succeeded=succeeded, failed=len(items) - succeeded, items=items)
    if options.format is OutputFormat.json:
        return JSONResponse(summary.model_dump(mode="json"))
    files["results.json"] = json.dumps(summary.model_dump(mode="json"), indent=1).encode()
    return Response(zip_files(files), media_type=MEDIA_TYPES["zip"],
                    headers={"Content-Disposition": 'attachment; filename="batch.zip"'})
