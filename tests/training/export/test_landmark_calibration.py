import json

import numpy as np
import onnx
import pytest

from model.onnx_contract import LANDMARK_OFFSETS, ModelMetadata
from model.runtime.crop import crop_face
from model.runtime.detector import FaceDetector
from model.runtime.pipeline import FacePipeline
from model.runtime.reconstructor import FaceReconstructor
from service.cli import main
from tests.conftest import rendered_face
from training.evaluate import evaluate_aflw
from training.export.landmark_calibration import (
    CalibrationSample,
    calibrate,
    figures,
    fit_offsets,
    read_offsets,
    symmetric_basis,
    write_calibrated_model,
)

FLIP_X = np.array([-1.0, 1.0, 1.0])


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    yaw = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    pitch = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return yaw @ pitch


def _samples(true_offsets: np.ndarray, count: int, noise_px: float, seed: int = 0) -> list[CalibrationSample]:
    """Faces at yaws over [-85, 85] whose annotations are the landmarks moved by ``true_offsets``."""
    rng = np.random.default_rng(seed)
    samples = []
    for yaw in np.linspace(-85, 85, count):
        pixels_per_metre = rng.uniform(800, 1500)
        jacobian = pixels_per_metre * _rotation(yaw, rng.uniform(-20, 20)) * np.array([1.0, -1.0, 1.0])[:, None]
        landmarks = np.concatenate([rng.uniform(100, 300, (68, 2)), rng.normal(0, 20, (68, 1))], axis=1)
        truth = landmarks + true_offsets @ jacobian.T
        truth[:, :2] += rng.normal(0, noise_px, (68, 2))
        samples.append(CalibrationSample(landmarks, jacobian, truth, float(yaw)))
    return samples


def _symmetric_offsets(topology, seed: int = 1) -> np.ndarray:
    basis = symmetric_basis(topology)
    return np.einsum("p,pkb->kb", np.random.default_rng(seed).normal(0, 0.01, len(basis)), basis)


