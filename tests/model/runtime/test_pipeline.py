"""The photo -> faces pipeline with the shipped models (a rendered face stands in for a photo)."""

from __future__ import annotations

import numpy as np
import pytest

from model.conventions import points_box
from model.runtime.detector import DEFAULT_DETECTOR, FaceDetector
from model.runtime.pipeline import FacePipeline, InvalidBox, NoFaceFound
from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor
from tests.conftest import rendered_face

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL.is_file() and DEFAULT_DETECTOR.is_file()),
                                reason="the shipped models are missing from model/weights")


@pytest.fixture(scope="module")
def parts():
    return FaceReconstructor(DEFAULT_MODEL, threads=1), FaceDetector(DEFAULT_DETECTOR)


def _canvas() -> np.ndarray:
    canvas = np.full((480, 640, 3), 200, np.uint8)
    canvas[100:356, 300:556] = rendered_face()[0]
    return canvas


def test_detected_faces_are_recropped_around_their_first_pass_landmark_vertices(parts):
    image = _canvas()
    once = FacePipeline(*parts, refine=False).reconstruct(image)
    twice = FacePipeline(*parts, refine=True).reconstruct(image)
    (first,), (second,) = once.faces, twice.faces
    assert first.box != second.box
    landmark_vertices = first.result.image_points[parts[0].topology.landmarks68]
    np.testing.assert_allclose(second.box, points_box(landmark_vertices), atol=1e-3)
    assert second.score == first.score  # the detection's score is kept


def test_a_given_box_is_used_as_is(parts):
    image = _canvas()
    box = (320.0, 120.0, 540.0, 340.0)
    (face,) = FacePipeline(*parts, refine=True).reconstruct(image, box=box).faces
    assert face.box == box and face.score is None


def test_no_face_and_a_box_outside_the_image(parts):
    pipeline = FacePipeline(*parts)
    with pytest.raises(NoFaceFound):
        pipeline.reconstruct(np.full((240, 320, 3), 128, np.uint8))
    with pytest.raises(InvalidBox):
        pipeline.reconstruct(_canvas(), box=(700.0, 10.0, 800.0, 90.0))
