"""Training augmentation: the network's crop is cut from a stored crop with random similarity
jitter and mirroring, then photometric changes, blur and synthetic occluders.

Edge padding in the stored crops (where the photo ended) is replaced by random background, so
the network cannot key on it (UTKFace photos are tight crops). The returned ``photo_mask`` marks
pixels that show the real photo and are not occluded: the region image loss uses only those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from model.runtime.crop import DEFAULT_MARGIN


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random changes (all applied on the fly)."""

    output_size: int = 128
    margin: float = DEFAULT_MARGIN  # must match the crop the service makes around a face box
    scale_jitter: float = 0.10  # crop side x U(1 - j, 1 + j)
    shift_jitter: float = 0.06  # centre moves by U(-j, j) x crop side
    rotation_degrees: float = 25.0
    mirror_probability: float = 0.5
    colour_probability: float = 0.8
    grey_probability: float = 0.08
    blur_probability: float = 0.2
    occluder_probability: float = 0.3


@dataclass
class TrainingSample:
    """image (S, S, 3) uint8; landmarks (468, 2) crop pixels; photo_mask (S, S) bool."""

    image: np.ndarray
    landmarks: np.ndarray
    photo_mask: np.ndarray


def crop_matrix(landmarks: np.ndarray, face_box_points: np.ndarray, size: int, margin: float,
                scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0), angle_deg: float = 0.0) -> np.ndarray:
    """2x3 affine from stored-crop pixels to network-crop pixels.

    The nominal crop is the square of side margin x the face box's longer side around its
    centre (as :func:`model.runtime.crop.square_box`), then scaled, shifted (in crop sides) and rotated.
    """
    lo, hi = face_box_points.min(axis=0), face_box_points.max(axis=0)
    side = margin * float(max(hi - lo)) * scale
    centre = (lo + hi) / 2 + np.asarray(shift) * side
    k = size / side
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta) * k, math.sin(theta) * k
    # p' = k R (p - centre) + size / 2
    return np.array(
        [[cos, -sin, size / 2 - cos * centre[0] + sin * centre[1]],
         [sin, cos, size / 2 - sin * centre[0] - cos * centre[1]]],
        dtype=np.float64,
    )


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour field (size, size, 3) uint8."""
    cells = int(rng.integers(2, 9))
    low = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    field = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    field += rng.normal(0, rng.uniform(0, 12), field.shape)
    return np.clip(field, 0, 255).astype(np.uint8)


def _colour_jitter(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    out = image.astype(np.float32) / 255.0
    if rng.random() < config.colour_probability:
        out = out * rng.uniform(0.6, 1.4) + rng.uniform(-0.15, 0.15)  # contrast / brightness
        grey = out.mean(axis=2, keepdims=True)
        out = grey + (out - grey) * rng.uniform(0.5, 1.5)  # saturation
        out = out * rng.uniform(0.85, 1.15, 3)  # white balance
        out = np.clip(out, 0, 1) ** rng.uniform(0.7, 1.4)  # gamma
    if rng.random() < config.grey_probability:
        out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
    return np.clip(out * 255.0, 0, 255).astype(np.uint8)


def _occluder(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A random ellipse or rectangle: mask (size, size) bool and its fill (size, size, 3) uint8."""
    mask = np.zeros((size, size), np.uint8)
    centre = rng.uniform(0.15, 0.85, 2) * size
    axes = rng.uniform(0.08, 0.3, 2) * size
    if rng.random() < 0.5:
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        p0, p1 = (centre - axes).astype(int), (centre + axes).astype(int)
        cv2.rectangle(mask, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 1, -1)
    return mask.astype(bool), random_background(rng, size)


def augment(stored: np.ndarray, landmarks: np.ndarray, valid: np.ndarray, mirror: np.ndarray,
            face_box_indices: np.ndarray, rng: np.random.Generator, config: AugmentConfig,
            train: bool = True) -> TrainingSample:
    """stored (H, W, 3) uint8 crop, landmarks (468, 2+) in its pixels, valid (4,) photo rectangle,
    mirror (468,) left/right landmark map -> one network input with targets.

    With ``train=False`` the crop is the nominal one with no random change (validation).
    """
    size = config.output_size
    points = landmarks[:, :2].astype(np.float64)
    if train:
        scale = rng.uniform(1 - config.scale_jitter, 1 + config.scale_jitter)
        shift = tuple(rng.uniform(-config.shift_jitter, config.shift_jitter, 2))
        angle = rng.uniform(-config.rotation_degrees, config.rotation_degrees)
    else:
        scale, shift, angle = 1.0, (0.0, 0.0), 0.0
    matrix = crop_matrix(points, points[face_box_indices], size, config.margin, scale, shift, angle)
    image = cv2.warpAffine(stored, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    photo = np.zeros(stored.shape[:2], np.uint8)
    x0, y0, x1, y1 = np.round(valid).astype(int)
    photo[max(y0, 0) : y1, max(x0, 0) : x1] = 1
    photo_mask = cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
    target = points @ matrix[:, :2].T + matrix[:, 2]
    if train:
        if not photo_mask.all():
            image = np.where(photo_mask[..., None], image, random_background(rng, size))
        if rng.random() < config.mirror_probability:
            image = image[:, ::-1].copy()
            photo_mask = photo_mask[:, ::-1].copy()
            target = target[mirror] * np.array([-1.0, 1.0]) + np.array([size, 0.0])
        image = _colour_jitter(image, rng, config)
        if rng.random() < config.blur_probability:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
        if rng.random() < config.occluder_probability:
            occluded, fill = _occluder(rng, size)
            image = np.where(occluded[..., None], fill, image)
            photo_mask = photo_mask & ~occluded
    return TrainingSample(image=np.ascontiguousarray(image), landmarks=target.astype(np.float32), photo_mask=photo_mask)