def test_basis_ties_mirror_partners_and_keeps_the_midline(topology):
    basis = symmetric_basis(topology)
    partner = topology.landmark_mirror
    midline = int((partner == np.arange(68)).sum())
    assert basis.shape == (3 * (68 - midline) // 2 + 2 * midline, 68, 3)
    for pattern in basis:
        np.testing.assert_array_equal(pattern[partner] * FLIP_X, pattern)  # mirror-symmetric offsets
    assert np.linalg.matrix_rank(basis.reshape(len(basis), -1)) == len(basis)


def test_fit_recovers_the_offsets_that_moved_the_annotations(topology):
    truth = _symmetric_offsets(topology)
    fitted = fit_offsets(_samples(truth, count=12, noise_px=0.0), symmetric_basis(topology))
    np.testing.assert_allclose(fitted, truth, atol=1e-6)


def test_held_out_figures_come_from_fits_without_the_scored_images(topology):
    truth = _symmetric_offsets(topology)
    samples = _samples(truth, count=40, noise_px=3.0)
    # The samples were made by a model with offsets already: the fit starts from zero offsets.
    current = _symmetric_offsets(topology, seed=2)
    report = calibrate(samples, topology, current=current, folds=5)
    np.testing.assert_allclose(report.offsets - current, truth, atol=2e-3)
    assert report.before["nme2d_mean"] == pytest.approx(figures(samples, [np.zeros((68, 3))] * 40)["nme2d_mean"])
    assert report.uncalibrated["nme2d_mean"] != report.before["nme2d_mean"]
    assert report.in_sample["nme2d_binmean"] < report.before["nme2d_binmean"] / 2
    # Held-out fits see 4/5 of the images, so they score a little worse than the in-sample fit.
    assert report.in_sample["nme2d_mean"] < report.held_out["nme2d_mean"] < report.before["nme2d_mean"] / 2
    assert report.folds == 5 and report.held_out["n"] == 40


def test_calibration_needs_two_images_and_two_folds(topology):
    samples = _samples(np.zeros((68, 3)), count=3, noise_px=1.0)
    with pytest.raises(ValueError, match="at least 2 annotated images"):
        calibrate(samples[:1], topology, np.zeros((68, 3)))
    with pytest.raises(ValueError, match="folds must be at least 2"):
        calibrate(samples, topology, np.zeros((68, 3)), folds=1)


def test_calibrated_model_moves_the_landmarks_as_the_network_would(face_model, onnx_model, tmp_path):
    torch = pytest.importorskip("torch")
    offsets = _symmetric_offsets(FaceReconstructor(onnx_model).topology)
    out = tmp_path / "calibrated.onnx"
    np.testing.assert_array_equal(read_offsets(onnx_model), np.zeros((68, 3)))
    write_calibrated_model(onnx_model, offsets, out, "a test set")
    np.testing.assert_allclose(read_offsets(out), offsets, atol=1e-8)
    before, after = FaceReconstructor(onnx_model, threads=1), FaceReconstructor(out, threads=1)
    assert after.metadata.landmark_calibration == "a test set"
    assert before.metadata.landmark_calibration == "none"
    crop, _ = crop_face(rendered_face()[0], (60, 60, 196, 196), before.input_size)
    plain, calibrated = before.run(crop[None]), after.run(crop[None])
    np.testing.assert_array_equal(plain["posed_vertices"], calibrated["posed_vertices"])
    with torch.no_grad():
        face_model.landmark_offsets.copy_(torch.as_tensor(offsets, dtype=torch.float32))
        expected = face_model(torch.as_tensor(crop.transpose(2, 0, 1)[None] / 255.0, dtype=torch.float32))
        face_model.landmark_offsets.zero_()
    np.testing.assert_allclose(calibrated["landmarks_3d"], expected.landmarks_3d.numpy(), atol=2e-3)
    assert np.abs(calibrated["landmarks_2d"] - plain["landmarks_2d"]).max() > 1.0


def test_model_without_the_offsets_tensor_is_a_clear_error(onnx_model, tmp_path, capsys):
    graph = onnx.load(str(onnx_model))
    for tensor in graph.graph.initializer:
        if tensor.name == LANDMARK_OFFSETS:
            tensor.name = "renamed"
    for node in graph.graph.node:
        for k, name in enumerate(node.input):
            if name == LANDMARK_OFFSETS:
                node.input[k] = "renamed"
    legacy = tmp_path / "legacy.onnx"
    onnx.save(graph, str(legacy))
    folder = _annotated_folder(tmp_path)
    assert main(["calibrate-landmarks", "--aflw2000", str(folder), "--model", str(legacy),
                 "--out", str(tmp_path / "out.onnx")]) == 2
    assert "re-export" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()


def _annotated_folder(tmp_path):
    """Three copies of the rendered template face, annotated with its landmarks moved outward
    and down a little (another annotation convention), in the AFLW2000-3D layout."""
    from PIL import Image

    image, landmarks = rendered_face()
    root = tmp_path / "annotated"
    (root / "images").mkdir(parents=True)
    centre = landmarks.mean(axis=0)
    names, points = [], []
    for i in range(3):
        name = f"image{i:05d}.jpg"
        Image.fromarray(image).save(root / "images" / name)
        moved = centre + (landmarks - centre) * 1.08 + [0.0, 2.0]
        points.append(np.concatenate([moved, np.zeros((68, 1))], axis=1).T)
        names.append(name)
    np.savez(root / "gt.npz", names=np.array(names), pts68=np.stack(points).astype(np.float32),
             yaw_deg=np.zeros(3, np.float32))
    return root


def test_cli_fits_reports_and_writes_a_model_that_evaluates_as_reported(onnx_model, tmp_path, capsys):
    folder = _annotated_folder(tmp_path)
    out = tmp_path / "calibrated.onnx"
    assert main(["calibrate-landmarks", "--aflw2000", str(folder), "--model", str(onnx_model), "--out", str(out),
                 "--folds", "3"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["images"] == 3 and report["folds"] == 3
    assert report["in_sample"]["nme2d_mean"] < report["before"]["nme2d_mean"]
    assert "annotated (3 images)" in captured.err
    assert ModelMetadata.from_properties(
        {p.key: p.value for p in onnx.load(str(out)).metadata_props}).landmark_calibration == "annotated (3 images)"
    evaluated = evaluate_aflw(folder, FacePipeline(FaceReconstructor(out, threads=1), FaceDetector()), boxes="gt")
    assert evaluated["nme2d_mean"] == pytest.approx(report["in_sample"]["nme2d_mean"], abs=0.01)



def test_cli_writes_the_offsets_into_the_checkpoint_for_later_exports(face_model, topology, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from training.checkpoint import save_checkpoint

    checkpoint, exported, out = tmp_path / "last.pt", tmp_path / "exported.onnx", tmp_path / "calibrated.onnx"
    save_checkpoint(checkpoint, face_model, steps=40)
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(exported)]) == 0
    other = tmp_path / "other.pt"
    save_checkpoint(other, face_model, steps=41)
    folder = _annotated_folder(tmp_path)
    command = ["calibrate-landmarks", "--aflw2000", str(folder), "--model", str(exported), "--out", str(out),
               "--folds", "3", "--checkpoint"]
    assert main([*command, str(other)]) == 2  # not the checkpoint the model was exported from
    assert "not its checkpoint" in capsys.readouterr().err and not out.exists()
    assert main([*command, str(checkpoint)]) == 0
    assert f"and {checkpoint}" in capsys.readouterr().err
    data = torch.load(checkpoint, weights_only=True)
    assert data["landmark_calibration"] == "annotated (3 images)"
    np.testing.assert_array_equal(data["state_dict"]["landmark_offsets"].numpy(), read_offsets(out))
    again = tmp_path / "again.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(again)]) == 0
    np.testing.assert_array_equal(read_offsets(again), read_offsets(out))
    assert FaceReconstructor(again).metadata.landmark_calibration == "annotated (3 images)"
