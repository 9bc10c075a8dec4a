"""The shipped ONNX face detector on real photos, blank images and awkward sizes, plus its helpers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.conventions import box_area
from model.runtime.detector import (
    DEFAULT_DETECTOR,
    SMALL_FACE,
    SURE_SCORE,
    BoxCalibration,
    Detection,
    DetectorBranch,
    DetectorInput,
    DetectorMetadata,
    FaceDetector,
    box_iou,
    branch_model,
    input_name,
    letterbox,
    onnx_metadata,
    output_names,
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
    assert weighted_nms(scores, boxes, keypoints, iou_threshold=0.3, max_faces=5, score_threshold=0.95) == []
    assert weighted_nms(scores[:0], boxes[:0], keypoints[:0], iou_threshold=0.3, max_faces=5) == []


# Speed work (issue 19): one session per branch, the short-range branch first, reduced letterboxing,
# vectorised suppression, the decoder's preview.


def reference_weighted_nms(scores, boxes, keypoints, iou_threshold, max_faces):
    """The definition, one candidate at a time in plain Python."""

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / max(union, 1e-12)

    remaining = sorted(range(len(scores)), key=lambda i: -scores[i])
    out = []
    while remaining and len(out) < max_faces:
        top = remaining[0]
        group = [i for i in remaining if i == top or iou(boxes[top], boxes[i]) > iou_threshold]
        total = sum(scores[i] for i in group)
        out.append((scores[top], sum(scores[i] * boxes[i] for i in group) / total,
                    sum(scores[i] * keypoints[i] for i in group) / total))
        remaining = [i for i in remaining if i not in group]
    return out


@pytest.mark.parametrize("seed", range(12))
def test_weighted_nms_equals_the_straightforward_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 80))
    centres = rng.uniform(0, 200, (5, 2))[rng.integers(0, 5, n)] + rng.normal(0, 6, (n, 2))
    sizes = rng.uniform(10, 40, (n, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    keypoints = centres[:, None] + rng.normal(0, 5, (n, 6, 2))
    scores = rng.uniform(0.5, 1.0, n)
    threshold, max_faces = float(rng.choice([0.1, 0.3, 0.5])), int(rng.integers(1, 12))
    ours = weighted_nms(scores, boxes, keypoints, threshold, max_faces)
    expected = reference_weighted_nms(scores, boxes, keypoints, threshold, max_faces)
    assert len(ours) == len(expected) and (n == 0 or len(ours) >= 1)
    for (score, box, points), (score_ref, box_ref, points_ref) in zip(ours, expected):
        assert score == score_ref
        np.testing.assert_allclose(box, box_ref, rtol=1e-9)
        np.testing.assert_allclose(points, points_ref, rtol=1e-9)


def test_each_branch_session_gives_the_whole_graphs_outputs_and_needs_only_its_input(detector, real_face):
    """The detector cuts each branch out of the graph when it loads: the same numbers, one input each."""
    import onnxruntime as ort

    whole = ort.InferenceSession(str(DEFAULT_DETECTOR), providers=["CPUExecutionProvider"])
    image, _ = real_face
    inputs = {input_name(b.name): letterbox(image, b.input_size)[0][None] for b in detector.metadata.branches}
    for branch in detector.metadata.branches:
        session = detector.sessions[branch.name]
        assert [i.name for i in session.get_inputs()] == [input_name(branch.name)]
        assert [o.name for o in session.get_outputs()] == list(output_names(branch.name))
        ours = detector.run_branch(branch, inputs[input_name(branch.name)])
        reference = whole.run(list(output_names(branch.name)), inputs)
        for got, expected in zip(ours, reference):
            np.testing.assert_array_equal(got, expected[0])
    assert max(detector.sessions["short"].run(["scores_short"], {"image_short": inputs["image_short"]})[0][0]) > 0.9


def test_branch_model_keeps_what_an_output_needs_and_refuses_subgraphs():
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w1, w2 = np.full((2,), 3.0, np.float32), np.full((2,), 5.0, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "w1"], ["c"]), helper.make_node("Sub", ["b", "w2"], ["e"]),
         helper.make_node("Mul", ["c", "c"], ["d"])],
        "two", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("d", "e")],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"k": "v"})
    data = model.SerializeToString()
    cut = onnx.load_from_string(branch_model(data, ["d"]))
    assert [n.op_type for n in cut.graph.node] == ["Add", "Mul"]
    assert [i.name for i in cut.graph.initializer] == ["w1"]
    assert [i.name for i in cut.graph.input] == ["a"] and [o.name for o in cut.graph.output] == ["d"]
    assert onnx_metadata(branch_model(data, ["d"])) == {"k": "v"}
    (d,) = ort.InferenceSession(branch_model(data, ["d"])).run(None, {"a": np.array([1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(d, [16.0, 25.0])
    assert [n.op_type for n in onnx.load_from_string(branch_model(data, ["e"])).graph.node] == ["Sub"]
    with pytest.raises(ValueError, match="no outputs"):
        branch_model(data, ["x"])
    with pytest.raises(ValueError):
        branch_model(b"\xff\xff\xff", ["d"])

    branch = helper.make_graph([helper.make_node("Identity", ["c"], ["y"])], "inner", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    condition = helper.make_node("If", ["flag"], ["d"], then_branch=branch, else_branch=branch)
    looped = helper.make_graph([helper.make_node("Add", ["a", "a"], ["c"]), condition], "if",
                               [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]),
                                helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                               [helper.make_tensor_value_info("d", TensorProto.FLOAT, [2])])
    with pytest.raises(ValueError, match="subgraphs"):
        branch_model(helper.make_model(looped).SerializeToString(), ["d"])


def pasted(name: str, width_fraction: float, at: tuple[int, int] = (300, 200)) -> tuple[np.ndarray, np.ndarray]:
    """A dev photo scaled so its 68-point box is width_fraction of a 640x480 canvas wide, pasted at ``at``;
    the canvas and the face's 68-point box on it."""
    image, points = aflw_face(name)
    truth = points_box(points)
    scale = width_fraction * 640 / (truth[2] - truth[0])
    small = Image.fromarray(image).resize((round(image.shape[1] * scale), round(image.shape[0] * scale)),
                                          Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (640, 480), (120, 140, 160))
    canvas.paste(small, at)
    return np.asarray(canvas), truth * scale + np.tile(at, 2)


