"""Request options and JSON response bodies of the API (they define the OpenAPI schema)."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field

from model.conventions import MeshSpace


class OutputFormat(str, Enum):
    glb = "glb"
    obj = "obj"
    ply = "ply"
    json = "json"


class TextureMode(str, Enum):
    none = "none"
    vertex = "vertex"
    uv = "uv"
    albedo = "albedo"


MEDIA_TYPES = {
    "glb": "model/gltf-binary",
    "obj": "model/obj",
    "ply": "model/ply",
    "zip": "application/zip",
    "json": "application/json",
}

FORMAT_HELP = ("glb: binary glTF 2.0 (one node per face); obj: Wavefront OBJ (a zip when there are "
               "several files: MTL + PNG texture, or several faces); ply: binary PLY (a zip for several "
               "faces); json: landmarks and pose (and the mesh with include_mesh=true)")
TEXTURE_HELP = ("none; vertex: colours sampled from the photo per vertex; uv: a UV texture baked from the photo; "
                "albedo: the model's albedo (the skin's own colour, the photo's lighting removed: see each face's "
                "lighting in the JSON answer) as a UV texture")
SPACE_HELP = ("image: posed as in the photo (metres, origin at the photo centre, +Y up, +Z toward the "
              "viewer: an orthographic view down -Z lines up with the photo); canonical: frontal, pose "
              "removed; neutral: frontal, expression removed too (identity only)")
FACES_HELP = "largest: the largest detected face; all: every detected face (up to the server's limit)"
INCLUDE_MESH_HELP = "format=json: add vertices and triangles"
BOX_HELP = ("face box 'x1,y1,x2,y2' in pixels of the upright photo: skips detection and reconstructs "
            "that face (the box of its 68 landmarks, or a detector's face box). Four finite numbers, at least 8 "
            "pixels wide and high, at most 4 times as wide as high (or high as wide), overlapping the photo and "
            "within it widened by its own width (height) on each side: -W <= x1 < x2 <= 2W, -H <= y1 < y2 <= 2H")


EXPRESSION_CODE_SIZE = 64
LIGHTING_HELP = (
    "(9, 3) the photo's lighting as second-order spherical-harmonics irradiance coefficients, one column per "
    "colour channel (R, G, B): the model renders a vertex's colour (photo values in [0, 1]) as albedo x (b(n) @ "
    "lighting), n its unit normal in the photo's camera frame (x right in the photo, y up, z toward the camera), "
    "b(n) = [1, c1 y, c1 z, c1 x, c2 x y, c2 y z, c2 / (2 sqrt 3) (3 z^2 - 1), c2 x z, c2 / 2 (x^2 - y^2)] with "
    "c1 = 2 sqrt(3) / 3 and c2 = sqrt(15) / 4 (the Lambertian constants folded in: lighting [1, 0, ...] "
    "leaves the albedo as it is; model/nn/shading.py)")
EXPRESSION_CODE_HELP = (
    f"the face's expression code ({EXPRESSION_CODE_SIZE} numbers for the shipped model): the model's own "
    "latent, not a standard basis (no blendshape or FACS meaning per number) and valid only with the model "
    "that made it (model_version); send it back as expression_code to /v1/transfer to put this expression "
    "on another face")


class FaceJSON(BaseModel):
    """One reconstructed face. Pixel coordinates: x right, y down, origin at the photo's top left."""

    box: list[float] = Field(description="x1, y1, x2, y2 in pixels", min_length=4, max_length=4,
                             examples=[[212.0, 140.5, 388.2, 330.9]])
    score: float | None = Field(description="detection score in [0, 1]; null when the box was given")
    yaw: float = Field(description="degrees, positive: the subject turns to their left")
    pitch: float = Field(description="degrees, positive: the subject looks up")
    roll: float = Field(description="degrees, positive: the head tilts to the subject's left")
    landmarks_2d: list[list[float]] = Field(description="(68, 2) iBUG 68-point landmarks, pixels")
    landmarks_3d: list[list[float]] = Field(description="(68, 3) x, y in pixels and depth in pixels (larger: nearer)")
    metres_per_pixel: float = Field(description="size of one photo pixel on the face: image-space vertices are "
                                                "(x - width/2, height/2 - y, depth) in pixels times this")
    lighting: list[list[float]] = Field(description=LIGHTING_HELP, min_length=9, max_length=9)
    expression_code: list[float] = Field(description=EXPRESSION_CODE_HELP)
    vertices: list[list[float]] | None = Field(default=None, description="(V, 3) mesh vertices in metres in the "
                                                                         "requested space (include_mesh=true)")
    triangles: list[list[int]] | None = Field(default=None, description="(F, 3) vertex indices, counter-clockwise "
                                                                       "seen from outside (include_mesh=true)")
    albedo: list[list[float]] | None = Field(default=None, description="(V, 3) the model's albedo per vertex, RGB "
                                                                     "in [0, 1], without the photo's lighting "
                                                                     "(include_mesh=true)")


