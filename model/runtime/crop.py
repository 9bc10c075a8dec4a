"""Square face crops for the network, and the map from crop pixels back to the photo."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

DEFAULT_MARGIN = 1.3  # crop side = margin * the longer side of the face box


@dataclass(frozen=True)
class CropTransform:
    """Axis-aligned square crop: photo pixel = origin + crop pixel * (side / size)."""

    origin_x: float
    origin_y: float
    side: float  # photo pixels covered by the crop
    size: int  # crop pixels

    @property
    def pixels_per_crop_pixel(self) -> float:
        return self.side / self.size

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels (..., 2) or (..., 3) (x, y[, depth]) -> photo pixels, depth rescaled alike."""
        out = points * self.pixels_per_crop_pixel
        out[..., 0] += self.origin_x
        out[..., 1] += self.origin_y
        return out


def square_box(box: tuple[float, float, float, float], margin: float = DEFAULT_MARGIN) -> tuple[float, float, float]:
    """Face box (x1, y1, x2, y2) -> square (origin_x, origin_y, side) centred on it."""
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"empty box {box}: need x1 < x2 and y1 < y2")
    side = margin * max(x2 - x1, y2 - y1)
    return 0.5 * (x1 + x2) - side / 2, 0.5 * (y1 + y2) - side / 2, side


def crop_face(image: np.ndarray, box: tuple[float, float, float, float], size: int,
              margin: float = DEFAULT_MARGIN) -> tuple[np.ndarray, CropTransform]:
    """Cut the square around ``box`` out of image (H, W, 3) uint8 and resize it to (size, size, 3).

    Antialiased (PIL's resampling filters widen when downscaling). Parts of the square outside
    the photo are filled by replicating the photo's edge pixels, so the network never sees an
    artificial border colour.
    """
    origin_x, origin_y, side = square_box(box, margin)
    height, width = image.shape[:2]
    if origin_x >= width or origin_y >= height or origin_x + side <= 0 or origin_y + side <= 0:
        raise ValueError(f"box {box} lies outside the {width}x{height} image")
    pad = math.ceil(max(0.0, -origin_x, -origin_y, origin_x + side - width, origin_y + side - height))
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    left, top = origin_x + pad, origin_y + pad
    crop = Image.fromarray(image).resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
    )
    return np.asarray(crop), CropTransform(origin_x, origin_y, side, size)
