"""The reconstruction routes: one photo (/v1/reconstruct and its alias /reconstruct) or several
(/v1/reconstruct/batch), each guarded by the API-key check."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response

from model.conventions import Box, FaceSelection
from model.conventions import parse_box as parse_box_text
from model.runtime.image_io import ImageDecodeError, ImageHeader, ImageTooLarge, UnsupportedImageFormat
from model.runtime.pipeline import ImageReconstruction, InvalidBox, NoFaceFound
from service.dependencies import (
    EngineDep,
    OptionsDep,
    OutputOptions,
    ReconstructionOptions,
    SettingsDep,
    form_fields,
    invalid_field,
    require_api_key,
)
from service.encoding import (
    Colouring,
    Payload,
    build_meshes,
    mesh_files,
    mesh_payload,
    reconstruction_json,
    zip_files,
)
from service.engine import ReconstructionEngine, WorkBudgetFull, WorkTooLarge
from service.problems import (
    TYPE_PREFIX,
    Problem,
    ProblemError,
    bad_image,
    image_too_large,
    invalid_options,
    no_face,
    overloaded,
    problem_doc,
    unsupported_media_type,
)
from service.schemas import (
    BATCH_EXAMPLE,
    BOX_HELP,
    MEDIA_TYPES,
    RECONSTRUCTION_EXAMPLE,
    BatchItemJSON,
    BatchJSON,
    OutputFormat,
    ReconstructionJSON,
)

T = TypeVar("T")

_SAFE_STEM = re.compile(r"[^A-Za-z0-9_-]+")

BINARY = {"schema": {"type": "string", "format": "binary"}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: problem_doc("unreadable, corrupt or truncated image, or a malformed request body",
                     (400, "bad-image", "the image file is empty")),
    401: problem_doc("API keys are configured and X-API-Key is missing or wrong",
                     (401, "unauthenticated", "a valid X-API-Key header is required")),
    408: problem_doc("the request body arrived too slowly",
                     (408, "request-timeout", "the request body arrived slower than 16384 bytes/s")),
    413: problem_doc("upload over the byte limit, image over the pixel limit, or a request needing more memory "
                     "than the server's whole budget (image-too-large)",
                     (413, "upload-too-large", "the request body is larger than the limit of 15728640 bytes"),
                     (413, "image-too-large", "image is 12000x9000, more than 40000000 pixels")),
    415: problem_doc("the upload is not a JPEG, PNG or WebP image",
                     (415, "unsupported-media-type", "not an image in an accepted format (JPEG, PNG, WebP)")),
    422: problem_doc("no face found, or invalid options: a bad value, a form field that is unknown or sent twice, "
                     "or a box outside the rule",
                     (422, "no-face", "no face was detected in the image"),
                     (422, "invalid-options", "format: Input should be 'glb', 'obj', 'ply' or 'json'")),
    503: {**problem_doc("too many requests in flight, or not enough of the memory budget free now: retry after "
                        "the Retry-After header's seconds",
                        (503, "overloaded", "too many requests in flight; retry after 1 s")),
          "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}},
}
MESH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the mesh file(s), or JSON with format=json",
        "model": ReconstructionJSON,  # the schema of the application/json answer
        "headers": {"X-Face-Count": {"description": "faces reconstructed", "schema": {"type": "integer"}},
                    "X-Faces-Dropped": {"description": "with faces=all: faces detected beyond the server's "
                                        "max_faces and not reconstructed (absent when none)",
                                        "schema": {"type": "integer"}}},
        "content": {
            MEDIA_TYPES["glb"]: BINARY,
            MEDIA_TYPES["obj"]: BINARY,
            MEDIA_TYPES["ply"]: BINARY,
            MEDIA_TYPES["zip"]: BINARY,
            "application/json": {"example": RECONSTRUCTION_EXAMPLE},
        },
    },
    **ERRORS,
}
_BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a zip with each image's mesh file(s) and results.json, or JSON with format=json",
        "model": BatchJSON,
        "content": {MEDIA_TYPES["zip"]: BINARY, "application/json": {"example": BATCH_EXAMPLE}},
    },
    **ERRORS,
}


def form_examples(image_field: str, images: int = 1, **more: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """The request examples (an ``openapi_extra``) of a reconstruction route's multipart form: ``more`` adds
    examples (name: (summary, options))."""
    photo = "(the bytes of a JPEG, PNG or WebP photo)"
    image: str | list[str] = [photo] * images if images > 1 else photo
    examples = {
        "glb": ("the largest face as binary glTF, coloured from the photo", {"format": "glb", "texture": "vertex"}),
        "json": ("every face's landmarks and head pose as JSON", {"format": "json", "faces": "all"}),
        "obj": ("the face without pose or expression, as OBJ with a baked UV texture (a zip)",
                {"format": "obj", "texture": "uv", "space": "neutral"}),
        **more,
    }
    return {"requestBody": {"content": {"multipart/form-data": {"examples": {
        name: {"summary": summary, "value": {image_field: image, **options}}
        for name, (summary, options) in examples.items()}}}}}


_RECONSTRUCT_DOC = ("Reconstruct the largest face (or every face) of one photo. Binary formats answer with "
                    "the file itself; `X-Face-Count` tells how many faces it holds, `X-Faces-Dropped` how many "
                    "more were found than the server reconstructs.")
_SINGLE_EXAMPLES = form_examples("image", box=("the face in a given box (no detection) as JSON",
                                                {"format": "json", "box": "212,140,388,331"}))
_SINGLE_FIELDS = form_fields(("image", "box", *ReconstructionOptions.field_names()))
_BATCH_FIELDS = form_fields(("images", *ReconstructionOptions.field_names()), repeatable=("images",))

router = APIRouter(tags=["reconstruction"], dependencies=[Depends(require_api_key)])


def parse_box(text: str | None) -> Box | None:
    """The ``box`` form field: None when blank, else the box, or an invalid-options problem naming it."""
    if text is None or not text.strip():
        return None
    try:
        return parse_box_text(text)
    except ValueError as err:
        raise invalid_field("box", str(err)) from None


def header_problem(err: ImageDecodeError) -> ProblemError:
    """The problem for an image that could not be read: 415 not an accepted format, 413 too many
    pixels, else 400."""
    if isinstance(err, UnsupportedImageFormat):
        return unsupported_media_type(str(err))
    if isinstance(err, ImageTooLarge):
        return image_too_large(str(err))
    return bad_image(str(err))


def admission_problem(engine: ReconstructionEngine, err: WorkTooLarge | WorkBudgetFull) -> ProblemError:
    """413 for a request that could never fit the engine's memory budget, 503 for one that does not now."""
    if isinstance(err, WorkTooLarge):
        return image_too_large(str(err))
    return overloaded(engine.settings.retry_after_s)


