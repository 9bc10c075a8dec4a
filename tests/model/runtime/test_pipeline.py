"""The photo -> faces pipeline with the shipped models (a rendered face stands in for a photo)."""

from __future__ import annotations

import numpy as np
import pytest

from model.conventions import points_box
from model.runtime.detector import DEFAULT_DETECTOR, FaceDetector
from model.runtime.image_io import load_rgb
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


@pytest.mark.parametrize("box", [
    (10.0, 10.0, 10.000001, 10.000001),  # a point: nonsense once answered with 200
    (10.0, 10.0, 17.9, 40.0),  # under 8 pixels wide
    (0.0, 0.0, 400.0, 90.0),  # more than 4 times as wide as high
    (0.0, 0.0, 10000.0, 10000.0),  # reaches more than a photo's width beyond it
    (-700.0, 10.0, 100.0, 300.0),
    (0.0, 0.0, 1e300, 1e300),
    (float("nan"), 0.0, 100.0, 100.0),
    (700.0, 10.0, 800.0, 90.0),  # outside
])
def test_boxes_outside_the_rule_are_refused(parts, box):
    with pytest.raises(InvalidBox, match="^box "):
        FacePipeline.check_box(_canvas(), box)


@pytest.mark.parametrize("box", [(-640.0, -480.0, 1280.0, 960.0), (0.0, 0.0, 8.0, 8.0), (600.0, 400.0, 700.0, 500.0)])
def test_boxes_within_the_rule_are_taken(parts, box):
    FacePipeline.check_box(_canvas(), box)
    (face,) = FacePipeline(*parts).reconstruct(_canvas(), box=box).faces
    assert face.box == box


def test_faces_beyond_max_faces_are_counted(parts):
    reconstructor, _ = parts
    three = np.concatenate([rendered_face()[0]] * 3, axis=1)
    detector = FaceDetector(DEFAULT_DETECTOR, max_faces=256)
    rec = FacePipeline(reconstructor, detector, max_faces=2).reconstruct(three, faces="all")
    assert len(rec.faces) == 2 and rec.faces_dropped == 1
    assert FacePipeline(reconstructor, detector, max_faces=3).reconstruct(three, faces="all").faces_dropped == 0
    assert FacePipeline(reconstructor, detector, max_faces=1).reconstruct(three).faces_dropped == 0  # largest


