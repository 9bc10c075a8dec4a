"""Rebuilding the face detector from MediaPipe's .tflite files reproduces the committed ONNX."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("mediapipe")
pytest.importorskip("tflite")
pytest.importorskip("torch")
pytest.importorskip("onnx")

from model.runtime.detector import (  # noqa: E402
    DEFAULT_DETECTOR,
    DetectorMetadata,
    FaceDetector,
    input_name,
    letterbox,
    output_names,
)
from service.cli import main  # noqa: E402
from training.tools.blazeface import SPECS  # noqa: E402
from training.tools.detector_calibration import FITTED_CALIBRATIONS  # noqa: E402
from training.tools.detector_convert import VERIFY_PIXELS, build_detector, verification_images  # noqa: E402


def run_graph(path, image: np.ndarray) -> dict[str, np.ndarray]:
    """Every raw output of the detector graph at ``path`` for one photo."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    metadata = DetectorMetadata.from_properties(session.get_modelmeta().custom_metadata_map)
    inputs = {input_name(b.name): letterbox(image, b.input_size)[0][None] for b in metadata.branches}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


@pytest.mark.skipif(not DEFAULT_DETECTOR.is_file(), reason="no face detector in model/weights")
def test_rebuild_matches_the_committed_detector(tmp_path):
    out = tmp_path / "face_detector.onnx"
    metadata, checks, fits = build_detector("both", out)
    assert fits == {}
    # Each rebuilt network matched MediaPipe's own FaceDetection on the Grace Hopper photos.
    assert [c.source for c in checks] == ["short", "full"]
    for check in checks:
        assert check.faces >= 3 and check.max_pixel_difference < VERIFY_PIXELS
    assert {b.name: b.calibration for b in metadata.branches} == FITTED_CALIBRATIONS
    assert FaceDetector(out).metadata == FaceDetector(DEFAULT_DETECTOR).metadata

    photo = verification_images()[0]
    rebuilt, committed = run_graph(out, photo), run_graph(DEFAULT_DETECTOR, photo)
    assert sorted(rebuilt) == sorted(committed) == sorted(o for b in ("short", "full") for o in output_names(b))
    for name in committed:
        np.testing.assert_allclose(rebuilt[name], committed[name], atol=1e-4, err_msg=name)
    assert committed["scores_short"].max() > 0.9  # the photo has a face


def test_cli_builds_a_single_network_detector(tmp_path, capsys):
    out = tmp_path / "short.onnx"
    assert main(["build-detector", "--source", "short", "--out", str(out)]) == 0
    assert "short: matches MediaPipe FaceDetection" in capsys.readouterr().out
    detector = FaceDetector(out, threads=1)
    (branch,) = detector.metadata.branches
    assert (branch.name, branch.input_size, branch.num_anchors) == ("short", 128, 896)
    assert out.stat().st_size < 400_000  # float16 weights
    (face,) = detector.detect(verification_images()[0])
    assert face.score > 0.9


def test_anchor_centres_follow_mediapipe_ssd_layout():
    short = SPECS["short"].anchor_centres()
    assert short.shape == (896, 2)
    # 16x16 cells of stride 8 with 2 anchors each, then 8x8 cells of stride 16 with 6 each.
    np.testing.assert_allclose(short[:4], [[4, 4], [4, 4], [12, 4], [12, 4]])
    np.testing.assert_allclose(short[512:519], [[8, 8]] * 6 + [[24, 8]])
    full = SPECS["full"].anchor_centres()
    assert full.shape == (2304, 2)
    np.testing.assert_allclose(full[[0, 1, 48]], [[2, 2], [6, 2], [2, 6]])