@contextmanager
def admitted(engine: ReconstructionEngine, cost: int) -> Iterator[None]:
    """Hold ``cost`` bytes of the engine's memory budget (:func:`admission_problem` when refused)."""
    try:
        with engine.admit(cost):
            yield
    except (WorkTooLarge, WorkBudgetFull) as err:
        raise admission_problem(engine, err) from None


def safe_stem(filename: str | None, fallback: str) -> str:
    stem = _SAFE_STEM.sub("_", (filename or "").rsplit("/", 1)[-1].rsplit(".", 1)[0]).strip("_")
    return stem[:48] or fallback


async def reconstruct_upload(engine: ReconstructionEngine, data: bytes, faces: FaceSelection, box: Box | None,
                             finish: Callable[[ImageReconstruction], T], *, photo_colours: bool = True,
                             cost: Callable[[ImageHeader], int] | None = None) -> T:
    """engine.reconstruct_then with its errors turned into problems."""
    if not data:
        raise bad_image("the image file is empty")
    try:
        return await engine.reconstruct_then(data, finish, faces=faces, box=box, photo_colours=photo_colours,
                                             cost=cost)
    except (WorkTooLarge, WorkBudgetFull) as err:
        raise admission_problem(engine, err) from None
    except ImageDecodeError as err:
        raise header_problem(err) from None
    except NoFaceFound as err:
        raise no_face(str(err)) from None
    except InvalidBox as err:
        raise invalid_field("box", str(err)) from None