MODEL_VERSION_HELP = ("the reconstruction model that answered: its training steps and the first 12 hex digits of "
                      "its file's SHA-256 (also the X-Model-Version header of every answer)")
LANDMARK_CALIBRATION_HELP = ("what the model's 68 landmark positions on the mesh were calibrated on (the ONNX "
                             "metadata facerecon.landmark_calibration); 'none' when not calibrated")


class ReconstructionJSON(BaseModel):
    width: int = Field(description="upright photo width in pixels")
    height: int = Field(description="upright photo height in pixels")
    space: MeshSpace
    face_count: int
    faces_dropped: int = Field(default=0, description="faces=all: faces detected beyond the server's max_faces, "
                                                       "not reconstructed (also the X-Faces-Dropped header)")
    model_version: str = Field(description=MODEL_VERSION_HELP, examples=["30700-steps-1ab74d2ac082"])
    landmark_calibration: str = Field(description=LANDMARK_CALIBRATION_HELP,
                                      examples=["aflw2000-3d-dev (123 images)"])
    faces: list[FaceJSON]


class BatchItemJSON(BaseModel):
    index: int = Field(description="position of the image in the request")
    filename: str | None = Field(description="the file name the client sent")
    status: int = Field(description="200 when reconstructed, else the status the single-image route would return")
    result: ReconstructionJSON | None = None
    faces_dropped: int = Field(default=0, description="faces=all: faces detected beyond the server's max_faces, "
                                                       "not reconstructed")
    error: dict | None = Field(default=None, description="problem details (RFC 9457) when status is not 200")


class BatchJSON(BaseModel):
    succeeded: int = Field(description="images reconstructed")
    failed: int = Field(description="images that got a problem instead")
    model_version: str = Field(description=MODEL_VERSION_HELP, examples=["30700-steps-1ab74d2ac082"])
    landmark_calibration: str = Field(description=LANDMARK_CALIBRATION_HELP,
                                      examples=["aflw2000-3d-dev (123 images)"])
    items: list[BatchItemJSON] = Field(description="one per image, in the order sent")


MIN_PERSON_PHOTOS, MAX_PERSON_PHOTOS = 2, 8


class PersonPhotoJSON(BaseModel):
    index: int = Field(description="position of the photo in the request")
    filename: str | None = Field(description="the file name the client sent")
    used: bool = Field(description="whether the photo's face went into the person's identity")
    reason: str | None = Field(default=None, description="why the photo was not used: not an image, no face, or "
                                                         "another person (its identity code disagrees with the "
                                                         "others')")
    weight: float = Field(description="the photo's share of the fused identity (the used photos' add up to 1; "
                                      "0 when not used)")
    result: ReconstructionJSON | None = Field(default=None, description="a used photo's face: the fused identity "
                                                                        "with this photo's expression and pose")


class PersonJSON(BaseModel):
    photos_sent: int = Field(description=f"photos in the request ({MIN_PERSON_PHOTOS} to {MAX_PERSON_PHOTOS})")
    photos_used: int = Field(description="photos whose face went into the identity")
    rejected: list[int] = Field(description="indices of the photos left out (see each photo's reason)")
    space: MeshSpace
    model_version: str = Field(description=MODEL_VERSION_HELP, examples=["30700-steps-1ab74d2ac082"])
    landmark_calibration: str = Field(description=LANDMARK_CALIBRATION_HELP,
                                      examples=["aflw2000-3d-dev (123 images)"])
    photos: list[PersonPhotoJSON] = Field(description="one per photo, in the order sent")


class ReadyJSON(BaseModel):
    status: str = Field(examples=["ready"])
    providers: list[str] = Field(description="ONNX Runtime execution providers in use, best first",
                                 examples=[["CPUExecutionProvider"]])


