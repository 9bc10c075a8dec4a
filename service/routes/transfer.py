"""Expression transfer (/v1/transfer): the face of one photo with the expression of another photo, or of
an expression code a JSON answer gave before."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import Response

from model.conventions import FaceSelection
from model.runtime.image_io import ImageDecodeError, ImageHeader
from model.runtime.pipeline import ImageReconstruction, NoFaceFound
from service.dependencies import EngineDep, OutputOptions, OutputOptionsDep, form_fields, invalid_field, require_api_key
from service.encoding import face_colouring
from service.engine import ReconstructionEngine
from service.problems import ProblemError, bad_image, no_face
from service.routes.reconstruction import (
    MESH_RESPONSES,
    admitted,
    form_examples,
    header_problem,
    image_answer,
    reconstruct_upload,
)
from service.schemas import EXPRESSION_CODE_HELP, OutputFormat, TextureMode

MAX_CODE_CHARS = 8192  # the expression_code field's text: 64 numbers of up to 120 characters each fit


class PoseSource(str, Enum):
    identity = "identity"
    expression = "expression"


PHOTOS = ("identity", "expression")
_FIELDS = form_fields(("identity", "expression", "expression_code", "pose", *OutputOptions.field_names()))
_DOC = ("The face of the `identity` photo (its largest face: its shape, its albedo and its lighting, textured from "
        "that photo) with the expression of the `expression` photo's largest face, or of `expression_code` (a "
        "face's `expression_code` from an earlier JSON answer of the same model_version): exactly one of the two. "
        "`pose`: keep the identity photo's head pose, or take the expression photo's. The answer is that of "
        "/v1/reconstruct for the identity photo, with the one transferred face: `space=neutral` is the identity "
        "photo's neutral face, unchanged by the transfer. A photo without a face is a 422 `no-face` whose detail "
        "names it.")
_EXAMPLES = form_examples("identity", expression=("the expression of a second photo, as GLB",
                                                  {"expression": "(the bytes of a second photo)", "format": "glb"}),
                          code=("a stored expression code, as JSON with the mesh",
                                {"expression_code": "[0.41, -1.2, 0.03, ...]", "format": "json",
                                 "include_mesh": True}),
                          pose=("the expression photo's expression and head pose, as OBJ with a UV texture",
                                {"expression": "(the bytes of a second photo)", "pose": "expression", "format": "obj",
                                 "texture": "uv"}))

_CODE_FIELD_HELP = "instead of an expression photo: a JSON array of numbers, " + EXPRESSION_CODE_HELP

router = APIRouter(tags=["reconstruction"], dependencies=[Depends(require_api_key)])


def parse_expression_code(engine: ReconstructionEngine, text: str) -> np.ndarray:
    """The ``expression_code`` form field: a JSON array of the model's number of finite numbers
    (64 for the shipped model), else an invalid-options problem naming it."""
    if len(text) > MAX_CODE_CHARS:
        raise invalid_field("expression_code", f"{len(text)} characters: at most {MAX_CODE_CHARS}")

    def refuse_constant(name: str) -> float:
        raise ValueError(f"{name} is not a finite number")

    try:
        values = json.loads(text, parse_constant=refuse_constant)
    except ValueError as err:
        raise invalid_field("expression_code", f"not a JSON array of numbers: {err}") from None
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise invalid_field("expression_code", "not a JSON array of numbers")
    try:
        return engine.pipeline.check_code("expression", np.asarray(values, dtype=np.float64))  # 1e999: inf
    except ValueError as err:
        raise invalid_field("expression_code", str(err)) from None


async def transfer_uploads(engine: ReconstructionEngine, identity: bytes, expression: bytes | None,
                           code: np.ndarray | None, pose: PoseSource) -> ImageReconstruction:
    """engine.transfer with its errors turned into problems (a photo without a face: no-face naming it)."""
    try:
        return await engine.transfer(identity, expression, expression_code=code, pose_from=pose.value)
    except NoFaceFound as err:
        raise no_face(str(err)) from None
    except ImageDecodeError as err:
        raise header_problem(err) from None


@router.post("/v1/transfer", summary="Put the expression of one photo (or code) on the face of another",
             description=_DOC, response_class=Response, responses=MESH_RESPONSES, dependencies=[Depends(_FIELDS)],
             openapi_extra=_EXAMPLES)
async def transfer(
    engine: EngineDep,
    identity: Annotated[UploadFile, File(description="the photo whose face (shape, albedo, lighting, texture) is "
                                                     "kept: JPEG, PNG or WebP")],
    options: OutputOptionsDep,
    expression: Annotated[UploadFile | None, File(description="the photo whose expression is transferred "
                                                              "(or send expression_code)")] = None,
    expression_code: Annotated[str | None, Form(description=_CODE_FIELD_HELP,
                                                examples=["[0.41, -1.2, 0.03]"])] = None,
    pose: Annotated[PoseSource, Form(description="identity: the identity photo's head pose; expression: the "
                                                 "expression photo's (needs the expression photo)")
                    ] = PoseSource.identity,
) -> Response:
    if (expression is None) == (expression_code is None):
        raise invalid_field("expression", "send exactly one of expression (a photo) and expression_code")
    code = None if expression_code is None else parse_expression_code(engine, expression_code)
    if code is not None and pose is PoseSource.expression:
        raise invalid_field("pose", "pose=expression needs the expression photo, not expression_code")
    uploads = [await identity.read()] + ([] if expression is None else [await expression.read()])
    for name, data in zip(PHOTOS, uploads):
        if not data:
            raise bad_image(f"the {name} photo is empty")
    headers = await engine.run_cpu(engine.read_headers, uploads)
    for name, header in zip(PHOTOS, headers):
        if not isinstance(header, ImageHeader):
            problem = header_problem(header)
            raise ProblemError(problem.status, problem.slug, problem.title, f"the {name} photo: {problem.detail}")
    json_mesh = options.format is OutputFormat.json and options.include_mesh
    cost = engine.several_images_cost(headers, sum(len(data) for data in uploads), json_mesh=json_mesh)
    with admitted(engine, cost):
        rec = await transfer_uploads(engine, uploads[0], uploads[1] if len(uploads) > 1 else None, code, pose)
        colourings = None
        if options.format is not OutputFormat.json and options.texture in (TextureMode.vertex, TextureMode.uv):
            # the identity photo's colours where it saw its face as it is: the transferred face's own
            # expression and pose project elsewhere in that photo (open lips onto the chin)
            colourings = [await reconstruct_upload(
                engine, uploads[0], FaceSelection.largest, rec.faces[0].box,
                lambda own: face_colouring(own.image, own.faces[0], engine.topology, options.texture, engine.uv_map))]
        del uploads
        return await image_answer(engine, rec, options, colourings)