@router.post("/reconstruct", summary="Alias of /v1/reconstruct", description=_RECONSTRUCT_DOC,
             response_class=Response, responses=MESH_RESPONSES, operation_id="reconstruct_alias",
             dependencies=[Depends(_SINGLE_FIELDS)], openapi_extra=_SINGLE_EXAMPLES)
@router.post("/v1/reconstruct", summary="Reconstruct the faces of a photo", description=_RECONSTRUCT_DOC,
             response_class=Response, responses=MESH_RESPONSES, dependencies=[Depends(_SINGLE_FIELDS)],
             openapi_extra=_SINGLE_EXAMPLES)
async def reconstruct(
    engine: EngineDep,
    image: Annotated[UploadFile, File(description="the photo: JPEG, PNG or WebP (EXIF orientation honoured)")],
    options: OptionsDep,
    box: Annotated[str | None, Form(description=BOX_HELP, examples=["120,80,360,350"])] = None,
) -> Response:
    face_box = parse_box(box)
    data = await image.read()
    upload_bytes, json_mesh = len(data), options.format is OutputFormat.json and options.include_mesh
    # admitted on the thread that then decodes the upload, by what its header says it will cost; the
    # answer is encoded on the thread that finishes the reconstruction (no hops back and forth); the
    # photo's pixels are not kept past it
    faces, dropped, body = await reconstruct_upload(
        engine, data, options.faces, face_box,
        lambda rec: (len(rec.faces), rec.faces_dropped, encode_answer(engine, rec, options)),
        photo_colours=options.photo_colours,
        cost=lambda header: engine.request_cost([header], upload_bytes, faces=options.faces,
                                                box=face_box is not None, json_mesh=json_mesh))
    del data
    return answer_response(faces, dropped, body)


Answer = Payload | dict[str, Any]  # the mesh file(s), or the JSON answer as plain data


def encode_answer(engine: ReconstructionEngine, rec: ImageReconstruction, options: OutputOptions,
                  colourings: Sequence[Colouring | None] | None = None) -> Answer:
    """The answer for the faces of one photo, encoded (CPU work): the JSON answer, or the mesh file(s)
    coloured from the photo or with ``colourings`` (see :func:`service.encoding.build_meshes`)."""
    if options.format is OutputFormat.json:
        return reconstruction_json(rec, options.space, engine.topology, options.include_mesh,
                                   model_version=engine.model_version,
                                   landmark_calibration=engine.landmark_calibration).model_dump(mode="json")
    meshes = build_meshes(rec, engine.topology, options.space, options.texture, engine.uv_map, colourings=colourings)
    return mesh_payload(meshes, options.format)


def answer_response(faces: int, dropped: int, answer: Answer) -> Response:
    """The response for an encoded answer of ``faces`` faces, with X-Face-Count (and X-Faces-Dropped when
    ``dropped`` faces were dropped)."""
    headers = {"X-Face-Count": str(faces)}
    if dropped:
        headers["X-Faces-Dropped"] = str(dropped)
    if not isinstance(answer, Payload):
        return JSONResponse(answer, headers=headers)
    headers["Content-Disposition"] = f'attachment; filename="{answer.filename}"'
    return Response(answer.content, media_type=answer.media_type, headers=headers)


