"""Expression transfer with the shipped model: A's face with B's expression (and pose)."""

from __future__ import annotations

import numpy as np
import pytest

from model.runtime.detector import DEFAULT_DETECTOR, FaceDetector
from model.runtime.image_io import load_rgb
from model.runtime.pipeline import FacePipeline, NoFaceFound
from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor, FaceResult
from tests.conftest import SHARED_DATA
from training.evaluate_identity import mouth_measures

# A: a closed mouth, from a person of the training data's validation split; B: a wide-open smile.
IDENTITY = SHARED_DATA / "train" / "lfw" / "John_Bolton" / "John_Bolton_0001.jpg"
OPEN_MOUTH = SHARED_DATA / "train" / "utkface" / "16_0_0_20170104012457770.jpg"

pytestmark = pytest.mark.skipif(not IDENTITY.is_file() or not OPEN_MOUTH.is_file(),
                                reason="needs the face photos of ../shared/data (train/lfw, train/utkface)")


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline(FaceReconstructor(DEFAULT_MODEL), FaceDetector(DEFAULT_DETECTOR))


@pytest.fixture(scope="module")
def photos() -> tuple[np.ndarray, np.ndarray]:
    return load_rgb(IDENTITY.read_bytes()), load_rgb(OPEN_MOUTH.read_bytes())


def _opening(pipeline: FacePipeline, result: FaceResult) -> float:
    """Inner-lip gap over the eye-corner distance of the expressive (canonical) mesh."""
    return float(mouth_measures(result.expressive_vertices[None], pipeline.reconstructor.topology.landmarks68)[0][0])


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean vertex distance (metres) of two frontal meshes (V, 3)."""
    return float(np.linalg.norm(a - b, axis=1).mean())


def test_bs_open_mouth_opens_as_mouth_and_as_neutral_face_stays_as(pipeline, photos):
    a_image, b_image = photos
    a = pipeline.reconstruct(a_image).faces[0].result
    b = pipeline.reconstruct(b_image).faces[0].result
    (face,) = pipeline.transfer(a_image, b_image).faces
    assert _opening(pipeline, a) < 0.05 and _opening(pipeline, b) > 0.15  # closed, wide open
    assert _opening(pipeline, face.result) > 0.8 * _opening(pipeline, b)
    assert _distance(face.result.neutral_vertices, a.neutral_vertices) < 0.1 * _distance(face.result.neutral_vertices,
                                                                                         b.neutral_vertices)
    np.testing.assert_allclose(face.result.euler_degrees, a.euler_degrees, atol=1.0)  # A's pose
    np.testing.assert_allclose(face.result.codes.identity, a.codes.identity, atol=1e-4)
    np.testing.assert_allclose(face.result.codes.expression, b.codes.expression, rtol=0.05, atol=0.05)
    source = face.expression_source
    assert source is not None and (source.kind, source.pose_from) == ("image", "identity")
    assert source.box is not None and source.score is not None


def test_an_expression_code_transfers_as_its_image_does(pipeline, photos):
    a_image, b_image = photos
    (from_image,) = pipeline.transfer(a_image, b_image).faces
    code = pipeline.reconstruct(b_image).faces[0].result.codes.expression
    (from_code,) = pipeline.transfer(a_image, None, expression_code=code).faces
    assert from_code.expression_source is not None and from_code.expression_source.kind == "code"
    np.testing.assert_allclose(from_code.result.codes.expression, code, atol=1e-6)
    assert _distance(from_code.result.expressive_vertices, from_image.result.expressive_vertices) < 0.001


def test_pose_from_the_expression_image_turns_the_head_and_keeps_its_place(pipeline, photos):
    a_image, b_image = photos
    a = pipeline.reconstruct(a_image).faces[0].result
    b = pipeline.reconstruct(b_image).faces[0].result
    (face,) = pipeline.transfer(a_image, b_image, pose_from="expression").faces
    np.testing.assert_allclose(face.result.rotation, b.rotation, atol=0.05)
    np.testing.assert_allclose(face.result.translation, a.translation, atol=1e-3)
    assert face.result.scale == pytest.approx(a.scale, rel=1e-3)


def test_bad_requests_are_refused(pipeline, photos):
    a_image, b_image = photos
    with pytest.raises(ValueError, match="exactly one"):
        pipeline.transfer(a_image, b_image, expression_code=np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="exactly one"):
        pipeline.transfer(a_image, None)
    with pytest.raises(ValueError, match="64 numbers"):
        pipeline.transfer(a_image, None, expression_code=np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="needs the expression image"):
        pipeline.transfer(a_image, None, expression_code=np.zeros(64, np.float32), pose_from="expression")
    with pytest.raises(NoFaceFound, match="expression image"):
        pipeline.transfer(a_image, np.full((240, 320, 3), 128, np.uint8))
