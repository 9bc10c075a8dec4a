"""The shipped ONNX face detector on real photos, blank images and awkward sizes, plus its helpers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.runtime.detector import (
    DEFAULT_DETECTOR,
    BoxCalibration,
    DetectorBranch,
    DetectorMetadata,
    FaceDetector,
    box_iou,
    letterbox,
    weighted_nms,
)
from tests.conftest import AFLW_DEV

needs_detector = pytest.mark.skipif(not DEFAULT_DETECTOR.is_file(), reason="no face detector in model/weights")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    if not DEFAULT_DETECTOR.is_file():
        pytest.skip("no face detector in model/weights")
    return FaceDetector(threads=1)


def aflw_face(name: str) -> tuple[np.ndarray, np.ndarray]:
    """An AFLW2000-3D dev photo and its ground-truth 68 points (68, 2); skips without ../shared."""
    if not (AFLW_DEV / "gt.npz").is_file():
        pytest.skip(f"real face photos not found under {AFLW_DEV}")
    with np.load(AFLW_DEV / "gt.npz") as gt:
        points = gt["pts68"][list(gt["names"]).index(name)].T[:, :2].astype(np.float64)
    return np.asarray(Image.open(AFLW_DEV / "images" / name).convert("RGB")), points


@pytest.fixture
def real_face() -> tuple[np.ndarray, np.ndarray]:
    return aflw_face("image00050.jpg")


def points_box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def test_finds_the_face_with_a_box_close_to_the_68_point_box(detector, real_face):
    image, points = real_face
    faces = detector.detect(image)
    assert len(faces) == 1
    face = faces[0]
    truth = points_box(points)
    assert 0.5 < face.score <= 1.0
    assert box_iou(truth, np.array([face.box]))[0] > 0.8
    side = np.sqrt(np.prod(truth[2:] - truth[:2]))
    # Keypoints: right eye (image left on a frontal face), left eye, ..., in photo pixels.
    assert face.keypoints.shape == (6, 2)
    np.testing.assert_allclose(face.keypoints[0], points[36:42].mean(axis=0), atol=0.06 * side)
    np.testing.assert_allclose(face.keypoints[1], points[42:48].mean(axis=0), atol=0.06 * side)
    np.testing.assert_allclose(face.keypoints[3], points[[51, 57, 62, 66]].mean(axis=0), atol=0.1 * side)


@needs_detector
@pytest.mark.parametrize("kind", ["black", "white", "grey", "noise"])
def test_finds_nothing_where_there_is_no_face(detector, kind):
    rng = np.random.default_rng(0)
    image = {
        "black": np.zeros((480, 640, 3), np.uint8),
        "white": np.full((480, 640, 3), 255, np.uint8),
        "grey": np.full((300, 300, 3), 128, np.uint8),
        "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
    }[kind]
    assert detector.detect(image) == []


def test_finds_two_faces_side_by_side(detector):
    left, left_points = aflw_face("image00050.jpg")
    right, right_points = aflw_face("image00081.jpg")
    pair = np.concatenate([left, right], axis=1)
    faces = detector.detect(pair)
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    by_x = sorted(faces, key=lambda f: f.box[0])
    shifted = right_points + np.array([left.shape[1], 0.0])
    for face, points in zip(by_x, (left_points, shifted)):
        assert box_iou(points_box(points), np.array([face.box]))[0] > 0.7


def test_box_follows_the_face_inside_a_bigger_canvas(detector, real_face):
    image, points = real_face
    h, w = image.shape[:2]
    boxes = []
    # A 600-pixel-wide canvas: 75 photo pixels are 16 input pixels at 128 and 24 at 192, so both
    # letterboxed inputs shift by whole pixels and the networks see the same face.
    shift = np.array([150, 75])
    for dx, dy in ((0, 0), shift):
        canvas = np.full((h + 100, w + 150, 3), 90, np.uint8)
        canvas[dy : dy + h, dx : dx + w] = image
        (face,) = detector.detect(canvas)
        boxes.append(np.array(face.box))
        assert box_iou(points_box(points) + np.array([dx, dy, dx, dy]), boxes[-1][None])[0] > 0.8
    np.testing.assert_allclose(boxes[1] - boxes[0], np.tile(shift, 2), atol=0.02 * (boxes[0][2] - boxes[0][0]))


def test_portrait_and_huge_photos_map_back_to_photo_pixels(detector, real_face):
    image, points = real_face
    h, w = image.shape[:2]
    portrait = np.full((3 * h, w, 3), 200, np.uint8)
    portrait[h : 2 * h] = image
    (face,) = detector.detect(portrait)
    assert box_iou(points_box(points) + np.array([0, h, 0, h]), np.array([face.box]))[0] > 0.75

    huge = np.asarray(Image.fromarray(image).resize((w * 8, h * 8), Image.Resampling.BILINEAR))
    (face,) = detector.detect(huge)
    assert box_iou(points_box(points) * 8, np.array([face.box]))[0] > 0.75


@needs_detector
@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 3, 3), (7, 400, 3), (400, 7, 3)])
def test_tiny_and_extreme_aspect_images_are_handled(detector, shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert detector.detect(image) == []


@needs_detector
@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
                                 np.zeros((10, 10, 3), np.float32), np.zeros((0, 10, 3), np.uint8)])
def test_rejects_what_is_not_an_rgb_uint8_image(detector, bad):
    with pytest.raises(ValueError):
        detector.detect(bad)


@needs_detector
def test_metadata_describes_the_shipped_detector(detector):
    meta = detector.metadata
    assert [b.name for b in meta.branches] == ["short", "full"]
    assert [(b.input_size, b.num_anchors) for b in meta.branches] == [(128, 896), (192, 2304)]
    assert "Apache-2.0" in meta.source_licence
    for branch in meta.branches:
        assert branch.source_model.startswith("face_detection_")
        assert branch.calibration != BoxCalibration()
        assert 0.8 < branch.calibration.width < 1.0


def test_missing_detector_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="build-detector"):
        FaceDetector(tmp_path / "none.onnx")


def test_metadata_round_trips_through_properties():
    calibration = BoxCalibration(0.01, 0.05, 0.9, 0.875)
    meta = DetectorMetadata(
        branches=(DetectorBranch("short", 128, 896, "a.tflite", "anchors", calibration),),
        source_licence="Apache-2.0", decoding="baked",
    )
    props = meta.to_properties()
    assert props["facedetector.short.calibration.height"] == "0.875"
    assert DetectorMetadata.from_properties(props) == meta
    del props["facedetector.short.input_size"]
    with pytest.raises(ValueError, match="facedetector.short.input_size"):
        DetectorMetadata.from_properties(props)


def test_calibration_moves_and_scales_about_the_box_side():
    calibration = BoxCalibration(centre_x=0.1, centre_y=-0.2, width=0.5, height=2.0)
    out = calibration.apply(np.array([[10.0, 20.0, 30.0, 60.0]]))  # centre (20, 40), side sqrt(20 * 40)
    side = np.sqrt(800.0)
    np.testing.assert_allclose(out[0], [20 + 0.1 * side - 0.25 * side, 40 - 0.2 * side - side,
                                        20 + 0.1 * side + 0.25 * side, 40 - 0.2 * side + side])


def test_letterbox_centres_the_photo_and_maps_back():
    image = np.full((50, 200, 3), 255, np.uint8)
    square, transform = letterbox(image, 128)
    assert square.shape == (128, 128, 3)
    assert square[:40].max() == 0 and square[-40:].max() == 0 and square[50:78].min() == 255  # 32 px tall strip
    np.testing.assert_allclose(transform.to_photo(np.array([[0.0, 48.0], [128.0, 80.0]])), [[0, 0], [200, 50]])


def test_weighted_nms_averages_overlapping_candidates_by_score():
    scores = np.array([0.9, 0.3, 0.8])
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float64)
    keypoints = np.stack([boxes[:, :2], boxes[:, 2:]], axis=1)
    merged = weighted_nms(scores, boxes, keypoints, iou_threshold=0.3, max_faces=5)
    assert [round(score, 3) for score, _, _ in merged] == [0.9, 0.8]
    np.testing.assert_allclose(merged[0][1], [0.25, 0.25, 10.25, 10.25])  # (0.9 * 0 + 0.3 * 1) / 1.2
    np.testing.assert_allclose(merged[0][2], [[0.25, 0.25], [10.25, 10.25]])
    np.testing.assert_allclose(merged[1][1], boxes[2])
    assert len(weighted_nms(scores, boxes, keypoints, iou_threshold=0.3, max_faces=1)) == 1