async def image_answer(engine: ReconstructionEngine, rec: ImageReconstruction, options: OutputOptions,
                       colourings: Sequence[Colouring | None] | None = None) -> Response:
    """The answer for the faces of one photo (:func:`encode_answer` on the thread pool, :func:`answer_response`)."""
    return answer_response(len(rec.faces), rec.faces_dropped,
                           await engine.run_cpu(encode_answer, engine, rec, options, colourings))


async def _batch_item(engine: ReconstructionEngine, options: ReconstructionOptions, index: int,
                      filename: str | None, data: bytes, header: ImageHeader | ImageDecodeError,
                      slots: asyncio.Semaphore) -> tuple[BatchItemJSON, dict[str, bytes]]:
    """One image of a batch, reconstructed and encoded at once (so its pixels are freed before the
    batch ends), while holding one of the batch's ``slots``; a problem becomes the item's error."""
    try:
        if not data:
            raise bad_image("the image file is empty")
        if not isinstance(header, ImageHeader):
            raise header_problem(header)
        async with slots:
            rec = await reconstruct_upload(engine, data, options.faces, None, lambda rec: rec)
            if options.format is OutputFormat.json:
                result = await engine.run_cpu(partial(reconstruction_json, rec, options.space, engine.topology,
                                                      options.include_mesh, model_version=engine.model_version,
                                                      landmark_calibration=engine.landmark_calibration))
                return BatchItemJSON(index=index, filename=filename, status=200, result=result,
                                     faces_dropped=rec.faces_dropped), {}
            stem = f"{index:03d}_{safe_stem(filename, 'image')}"
            meshes = await engine.run_cpu(build_meshes, rec, engine.topology, options.space, options.texture,
                                          engine.uv_map, stem)
            files = await engine.run_cpu(mesh_files, meshes, options.format, stem)
            return BatchItemJSON(index=index, filename=filename, status=200, faces_dropped=rec.faces_dropped), files
    except ProblemError as err:
        problem = Problem(type=TYPE_PREFIX + err.slug, title=err.title, status=err.status, detail=err.detail)
        return BatchItemJSON(index=index, filename=filename, status=err.status,
                             error=problem.model_dump(exclude_none=True)), {}


@router.post("/v1/reconstruct/batch", summary="Reconstruct several photos in one request",
             response_class=Response, responses=_BATCH_RESPONSES, dependencies=[Depends(_BATCH_FIELDS)],
             openapi_extra=form_examples("images", images=2),
             description=("Every image is processed like /v1/reconstruct (several at once, sharing network "
                          "batches). One bad image does not fail the others: each item reports its own status and "
                          "problem. The batch is admitted as a whole, by the memory its images will need."))
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
    headers = await engine.run_cpu(engine.read_headers, [data or b"" for data in contents])
    json_mesh = options.format is OutputFormat.json and options.include_mesh
    parallel, cost = engine.batch_plan(headers, sum(len(data) for data in contents), faces=options.faces,
                                       json_mesh=json_mesh)
    with admitted(engine, cost):
        slots = asyncio.Semaphore(parallel)
        outcomes = await asyncio.gather(*(
            _batch_item(engine, options, index, upload.filename, data, header, slots)
            for index, (upload, data, header) in enumerate(zip(images, contents, headers))))
        del contents
        items = [item for item, _ in outcomes]
        files = {name: data for _, item_files in outcomes for name, data in item_files.items()}
        succeeded = sum(item.status == 200 for item in items)
        summary = BatchJSON(succeeded=succeeded, failed=len(items) - succeeded, model_version=engine.model_version,
                            landmark_calibration=engine.landmark_calibration, items=items)
        if options.format is OutputFormat.json:
            return JSONResponse(summary.model_dump(mode="json"))
        files["results.json"] = json.dumps(summary.model_dump(mode="json"), indent=1).encode()
        return Response(zip_files(files), media_type=MEDIA_TYPES["zip"],
                        headers={"Content-Disposition": 'attachment; filename="batch.zip"'})
