"""Fit :class:`model.runtime.detector.BoxCalibration`: BlazeFace's box -> the reconstruction's face box.

The reconstruction network is trained on crops around the bounds of the 68 iBUG points taken
from MediaPipe FaceMesh (:func:`training.data.prepare.face_box`). The fit labels training photos the
same way and detects them with the uncalibrated ONNX detector, each photo as it is (a tight face
crop) and pasted into a 640x480 canvas with the face 10-60% of the canvas width (the photos the
service sees), because the full-range network barely fires on tight crops and box regression
drifts a little with face size. Per network it solves for the centre offset and the size ratios
in units of the detector box's side: least squares, which for this model is the mean of the
per-photo ratios. Only training photos are used, never the evaluation set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from model.runtime.detector import BoxCalibration, FaceDetector, box_iou
from training.tools.topology_builder import find_images

if TYPE_CHECKING:
    from training.tools.blazeface import Source

log = logging.getLogger(__name__)

MIN_MATCH_IOU = 0.3  # a detection overlapping the FaceMesh box less than this is another face
CANVAS = (640, 480)
FACE_WIDTH_FRACTION = (0.1, 0.6)

# Fitted when the shipped detector was built with
# `facerecon build-detector --source both --calibrate ../shared/data/train/utkface ../shared/data/train/lfw`.
# 2,913 (short) and 2,333 (full) views of 1,500 photos; RMS residual of the centre 0.047 / 0.085 and
# of the size 0.096 / 0.128 of the 68-point box side; mean IoU with it 0.871 / 0.805.
FITTED_CALIBRATIONS: dict[Source, BoxCalibration] = {
    "short": BoxCalibration(centre_x=-0.0025970670452714444, centre_y=0.0506384803207536,
                            width=0.900374582870973, height=0.8736286772073804),
    "full": BoxCalibration(centre_x=0.0074370289322133, centre_y=0.09378445618268615,
                           width=0.891898957609537, height=0.8656205248690297),
}


@dataclass(frozen=True)
class CalibrationFit:
    """One network's fitted calibration and how well it predicts the 68-point box on the fit's views.

    residual_centre / residual_size: RMS over views of the calibrated box's centre error
    (Euclidean) and size error (over width and height), in units of the true 68-point box's
    side sqrt(w * h); mean_iou: calibrated box vs true box (mean_iou_raw: BlazeFace's own box).
    """

    calibration: BoxCalibration
    views: int
    residual_centre: float
    residual_size: float
    mean_iou: float
    mean_iou_raw: float


@dataclass(frozen=True)
class LabelledBoxes:
    """Pairs over views: raw detector boxes (N, 4) and the FaceMesh 68-point boxes (N, 4)."""

    detected: np.ndarray
    target: np.ndarray


def sample_photos(image_dirs: list[Path], count: int, seed: int) -> list[Path]:
    files = find_images(image_dirs)
    if not files:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, image_dirs))}")
    rng = np.random.default_rng(seed)
    return [files[i] for i in sorted(rng.choice(len(files), min(count, len(files)), replace=False))]


def paste_into_canvas(photo: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scale photo (H, W, 3) so the face box (4,) is 10-60% of a 640x480 canvas wide (as far as the
    photo fits) and paste it at a random place on a smooth random background -> (canvas, box)."""
    width, height = CANVAS
    scale = rng.uniform(*FACE_WIDTH_FRACTION) * width / (box[2] - box[0])
    scale = min(scale, width / photo.shape[1], height / photo.shape[0])
    new_w, new_h = max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale))
    left, top = int(rng.integers(0, width - new_w + 1)), int(rng.integers(0, height - new_h + 1))
    cells = rng.integers(0, 256, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3), dtype=np.uint8)
    canvas = np.array(Image.fromarray(cells).resize(CANVAS, Image.Resampling.BICUBIC))
    canvas[top : top + new_h, left : left + new_w] = np.asarray(
        Image.fromarray(photo).resize((new_w, new_h), Image.Resampling.BILINEAR)
    )
    factors = np.array([new_w / photo.shape[1], new_h / photo.shape[0]] * 2)
    return canvas, box * factors + np.array([left, top, left, top])


