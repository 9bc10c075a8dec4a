import json

import numpy as np
import pytest
from PIL import Image

from model.conventions import points_box
from service.cli import main
from training.evaluate import load_aflw, nme, summarise


def test_nme_normalises_by_the_box_and_centres_depth():
    truth = np.zeros((68, 3))
    truth[:, 0] = np.linspace(0, 100, 68)
    truth[:, 1] = np.linspace(0, 25, 68)
    truth[:, 2] = 7.0
    shifted = truth + np.array([3.0, 4.0, 50.0])  # 5 px off in 2D, depth offset only
    e2, e3 = nme(shifted, truth)
    assert e2 == pytest.approx(5.0 / 50.0)
    assert e3 == pytest.approx(5.0 / 50.0)
    assert points_box(truth) == (0.0, 0.0, 100.0, 25.0)


def test_summary_bins_by_absolute_yaw():
    out = summarise([0.01, 0.03, 0.05, 0.07], [0.02] * 4, [-10.0, 45.0, -75.0, 90.0], missing=1)
    assert out["n"] == 4 and out["missing"] == 1
    assert (out["n_0_30"], out["n_30_60"], out["n_60_91"]) == (1, 1, 2)
    assert out["nme2d_0_30"] == pytest.approx(1.0) and out["nme2d_60_91"] == pytest.approx(6.0)
    assert out["nme2d_binmean"] == pytest.approx((1.0 + 3.0 + 6.0) / 3, abs=1e-3)
    assert out["nme2d_mean"] == pytest.approx(4.0)
    assert "nme2d_by_region" not in out


def test_summary_splits_the_error_by_region():
    points = [np.zeros(68), np.zeros(68)]
    points[0][0:17] = 0.08  # jaw off in the frontal face only
    points[1][48:68] = 0.04  # mouth off in the profile only
    out = summarise([p.mean() for p in points], [0.0, 0.0], [5.0, -80.0], missing=0, points_2d=points)
    regions = out["nme2d_by_region"]
    assert regions["jaw"] == {"0_30": pytest.approx(8.0), "60_91": pytest.approx(0.0)}
    assert regions["mouth"] == {"0_30": pytest.approx(0.0), "60_91": pytest.approx(4.0)}
    assert regions["eyes"]["0_30"] == 0.0 and "30_60" not in regions["eyes"]
    # the regions partition the 68 points: their point-weighted mean is the NME
    sizes = {"jaw": 17, "brows": 10, "nose": 9, "eyes": 12, "mouth": 20}
    assert sum(regions[r]["0_30"] * n for r, n in sizes.items()) / 68 == pytest.approx(out["nme2d_0_30"], abs=1e-3)


@pytest.fixture
def aflw_like(tmp_path, face_photo):
    """An AFLW2000-3D style folder in the original release's layout (images + .mat)."""
    from scipy.io import savemat

    original = tmp_path / "AFLW2000"
    original.mkdir()
    h, w = face_photo.shape[:2]
    rng = np.random.default_rng(0)
    for i, yaw in enumerate([0.1, 0.7, 1.3]):
        Image.fromarray(face_photo).save(original / f"image{i:05d}.jpg")
        pts = np.stack([rng.uniform(0.3 * w, 0.7 * w, 68), rng.uniform(0.3 * h, 0.8 * h, 68), rng.normal(0, 10, 68)])
        savemat(original / f"image{i:05d}.mat", {"pt3d_68": pts, "Pose_Para": np.array([[0.0, yaw, 0.0, 0, 0, 0, 1]])})
    return original


def test_converter_and_cli_evaluation(aflw_like, tmp_path, onnx_model, capsys):
    converted = tmp_path / "converted"
    overlays = tmp_path / "overlays"
    code = main(["evaluate", "--aflw2000", str(converted), "--convert-from", str(aflw_like), "--model", str(onnx_model),
                 "--save-overlays", str(overlays)])
    assert code == 0
    samples = load_aflw(converted)
    assert [round(s.yaw_deg) for s in samples] == [6, 40, 74]
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("n", "missing", "nme2d_0_30", "nme2d_30_60", "nme2d_60_91", "nme2d_binmean", "nme2d_mean",
                "nme3d_mean"):
        assert key in metrics
    assert metrics["n"] == 3 and metrics["missing"] == 0
    assert sorted(p.name for p in overlays.iterdir()) == ["image00000.png", "image00001.png", "image00002.png"]
    assert set(metrics["nme2d_by_region"]) == {"jaw", "brows", "nose", "eyes", "mouth"}
    assert main(["evaluate", "--aflw2000", str(converted), "--model", str(onnx_model), "--mirror-average"]) == 0
    averaged = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert averaged["n"] == 3 and averaged["nme2d_mean"] != metrics["nme2d_mean"]


def test_missing_ground_truth_is_a_clear_error(tmp_path, onnx_model, capsys):
    assert main(["evaluate", "--aflw2000", str(tmp_path), "--model", str(onnx_model)]) == 2
    assert "gt.npz" in capsys.readouterr().err


