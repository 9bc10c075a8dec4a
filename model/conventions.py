"""The words every layer shares, defined once (numpy only): face boxes, which faces to take,
which mesh space to answer in, and crop NDC -> crop pixels.

Photo and crop pixels: x right, y down, (0, 0) the top-left corner, pixel centres at +0.5.
NDC of a crop of S pixels: x right, y up, both in [-1, 1] across the crop; depth z toward the
camera, in the same units as x.
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


class FaceSelection(str, Enum):
    """Which detected faces of a photo to reconstruct."""

    largest = "largest"  # the face with the largest detection box
    all = "all"  # every detected face, best score first (up to a limit)


class MeshSpace(str, Enum):
    """The frame a mesh is answered in (see :meth:`model.runtime.reconstructor.FaceResult.vertices`)."""

    image = "image"  # posed as in the photo
    canonical = "canonical"  # frontal, pose removed
    neutral = "neutral"  # frontal, expression removed too


def parse_box(text: str) -> Box:
    """``"x1,y1,x2,y2"`` -> a box of four finite numbers with x1 < x2 and y1 < y2.

    Raises ValueError with a message fit for the user (the text is quoted at most 64 characters).
    """
    parts = text.split(",")
    shown = repr(text[:64])
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise ValueError(f"box must be four numbers 'x1,y1,x2,y2', got {shown}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"box must be four numbers 'x1,y1,x2,y2', got {shown}")
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"box needs x1 < x2 and y1 < y2, got {shown}")
    return x1, y1, x2, y2


def points_box(points: np.ndarray) -> Box:
    """Bounding box (x1, y1, x2, y2) of points (N, 2+) (only x and y are read)."""
    (x1, y1), (x2, y2) = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


def box_area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def ndc_to_pixels(ndc: np.ndarray, size: int) -> np.ndarray:
    """Crop NDC (..., 3) -> crop pixels (..., 3): x, y and depth (larger nearer), all in pixels.

    The numpy twin of :func:`model.nn.geometry.ndc_to_screen`.
    """
    half = size / 2.0
    return np.stack([(ndc[..., 0] + 1.0) * half, (1.0 - ndc[..., 1]) * half, ndc_depth_to_pixels(ndc[..., 2], size)],
                    axis=-1)


def ndc_depth_to_pixels(depth: np.ndarray, size: int) -> np.ndarray:
    """Crop NDC depth (...) -> depth in crop pixels (...), larger nearer: :func:`ndc_to_pixels`' third
    coordinate alone."""
    return depth * (size / 2.0)