def label_boxes(detector: FaceDetector, photos: list[Path], seed: int) -> dict[str, LabelledBoxes]:
    """FaceMesh-label each photo and detect it (and its pasted view) with each network of the
    uncalibrated detector; keep the detections that match the labelled face."""
    from training.data.landmarks import MediaPipeLabeler
    from training.data.prepare import face_box

    if any(branch.calibration != BoxCalibration() for branch in detector.metadata.branches):
        raise ValueError("fit the calibration with an uncalibrated detector (identity BoxCalibration)")
    rng = np.random.default_rng(seed)
    names = [branch.name for branch in detector.metadata.branches]
    pairs: dict[str, tuple[list, list]] = {name: ([], []) for name in names}
    with MediaPipeLabeler() as labeler:
        for path in photos:
            photo = np.asarray(Image.open(path).convert("RGB"))
            landmarks = labeler.label(photo)
            if landmarks is None:
                continue
            truth = np.array(face_box(landmarks))
            for image, box in ((photo, truth), paste_into_canvas(photo, truth, rng)):
                for name, faces in zip(names, detector.detect_per_branch(image)):
                    if not faces:
                        continue
                    ious = box_iou(box, np.array([face.box for face in faces]))
                    if ious.max() >= MIN_MATCH_IOU:
                        pairs[name][0].append(faces[int(ious.argmax())].box)
                        pairs[name][1].append(box)
    return {name: LabelledBoxes(np.array(found).reshape(-1, 4), np.array(target).reshape(-1, 4))
            for name, (found, target) in pairs.items()}


def _side(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> (N, 1) sqrt(w * h)."""
    return np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))[:, None]


def fit_boxes(pairs: LabelledBoxes) -> CalibrationFit:
    if len(pairs.detected) == 0:
        raise RuntimeError("no photo was both detected and labelled")
    side = _side(pairs.detected)
    offset = ((pairs.target[:, :2] + pairs.target[:, 2:]) - (pairs.detected[:, :2] + pairs.detected[:, 2:])) / 2 / side
    size = (pairs.target[:, 2:] - pairs.target[:, :2]) / side
    calibration = BoxCalibration(*(float(v) for v in np.concatenate([offset, size], axis=1).mean(axis=0)))
    calibrated = calibration.apply(pairs.detected)
    true_side = _side(pairs.target)
    centre_error = ((calibrated[:, :2] + calibrated[:, 2:]) - (pairs.target[:, :2] + pairs.target[:, 2:])) / 2
    size_error = (calibrated[:, 2:] - calibrated[:, :2]) - (pairs.target[:, 2:] - pairs.target[:, :2])
    return CalibrationFit(
        calibration=calibration,
        views=len(side),
        residual_centre=float(np.sqrt(np.mean(np.sum((centre_error / true_side) ** 2, axis=1)))),
        residual_size=float(np.sqrt(np.mean(np.sum((size_error / true_side) ** 2, axis=1)))),
        mean_iou=float(np.mean([box_iou(t, c[None])[0] for t, c in zip(pairs.target, calibrated)])),
        mean_iou_raw=float(np.mean([box_iou(t, d[None])[0] for t, d in zip(pairs.target, pairs.detected)])),
    )


def fit_calibration(detector: FaceDetector, image_dirs: list[Path], count: int = 1500,
                    seed: int = 0) -> dict[str, CalibrationFit]:
    """Fit each network of ``detector`` on ``count`` photos drawn (seeded) from ``image_dirs``."""
    photos = sample_photos(image_dirs, count, seed)
    log.info("labelling %d photos for the box calibration", len(photos))
    return {name: fit_boxes(pairs) for name, pairs in label_boxes(detector, photos, seed).items()}
