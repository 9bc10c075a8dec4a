"""Calibrate where the 68 iBUG landmarks sit on the mesh, against 3D-annotated 68-point data.

The mesh's landmark vertices come from MediaPipe's layout (:mod:`training.tools.topology_builder`);
the iBUG/AFLW2000-3D convention places some points elsewhere on the head, most of all the jaw:
its 3D-annotated jawline runs about 2 cm further back than MediaPipe's face oval. Each landmark is
therefore its vertex plus an offset (68, 3) in metres in the model frame (the exported graph's
``landmark_offsets``, see :class:`model.nn.face_model.FaceReconstructionModel`), posed with the face.

Offsets are tied left/right (a landmark's mirror partner gets the mirrored offset; landmarks on
the midline move only in y and z) and fitted to minimise the mean 2D landmark distance, normalised
as the NME, by iteratively reweighted least squares. Given the network's pose, every landmark is
linear in its offset, so the fit is exact and fast. A k-fold figure scores each image with offsets
fitted without it: the calibration's accuracy on images it has not seen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from model.conventions import points_box
from model.onnx_contract import LANDMARK_OFFSETS
from model.runtime.reconstructor import FaceReconstructor
from model.topology import FaceTopology
from training.evaluate import box_norm, load_aflw, nme, point_errors, summarise
from training.export.onnx_graph import replace_model_metadata

IRLS_ITERATIONS = 6
MIN_DISTANCE = 1e-4  # NME units: caps an IRLS weight


@dataclass
class CalibrationSample:
    """One annotated face as the current model sees it (photo pixels)."""

    landmarks: np.ndarray  # (68, 3) the model's landmarks: x, y and depth (larger nearer)
    jacobian: np.ndarray  # (3, 3) change of every landmark (x, y, depth) per metre of its offset, model frame
    truth: np.ndarray  # (68, 3) annotated x, y, z
    yaw_deg: float


@dataclass
class CalibrationReport:
    """Evaluate-style figures (see :func:`training.evaluate.summarise`) of one calibration."""

    offsets: np.ndarray  # (68, 3) metres: the fitted offsets
    uncalibrated: dict  # landmarks on their vertices (zero offsets)
    before: dict  # the model's current offsets
    in_sample: dict  # the fitted offsets, on the images they were fitted on
    held_out: dict  # each image with offsets fitted on the other folds only
    folds: int


def collect_samples(root: Path, reconstructor: FaceReconstructor) -> list[CalibrationSample]:
    """Reconstruct every annotated image of ``root`` (AFLW2000-3D layout) in its 68-point box."""
    from model.runtime.image_io import load_rgb

    samples = []
    for sample in load_aflw(root):
        (face,) = reconstructor.reconstruct(load_rgb(sample.path.read_bytes()), [points_box(sample.points)])
        pixels_per_metre = face.scale * face.crop.side / 2.0
        # posed = scale * R @ v + t; pixel x follows +x, pixel y follows -y, depth follows +z.
        jacobian = pixels_per_metre * face.rotation * np.array([1.0, -1.0, 1.0])[:, None]
        samples.append(CalibrationSample(face.landmarks_3d.astype(np.float64), jacobian, sample.points, sample.yaw_deg))
    return samples


def symmetric_basis(topology: FaceTopology) -> np.ndarray:
    """(P, 68, 3) offset patterns, one per free parameter, tied left/right by the mesh's mirror map."""
    partner = topology.landmark_mirror
    flip = np.array([-1.0, 1.0, 1.0])
    basis = []
    for i in range(68):
        if partner[i] < i:
            continue
        for axis in range(3):
            if partner[i] == i and axis == 0:
                continue  # a midline landmark stays on the midline
            pattern = np.zeros((68, 3))
            pattern[i, axis] = 1.0
            pattern[partner[i]] = pattern[i] * flip
            basis.append(pattern)
    return np.stack(basis)