def branches_run(detector: FaceDetector, monkeypatch) -> list[str]:
    """The names of the branches detect() runs from now on, in order."""
    ran: list[str] = []
    original = detector.detect_branch

    def spy(source, branch):
        ran.append(branch.name)
        return original(source, branch)

    monkeypatch.setattr(detector, "detect_branch", spy)
    return ran


def test_largest_face_needs_only_the_short_range_branch_when_it_is_sure(detector, real_face, monkeypatch):
    image, points = real_face
    ran = branches_run(detector, monkeypatch)
    (face,) = detector.detect(image, "largest")
    assert ran == ["short"]
    assert box_iou(points_box(points), np.array([face.box]))[0] > 0.8
    (short, _), ran[:] = detector.detect_per_branch(image), []
    assert (face.box, face.score) == (short[0].box, short[0].score)  # the short-range branch's own answer
    np.testing.assert_array_equal(face.keypoints, short[0].keypoints)
    assert len(detector.detect(image, "all")) == 1 and ran == ["short", "full"]  # every face: every branch


@pytest.mark.parametrize("width_fraction", [0.06, 0.08])
def test_short_range_first_still_finds_small_faces(detector, monkeypatch, width_fraction):
    """At 6% of the canvas the short-range branch finds nothing, at 8% a poor box of a face it is unsure of:
    both times the full-range branch runs and the face is found."""
    canvas, truth = pasted("image00050.jpg", width_fraction)
    short, _ = detector.detect_per_branch(canvas)
    assert not short or short[0].score < SURE_SCORE and box_iou(truth, np.array([short[0].box]))[0] < 0.5
    ran = branches_run(detector, monkeypatch)
    faces = detector.detect(canvas, "largest")
    assert ran == ["short", "full"]
    largest = max(faces, key=lambda d: box_area(d.box))
    assert box_iou(truth, np.array([largest.box]))[0] > 0.7