def test_detect_boxes_count_photos_without_the_face_as_missing(tmp_path, onnx_model, capsys):
    from model.runtime.detector import DEFAULT_DETECTOR
    from tests.conftest import AFLW_DEV

    if not (AFLW_DEV / "gt.npz").is_file() or not DEFAULT_DETECTOR.is_file():
        pytest.skip("needs ../shared/data/eval/aflw2000-3d-dev and the shipped face detector")
    root = tmp_path / "aflw"
    (root / "images").mkdir(parents=True)
    with np.load(AFLW_DEV / "gt.npz") as gt:
        names, points, yaws = list(gt["names"][:2]), gt["pts68"][:2], gt["yaw_deg"][:2]
    for name in names:
        (root / "images" / name).write_bytes((AFLW_DEV / "images" / name).read_bytes())
    Image.new("RGB", (450, 450), (128, 128, 128)).save(root / "images" / "blank.jpg")  # no face to find
    np.savez(root / "gt.npz", names=np.array(names + ["blank.jpg"]), pts68=np.concatenate([points, points[:1]]),
             yaw_deg=np.concatenate([yaws, yaws[:1]]))
    for boxes, n, missing in (("detect", 2, 1), ("gt", 3, 0)):
        assert main(["evaluate", "--aflw2000", str(root), "--boxes", boxes, "--model", str(onnx_model)]) == 0
        metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (metrics["n"], metrics["missing"]) == (n, missing)


def test_detect_mode_evaluates_the_face_the_service_takes(tmp_path):
    """Two rendered faces, the annotated one the larger: evaluation runs the runtime pipeline and
    scores the face the service answers with (the largest), not the detector's first."""
    from model.runtime.detector import FaceDetector
    from model.runtime.pipeline import FacePipeline
    from model.runtime.reconstructor import FaceReconstructor
    from tests.conftest import rendered_face
    from training.evaluate import evaluate_aflw

    face, landmarks = rendered_face()
    canvas = np.full((480, 800, 3), 200, np.uint8)
    canvas[100:356, 40:296] = face
    canvas[150:310, 500:660] = np.asarray(Image.fromarray(face).resize((160, 160)))
    (tmp_path / "images").mkdir()
    Image.fromarray(canvas).save(tmp_path / "images" / "two.png")
    truth = np.concatenate([landmarks + np.array([40.0, 100.0]), np.zeros((68, 1))], axis=1)
    np.savez(tmp_path / "gt.npz", names=np.array(["two.png"]), pts68=truth.T[None], yaw_deg=np.zeros(1))

    pipeline = FacePipeline(FaceReconstructor(threads=1), FaceDetector())
    metrics = evaluate_aflw(tmp_path, pipeline, boxes="detect")
    (served,) = pipeline.reconstruct(canvas).faces  # what the service and the CLI answer with
    assert metrics["n"] == 1 and metrics["missing"] == 0
    assert metrics["nme2d_mean"] == pytest.approx(nme(served.result.landmarks_3d, truth)[0] * 100, abs=1e-3)
    assert served.box[0] < 300  # the larger, annotated face on the left


def test_the_overlay_of_a_photo_decoded_reduced_is_drawn_where_the_face_is():
    """draw_overlay on a 2560x1920 JPEG decoded at half: the red landmarks land on the array where
    they land on the whole photo, halved."""
    import io

    from model.runtime.detector import DEFAULT_DETECTOR, FaceDetector
    from model.runtime.image_io import load_rgb
    from model.runtime.pipeline import FacePipeline
    from model.runtime.reconstructor import DEFAULT_MODEL, FaceReconstructor
    from model.topology import FaceTopology
    from tests.conftest import rendered_face
    from training.evaluate import draw_overlay

    canvas = np.full((480, 640, 3), 200, np.uint8)
    canvas[100:356, 300:556] = rendered_face()[0]
    buffer = io.BytesIO()
    Image.fromarray(canvas).resize((2560, 1920), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=95)
    pipeline = FacePipeline(FaceReconstructor(DEFAULT_MODEL, threads=1), FaceDetector(DEFAULT_DETECTOR))
    reduced = pipeline.decode(buffer.getvalue())
    assert reduced.reduction == 2
    (face,) = pipeline.reconstruct(reduced).faces
    no_truth = np.full((68, 2), -100.0)
    overlay = np.asarray(draw_overlay(reduced, face.result, no_truth, FaceTopology.load()))
    assert overlay.shape == reduced.shape
    red = (overlay[..., 0] > 220) & (overlay[..., 1] < 90) & (overlay[..., 2] < 90)
    ys, xs = np.nonzero(red)
    centre = face.result.landmarks_2d.mean(axis=0) / 2
    np.testing.assert_allclose([xs.mean(), ys.mean()], centre, atol=6.0)
    assert load_rgb(buffer.getvalue()).shape == (1920, 2560, 3)