class InfoJSON(BaseModel):
    model_version: str = Field(description=MODEL_VERSION_HELP, examples=["30700-steps-1ab74d2ac082"])
    landmark_calibration: str = Field(description=LANDMARK_CALIBRATION_HELP,
                                      examples=["aflw2000-3d-dev (123 images)"])
    topology_version: str
    trained: bool
    vertices: int
    triangles: int
    input_size: int
    providers: list[str]
    limits: dict[str, float | int]
    batching: dict[str, float | int]


# Examples of the JSON answers, for the OpenAPI document (built from the models, so they always match them).
_EXAMPLE_MODEL, _EXAMPLE_CALIBRATION = "30700-steps-1ab74d2ac082", "aflw2000-3d-dev (123 images)"
_EXAMPLE_FACE = FaceJSON(box=[212.0, 140.5, 388.2, 330.9], score=0.9731, yaw=-12.4, pitch=3.1, roll=1.8,
                         landmarks_2d=[[221.4, 198.2], [223.9, 221.7]],  # 68 points, the first two shown
                         landmarks_3d=[[221.4, 198.2, 41.3], [223.9, 221.7, 44.0]], metres_per_pixel=0.000812,
                         lighting=[[1.08, 0.94, 0.89], [0.23, 0.19, 0.19], [0.13, 0.04, 0.01], [0.02, 0.02, 0.02],
                                   [0.0, 0.0, 0.0], [0.14, 0.15, 0.17], [0.13, 0.2, 0.25], [0.02, 0.02, 0.01],
                                   [-0.16, -0.12, -0.13]],
                         expression_code=[round(0.37 * ((7 * i) % 11 - 5) / 5, 3) for i in range(EXPRESSION_CODE_SIZE)])
RECONSTRUCTION_EXAMPLE = ReconstructionJSON(width=640, height=480, space=MeshSpace.image, face_count=1,
                                            faces=[_EXAMPLE_FACE], model_version=_EXAMPLE_MODEL,
                                            landmark_calibration=_EXAMPLE_CALIBRATION).model_dump(mode="json")
BATCH_EXAMPLE = BatchJSON(succeeded=1, failed=1, model_version=_EXAMPLE_MODEL,
                          landmark_calibration=_EXAMPLE_CALIBRATION, items=[
    BatchItemJSON(index=0, filename="one.jpg", status=200, result=ReconstructionJSON(**RECONSTRUCTION_EXAMPLE)),
    BatchItemJSON(index=1, filename="wall.jpg", status=422,
                  error={"type": "urn:facerecon:problem:no-face", "title": "No face found", "status": 422,
                         "detail": "no face was detected in the image"}),
]).model_dump(mode="json")
PERSON_EXAMPLE = PersonJSON(photos_sent=3, photos_used=2, rejected=[2], space=MeshSpace.neutral,
                            model_version=_EXAMPLE_MODEL, landmark_calibration=_EXAMPLE_CALIBRATION, photos=[
    PersonPhotoJSON(index=0, filename="front.jpg", used=True, weight=0.58,
                    result=ReconstructionJSON(**{**RECONSTRUCTION_EXAMPLE, "space": "neutral"})),
    PersonPhotoJSON(index=1, filename="side.jpg", used=True, weight=0.42,
                    result=ReconstructionJSON(**{**RECONSTRUCTION_EXAMPLE, "space": "neutral"})),
    PersonPhotoJSON(index=2, filename="friend.jpg", used=False, weight=0.0,
                    reason="another person: its identity code is farther from the others' than the same person's "
                           "would be"),
]).model_dump(mode="json")
READY_EXAMPLE = ReadyJSON(status="ready", providers=["CPUExecutionProvider"]).model_dump(mode="json")
INFO_EXAMPLE = InfoJSON(
    model_version=_EXAMPLE_MODEL, landmark_calibration=_EXAMPLE_CALIBRATION, topology_version="2.141e23a26f60",
    trained=True, vertices=7489, triangles=14832, input_size=128, providers=["CPUExecutionProvider"],
    limits={"max_upload_bytes": 15728640, "max_pixels": 40000000, "max_faces": 16, "max_batch_images": 16,
            "max_in_flight": 32},
    batching={"max_batch": 16, "max_wait_ms": 4.0},
).model_dump(mode="json")