def test_decoding_keeps_the_detectors_preview_and_finds_the_same_face(parts):
    """A 1280x960 JPEG is decoded once: the answer carries the detector's preview (box-filtered by 3
    while decoding), detection reads it, and the face and its reconstruction are those of the
    full-resolution array (which the detector box-filters the same way)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_canvas()).resize((1280, 960), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=95)
    pipeline = FacePipeline(*parts)
    decoded = pipeline.decode(buffer.getvalue())
    assert decoded.shape == (960, 1280, 3) and decoded.preview is not None and decoded.preview.factor == 3
    (ours,) = pipeline.reconstruct(decoded).faces
    (plain,) = pipeline.reconstruct(np.array(decoded)).faces
    assert 200 < ours.box[2] - ours.box[0] < 320  # the rendered 68 points span about 128 of its 256 pixels, x 2
    assert ours.box == plain.box and ours.score == plain.score
    np.testing.assert_allclose(ours.result.landmarks_2d, plain.result.landmarks_2d, atol=1e-3)


@pytest.mark.parametrize("faces", ["largest", "all"])
def test_the_detector_is_asked_for_the_faces_wanted(parts, monkeypatch, faces):
    """faces=largest lets the detector skip its full-range network when the short-range one is sure."""
    reconstructor, detector = parts
    asked = []
    detect = detector.detect
    monkeypatch.setattr(detector, "detect", lambda image, wanted: asked.append(wanted) or detect(image, wanted))
    (face,) = FacePipeline(reconstructor, detector).find_faces(_canvas(), faces)
    assert asked == [faces] and face.score > 0.5


def _large_jpeg() -> bytes:
    """The canvas at 1280x960 as a JPEG: the face about 500 pixels across."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_canvas()).resize((1280, 960), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_a_given_box_without_photo_colours_decodes_reduced_and_answers_in_photo_pixels(parts):
    """The face's crop square is 390 pixels, at least 3/4 of the 128-pixel crop at a quarter, so the
    JPEG is decoded at a quarter: the same face, boxes, sizes and maps in the photo's own pixels."""
    pipeline = FacePipeline(*parts)
    data = _large_jpeg()
    box = (700.0, 300.0, 1000.0, 600.0)
    assert pipeline.decode_reduction(box) == 4
    reduced = pipeline.decode(data, box, photo_colours=False)
    whole = pipeline.decode(data, box)  # colours wanted: the whole photo
    assert reduced.reduction == 4 and reduced.shape == (240, 320, 3) and whole.shape == (960, 1280, 3)
    (fast,), (full,) = pipeline.reconstruct(reduced, box=box).faces, pipeline.reconstruct(whole, box=box).faces
    assert pipeline.reconstruct(reduced, box=box).size == (1280, 960)
    assert fast.box == full.box and fast.result.crop == full.result.crop
    error = np.linalg.norm(fast.result.landmarks_2d - full.result.landmarks_2d, axis=1).mean()
    assert error < 0.01 * (box[2] - box[0]), error  # libjpeg's DCT scaling for the crop's block means
    # a box is checked against the photo, not the reduced array
    FacePipeline.check_box(reduced, (1000.0, 800.0, 1200.0, 950.0))
    with pytest.raises(InvalidBox, match="1280x960"):
        FacePipeline.check_box(reduced, (1300.0, 10.0, 1400.0, 90.0))


@pytest.mark.parametrize(("box", "expected"), [(None, 1), ((0.0, 0.0, 140.0, 140.0), 1), ((0.0, 0.0, 148.0, 148.0), 2),
                                               ((0.0, 0.0, 5000.0, 5000.0), 8), ((0.0, 0.0, 4.0, 4.0), 1),
                                               ((float("nan"), 0.0, 900.0, 900.0), 1)])
def test_the_decode_reduction_keeps_three_quarters_of_the_crops_resolution(parts, box, expected):
    assert FacePipeline(*parts).decode_reduction(box) == expected


def test_a_large_photo_is_decoded_reduced_and_answered_in_its_own_pixels(parts):
    """A 2560x1920 JPEG (longer side at least 2 x MIN_DECODED_SIDE) is decoded at half for detection,
    crops and colours: the same face and landmarks as from the whole photo, in the photo's pixels."""
    import io

    from PIL import Image

    from model.runtime.pipeline import MIN_DECODED_SIDE

    buffer = io.BytesIO()
    Image.fromarray(_canvas()).resize((2560, 1920), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=95)
    pipeline = FacePipeline(*parts)
    reduced = pipeline.decode(buffer.getvalue())
    assert 2560 // 2 >= MIN_DECODED_SIDE > 2560 // 4
    assert reduced.reduction == 2 and reduced.shape == (960, 1280, 3) and reduced.photo_size == (2560, 1920)
    whole = load_rgb(buffer.getvalue(), preview_side=parts[1].largest_input)
    fast, full = pipeline.reconstruct(reduced), pipeline.reconstruct(whole)
    assert fast.size == full.size == (2560, 1920)
    (face,), (reference,) = fast.faces, full.faces
    side = reference.box[2] - reference.box[0]
    assert 400 < side < 700 and np.abs(np.subtract(face.box, reference.box)).max() < 0.02 * side
    error = np.linalg.norm(face.result.landmarks_2d - reference.result.landmarks_2d, axis=1).mean()
    assert error < 0.01 * side, error
    # with a given box and photo colours, no further than the box allows
    assert pipeline.decode(buffer.getvalue(), (1200.0, 500.0, 1300.0, 600.0)).reduction == 1
