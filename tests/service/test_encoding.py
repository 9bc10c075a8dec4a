"""Answers from reconstructions: the de-lit albedo texture beside the photo's, and what the JSON answer says
about the lighting and the expression code."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.conventions import MeshSpace
from model.mesh.normals import area_weighted_normals
from model.mesh.texture_bake import UVRasterMap
from model.runtime.detector import FaceDetector
from model.runtime.pipeline import FacePipeline, ImageReconstruction, PersonPhoto
from model.runtime.reconstructor import FaceReconstructor
from model.topology import REGION_NAMES, FaceTopology
from service.encoding import build_meshes, person_json, reconstruction_json
from service.schemas import TextureMode
from service.settings import ServiceSettings
from tests.conftest import SHARED_DATA

# A real photo lit from one side: the light comes from the subject's right, their left cheek is in shadow
SIDE_LIT = SHARED_DATA / "train" / "lfw" / "Charles_Rogers" / "Charles_Rogers_0001.jpg"
LUMINANCE = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    settings = ServiceSettings()
    return FacePipeline(FaceReconstructor(settings.model_path), FaceDetector(settings.detector_path))


@pytest.fixture(scope="module")
def uv_map() -> UVRasterMap:
    topology = FaceTopology.load()
    return UVRasterMap.build(topology.uvs, topology.faces, 256)


@pytest.fixture
def side_lit(face_photo) -> np.ndarray:
    """The real side-lit photo when ../shared is there; else a face photo with a light ramp multiplied in
    (bright on the image's left, dark on its right)."""
    if SIDE_LIT.is_file():
        return np.asarray(Image.open(SIDE_LIT).convert("RGB"))
    ramp = np.linspace(1.3, 0.35, face_photo.shape[1])[None, :, None]
    return np.clip(face_photo * ramp, 0, 255).astype(np.uint8)


def cheek_imbalance(texture: np.ndarray, topology: FaceTopology, uv_map: UVRasterMap) -> float:
    """|L - R| / mean of the mean luminance of the left cheek's texels (L) and of their mirror texels on
    the right cheek (R) in a UV texture (mirrored pairs: the same points of the face, each side)."""
    left = np.all(topology.regions[topology.faces] == REGION_NAMES.index("cheek_left"), axis=1)
    texels = np.flatnonzero(left[uv_map.texel_faces])
    mirrored = uv_map.mirror_texels(topology.faces, topology.mirror)[texels]
    luminance = texture.reshape(-1, 3)[uv_map.texels].astype(float) @ LUMINANCE
    a, b = luminance[texels].mean(), luminance[mirrored].mean()
    return abs(a - b) / ((a + b) / 2)


def test_the_albedo_texture_is_even_where_the_photo_texture_is_lit_from_one_side(pipeline, uv_map, side_lit):
    rec = pipeline.reconstruct(side_lit)
    topology = pipeline.reconstructor.topology
    (photo,) = build_meshes(rec, topology, MeshSpace.image, TextureMode.uv, uv_map)
    (albedo,) = build_meshes(rec, topology, MeshSpace.image, TextureMode.albedo, uv_map)
    assert albedo.texture is not None and albedo.uvs is topology.uvs and albedo.vertex_colors is None
    photo_imbalance = cheek_imbalance(photo.texture, topology, uv_map)
    albedo_imbalance = cheek_imbalance(albedo.texture, topology, uv_map)
    assert photo_imbalance > 0.15  # the light: one cheek much darker than the other (0.85 in the real photo)
    assert albedo_imbalance < 0.05 and albedo_imbalance < photo_imbalance / 5
    # the albedo is no flat colour: lips and eyes stand out from the skin
    texels = albedo.texture.reshape(-1, 3)[uv_map.texels].astype(float) @ LUMINANCE
    assert texels.std() > 5


@pytest.mark.parametrize("texture", [TextureMode.vertex, TextureMode.uv, TextureMode.none])
@pytest.mark.parametrize("space", list(MeshSpace))
def test_every_mesh_carries_its_own_surface_normals(pipeline, uv_map, face_photo, space, texture):
    # in the image space the photo's visibility hands its normals on; they must be the mesh's own
    rec = pipeline.reconstruct(face_photo)
    topology = pipeline.reconstructor.topology
    (mesh,) = build_meshes(rec, topology, space, texture, uv_map)
    own = area_weighted_normals(mesh.vertices, topology.faces)
    assert np.abs(mesh.vertex_normals() - own).max() < 1e-4
    assert (mesh.normals is not None) == (space is MeshSpace.image and texture is not TextureMode.none)


def test_the_json_answer_has_the_lighting_and_the_expression_code(pipeline, face_photo):
    rec = pipeline.reconstruct(face_photo)
    topology = pipeline.reconstructor.topology
    answer = reconstruction_json(rec, MeshSpace.image, topology, include_mesh=True, model_version="m",
                                 landmark_calibration="none")
    (face,) = answer.faces
    result = rec.faces[0].result
    np.testing.assert_allclose(face.lighting, result.lighting, atol=1e-4)
    np.testing.assert_allclose(face.expression_code, result.codes.expression, atol=1e-5)
    np.testing.assert_allclose(face.albedo, result.albedo, atol=1e-3)
    assert np.shape(face.lighting) == (9, 3) and len(face.expression_code) == 64
    assert reconstruction_json(rec, MeshSpace.image, topology, include_mesh=False, model_version="m",
                               landmark_calibration="none").faces[0].albedo is None


def test_the_person_answer_says_why_each_photo_was_left_out(pipeline, face_photo):
    rec = pipeline.reconstruct(face_photo)
    topology = pipeline.reconstructor.topology
    used = PersonPhoto(rec, True, None, 1.0, 0.9, 0.3, 1.25)
    other = PersonPhoto(rec, False, "different_person", 0.0, 0.8, 1.7, 1.25)
    empty = PersonPhoto(ImageReconstruction(face_photo, []), False, "no_face", 0.0, 0.0, float("nan"), 1.25)
    answer = person_json([("a.jpg", used), ("b.jpg", other), ("c.jpg", empty), (None, "truncated file")],
                         MeshSpace.neutral, topology, include_mesh=False, model_version="m",
                         landmark_calibration="none")
    assert (answer.photos_sent, answer.photos_used, answer.rejected) == (4, 1, [1, 2, 3])
    reasons = [photo.reason for photo in answer.photos]
    assert reasons[0] is None and "another person" in reasons[1] and "1.70" in reasons[1]
    assert reasons[1].endswith("beyond the same-person limit of 1.25")  # the model's threshold it was judged by
    assert "no face" in reasons[2] and reasons[3] == "not a usable image: truncated file"
    assert answer.photos[0].result is not None and answer.photos[0].result.space is MeshSpace.neutral
    assert all(photo.result is None for photo in answer.photos[1:])


@pytest.mark.parametrize("texture", [TextureMode.vertex, TextureMode.uv])
def test_colours_of_a_photo_decoded_reduced_are_those_of_the_whole_photo(pipeline, uv_map, face_photo, texture):
    """A large JPEG is decoded at half (FacePipeline.decode); its colours are read where the photo's
    pixels map to in the reduced array: the same colours as from the whole photo, up to the detail
    the reduction leaves out, and the same photo size in the mesh."""
    import io

    from model.runtime.image_io import load_rgb

    height, width = face_photo.shape[:2]
    scale = -(-2048 // max(width, height))  # the longer side at least 2 x MIN_DECODED_SIDE
    buffer = io.BytesIO()
    Image.fromarray(face_photo).resize((scale * width, scale * height), Image.Resampling.BICUBIC).save(
        buffer, "JPEG", quality=95)
    reduced = pipeline.decode(buffer.getvalue())
    whole = load_rgb(buffer.getvalue(), preview_side=pipeline.detector.largest_input)
    assert reduced.reduction == 2 and whole.reduction == 1
    topology = pipeline.reconstructor.topology
    fast, full = pipeline.reconstruct(reduced), pipeline.reconstruct(whole)
    (a,), (b,) = (build_meshes(rec, topology, MeshSpace.image, texture, uv_map) for rec in (fast, full))
    colours = (a.vertex_colors, b.vertex_colors) if texture is TextureMode.vertex else (a.texture, b.texture)
    difference = np.abs(colours[0].astype(int) - colours[1]).mean()
    assert difference < 4.0, difference  # of 255; a photo read at the wrong place differs by tens
    width = np.ptp(b.vertices[:, 0])  # the mesh is placed by the photo's size: the same place and shape
    np.testing.assert_allclose(a.vertices.mean(axis=0), b.vertices.mean(axis=0), atol=0.01 * width)
    assert np.abs(a.vertices - b.vertices).mean() < 0.01 * width
