"""One person from several photos (/v1/reconstruct/person): one identity fused from every photo that shows
that person, each photo's expression and pose on it, and colours merged from where each photo saw the face
best."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import JSONResponse, Response

from model.conventions import MeshSpace
from model.runtime.image_io import ImageDecodeError
from model.runtime.pipeline import NoFaceFound, PersonPhoto
from service.dependencies import EngineDep, OutputOptions, OutputOptionsDep, form_fields, invalid_field, require_api_key
from service.encoding import mesh_files, mesh_payload, person_json, person_meshes, zip_files
from service.engine import ReconstructionEngine
from service.problems import bad_image, no_face
from service.routes.reconstruction import BINARY, ERRORS, admitted, form_examples, header_problem, safe_stem
from service.schemas import (
    MAX_PERSON_PHOTOS,
    MEDIA_TYPES,
    MIN_PERSON_PHOTOS,
    PERSON_EXAMPLE,
    OutputFormat,
    PersonJSON,
)

_FIELDS = form_fields(("images", *OutputOptions.field_names()), repeatable=("images",))
_DOC = (f"{MIN_PERSON_PHOTOS} to {MAX_PERSON_PHOTOS} photos of one person (the largest face of each). The "
        "identity (the neutral face) is fused from the photos' identity codes, each weighted by how well its "
        "photo showed the face; a photo without a face, or whose face is another person's (its identity code "
        "disagrees with the others'), is left out and said why. Each used photo keeps its own expression and "
        "pose on the fused identity. Colours (texture=vertex or uv) are merged from every used photo, each "
        "part from the photos that saw it best (visible, and facing the camera squarely); texture=albedo "
        "averages the photos' albedos. `format=json`: which photos were used, their weights and each used "
        "photo's face. A mesh format with `space=neutral`: the one fused face (`person.glb` ...); with "
        "`space=image` or `canonical`: a zip of one mesh per used photo and `person.json`. `X-Photos-Used` and "
        "`X-Photos-Rejected` count the photos.")
_COUNT_HEADERS = {"X-Photos-Used": {"description": "photos whose face went into the identity",
                                    "schema": {"type": "integer"}},
                  "X-Photos-Rejected": {"description": "photos left out (no face, or another person)",
                                        "schema": {"type": "integer"}},
                  "X-Face-Count": {"description": "mesh formats: the faces in the answer (1 with space=neutral, "
                                                  "else one per used photo)", "schema": {"type": "integer"}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the fused face (space=neutral), a zip of one mesh per used photo, or JSON with format=json",
        "model": PersonJSON,
        "headers": _COUNT_HEADERS,
        "content": {MEDIA_TYPES["glb"]: BINARY, MEDIA_TYPES["obj"]: BINARY, MEDIA_TYPES["ply"]: BINARY,
                    MEDIA_TYPES["zip"]: BINARY, "application/json": {"example": PERSON_EXAMPLE}},
    },
    **ERRORS,
}

router = APIRouter(tags=["reconstruction"], dependencies=[Depends(require_api_key)])


def check_photo_count(count: int) -> None:
    """A 422 invalid-options naming ``images`` unless MIN_PERSON_PHOTOS <= count <= MAX_PERSON_PHOTOS."""
    if not MIN_PERSON_PHOTOS <= count <= MAX_PERSON_PHOTOS:
        raise invalid_field("images", f"{count} photo(s): send {MIN_PERSON_PHOTOS} to {MAX_PERSON_PHOTOS} photos "
                                      "of the person (repeat the field)")


@router.post("/v1/reconstruct/person", summary="One face from several photos of one person", description=_DOC,
             response_class=Response, responses=_RESPONSES, dependencies=[Depends(_FIELDS)],
             openapi_extra=form_examples("images", images=3))
async def reconstruct_person(
    engine: EngineDep,
    images: Annotated[list[UploadFile], File(description=f"{MIN_PERSON_PHOTOS} to {MAX_PERSON_PHOTOS} photos of "
                                                         "one person (repeat the field)")],
    options: OutputOptionsDep,
) -> Response:
    check_photo_count(len(images))
    contents = [await upload.read() for upload in images]
    headers = await engine.run_cpu(engine.read_headers, [data or b"" for data in contents])
    unreadable = {index: header_problem(header).detail if isinstance(header, ImageDecodeError) else "the file is empty"
                  for index, (data, header) in enumerate(zip(contents, headers))
                  if not data or isinstance(header, ImageDecodeError)}
    readable = [index for index in range(len(images)) if index not in unreadable]
    if not readable:
        raise bad_image("none of the photos is a usable image: " + "; ".join(
            f"{images[index].filename or index}: {reason}" for index, reason in unreadable.items()))
    json_mesh = options.format is OutputFormat.json and options.include_mesh
    cost = engine.several_images_cost([headers[index] for index in readable],
                                      sum(len(contents[index]) for index in readable), json_mesh=json_mesh)
    with admitted(engine, cost):
        try:
            person = await engine.reconstruct_person([contents[index] for index in readable])
        except NoFaceFound:
            raise no_face("no face was detected in any of the photos") from None
        except ImageDecodeError as err:  # the header was fine, the pixels were not
            raise header_problem(err) from None
        del contents
        outcomes: dict[int, PersonPhoto | str] = {**unreadable, **dict(zip(readable, person.photos))}
        photos = [(upload.filename, outcomes[index]) for index, upload in enumerate(images)]
        return await _answer(engine, options, photos)


async def _answer(engine: ReconstructionEngine, options: OutputOptions,
                  photos: list[tuple[str | None, PersonPhoto | str]]) -> Response:
    """The JSON answer (each used photo's face in it), or the meshes with the merged colours (and the JSON
    answer without the faces, in a zip)."""
    json_answer = options.format is OutputFormat.json
    summary = await engine.run_cpu(partial(
        person_json, photos, options.space, engine.topology, options.include_mesh, model_version=engine.model_version,
        landmark_calibration=engine.landmark_calibration, results=json_answer))
    headers = {"X-Photos-Used": str(summary.photos_used), "X-Photos-Rejected": str(len(summary.rejected))}
    if json_answer:
        return JSONResponse(summary.model_dump(mode="json"), headers=headers)
    used = [(f"{index:03d}_{safe_stem(filename, 'photo')}", outcome.reconstruction, outcome.weight)
            for index, (filename, outcome) in enumerate(photos)
            if isinstance(outcome, PersonPhoto) and outcome.accepted]
    meshes = await engine.run_cpu(person_meshes, used, engine.topology, options.space, options.texture,
                                  engine.uv_map)
    headers["X-Face-Count"] = str(len(meshes))
    if options.space is MeshSpace.neutral:  # the one fused face
        payload = await engine.run_cpu(mesh_payload, meshes, options.format, "person")
        headers["Content-Disposition"] = f'attachment; filename="{payload.filename}"'
        return Response(payload.content, media_type=payload.media_type, headers=headers)
    files: dict[str, bytes] = {}
    for mesh in meshes:
        files.update(await engine.run_cpu(mesh_files, [mesh], options.format, mesh.name))
    files["person.json"] = json.dumps(summary.model_dump(mode="json"), indent=1).encode()
    headers["Content-Disposition"] = 'attachment; filename="person.zip"'
    return Response(zip_files(files), media_type=MEDIA_TYPES["zip"], headers=headers)