def fit_offsets(samples: list[CalibrationSample], basis: np.ndarray) -> np.ndarray:
    """(68, 3) metres: the offsets, added to the samples' landmarks, that minimise their mean
    normalised 2D distance to the annotations."""
    rows, targets = [], []
    for s in samples:
        norm = box_norm(s.truth)
        rows.append(np.einsum("ab,pkb->kap", s.jacobian[:2], basis).reshape(-1, len(basis)) / norm)
        targets.append(((s.truth[:, :2] - s.landmarks[:, :2]) / norm).reshape(-1))
    a, b = np.concatenate(rows), np.concatenate(targets)
    weights = np.ones(len(b) // 2)
    for _ in range(IRLS_ITERATIONS):  # weights 1/distance turn squared distances into distances
        w = np.repeat(weights, 2)[:, None]
        params = np.linalg.lstsq(a * np.sqrt(w), b * np.sqrt(w[:, 0]), rcond=None)[0]
        distances = np.linalg.norm((a @ params - b).reshape(-1, 2), axis=1)
        weights = 1.0 / np.maximum(distances, MIN_DISTANCE)
    return np.einsum("p,pkb->kb", params, basis)


def figures(samples: list[CalibrationSample], offsets: list[np.ndarray]) -> dict:
    """Evaluate-style figures with ``offsets[i]`` (68, 3) added to sample i's landmarks."""
    errors_2d, errors_3d, points = [], [], []
    for s, offset in zip(samples, offsets):
        predicted = s.landmarks + offset @ s.jacobian.T
        e2, e3 = nme(predicted, s.truth)
        errors_2d.append(e2)
        errors_3d.append(e3)
        points.append(point_errors(predicted, s.truth))
    return summarise(errors_2d, errors_3d, [s.yaw_deg for s in samples], 0, points)


def calibrate(samples: list[CalibrationSample], topology: FaceTopology, current: np.ndarray,
              folds: int = 10, seed: int = 0) -> CalibrationReport:
    """Fit the offsets (68, 3) afresh on samples made with the ``current`` ones: the same data give
    the same offsets whatever the model held before. Scores them in-sample and ``folds``-fold held out."""
    if len(samples) < 2:
        raise ValueError(f"need at least 2 annotated images to calibrate, got {len(samples)}")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    folds = min(folds, len(samples))
    uncalibrated = [dataclasses.replace(s, landmarks=s.landmarks - current @ s.jacobian.T) for s in samples]
    basis = symmetric_basis(topology)
    offsets = fit_offsets(uncalibrated, basis)
    fold_of = np.random.default_rng(seed).permutation(len(samples)) % folds
    held_out = [offsets] * len(samples)
    for fold in range(folds):
        fitted = fit_offsets([s for s, f in zip(uncalibrated, fold_of) if f != fold], basis)
        for i in np.flatnonzero(fold_of == fold):
            held_out[i] = fitted
    n = len(samples)
    return CalibrationReport(
        offsets=offsets,
        uncalibrated=figures(uncalibrated, [np.zeros((68, 3))] * n),
        before=figures(uncalibrated, [current] * n),
        in_sample=figures(uncalibrated, [offsets] * n),
        held_out=figures(uncalibrated, held_out),
        folds=folds,
    )


def read_offsets(model_path: Path) -> np.ndarray:
    """(68, 3) metres: the ``landmark_offsets`` initializer of an exported model."""
    return numpy_helper.to_array(_offsets_initializer(onnx.load(str(model_path)))).astype(np.float64)


def write_calibrated_model(model_path: Path, offsets: np.ndarray, out: Path, source: str) -> None:
    """Copy the model at ``model_path`` to ``out`` with new landmark offsets (68, 3) and the
    calibration's ``source`` recorded in its metadata."""
    graph = onnx.load(str(model_path))
    tensor = _offsets_initializer(graph)
    tensor.CopyFrom(numpy_helper.from_array(offsets.astype(np.float32), LANDMARK_OFFSETS))
    replace_model_metadata(graph, landmark_calibration=source)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(out))


def _offsets_initializer(graph: onnx.ModelProto) -> onnx.TensorProto:
    for tensor in graph.graph.initializer:
        if tensor.name == LANDMARK_OFFSETS:
            return tensor
    raise ValueError(f"the model has no {LANDMARK_OFFSETS!r} tensor: re-export it with this version of facerecon")