def test_the_rule_for_the_full_range_branch():
    """Short-range faces suffice when the largest is at least small_face of the longer side and sure."""
    detector = FaceDetector.__new__(FaceDetector)  # the rule alone, no sessions
    detector.small_face, detector.sure_score = SMALL_FACE, SURE_SCORE
    assert (SMALL_FACE, SURE_SCORE) == (0.15, 0.7)
    source = DetectorInput(np.zeros((1, 1, 3), np.uint8), 1, 1000, 500)

    def face(width, height, score):
        return Detection((10.0, 10.0, 10.0 + width, 10.0 + height), score, np.zeros((6, 2)))

    assert detector.short_range_suffices([face(150, 150, 0.7)], source)
    assert detector.short_range_suffices([face(100, 225, 0.9)], source)  # side sqrt(100 x 225) = 150
    assert not detector.short_range_suffices([], source)
    assert not detector.short_range_suffices([face(149, 149, 0.99)], source)  # small: under 0.15 x 1000
    assert not detector.short_range_suffices([face(400, 400, 0.69)], source)  # unsure
    assert not detector.short_range_suffices([face(400, 400, 0.6), face(100, 100, 0.99)], source)  # the largest
    assert detector.short_range_suffices([face(300, 300, 0.9), face(50, 50, 0.55)], source)


def test_letterbox_of_a_large_photo_reduces_then_scales_and_maps_back():
    photo = np.zeros((600, 1000, 3), np.uint8)
    photo[200:400, 300:700] = 255
    square, transform = letterbox(photo, 128)  # box filter by 7 (143 x 86), then bilinear to 128 x 77
    assert square.shape == (128, 128, 3) and square.dtype == np.uint8
    rows, cols = np.nonzero(square[..., 0] > 127)
    assert square[:25].max() == 0 and square[-25:].max() == 0  # black border above and below
    corners = transform.to_photo(np.array([[cols.min(), rows.min()], [cols.max() + 1, rows.max() + 1]], float))
    np.testing.assert_allclose(corners.ravel(), [300, 200, 700, 400], atol=1000 / 128)
    np.testing.assert_allclose(transform.to_photo(np.array([[0.0, 25.5], [128.0, 102.5]])), [[0, 0], [1000, 600]],
                               atol=7)


def test_detection_from_the_decoders_preview_matches_the_full_resolution(detector, real_face):
    """A 1800x1800 JPEG decoded with a preview (box-filtered by 4 while decoding): the same face as
    detected from the full-resolution array."""
    import io

    from model.runtime.image_io import DecodedImage, load_rgb

    image, points = real_face
    buffer = io.BytesIO()
    Image.fromarray(image).resize((1800, 1800), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=95)
    decoded = load_rgb(buffer.getvalue(), preview_side=detector.largest_input)
    assert isinstance(decoded, DecodedImage) and decoded.preview is not None and decoded.preview.factor == 4
    plain = np.array(decoded)  # the same pixels, no preview
    assert not isinstance(plain, DecodedImage)
    truth = points_box(points) * 1800 / image.shape[0]
    side = truth[2] - truth[0]
    for faces in ("largest", "all"):
        (ours,), (full,) = detector.detect(decoded, faces), detector.detect(plain, faces)
        # The array is box-filtered as the decoder did: the same letterboxed input, the same face.
        assert (ours.box, ours.score) == (full.box, full.score)
        np.testing.assert_array_equal(ours.keypoints, full.keypoints)
        assert box_iou(truth, np.array([ours.box]))[0] > 0.8
    # Straight from the full resolution to the network's input, without the decoder's box filter first,
    # the face moves by under 2% of its size.
    unfiltered = DetectorInput(plain, 1, 1800, 1800)
    (direct,) = detector.detect_branch(unfiltered, detector.metadata.branches[0])
    (ours,) = detector.detect(decoded, "largest")
    np.testing.assert_allclose(ours.box, direct.box, atol=0.02 * side)
    np.testing.assert_allclose(ours.keypoints, direct.keypoints, atol=0.02 * side)
