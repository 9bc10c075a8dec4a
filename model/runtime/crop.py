"""Square face crops for the network, and the map from crop pixels back to the photo.

A crop is the square around a face box, ``margin`` times the box's longer side, resampled to the
network's ``size`` x ``size`` input with OpenCV in three steps:

1. the photo is *reduced*: each pixel the mean of a k x k block of photo pixels, the blocks aligned
   to the photo's top-left corner, k the greatest power of two that leaves the square at least
   1.25 x ``size`` reduced pixels across (:func:`crop_reduction`; 1 for smaller squares);
2. the reduced photo is blurred by the Gaussian that brings the whole to the variance of the
   antialiased bilinear (triangle) filter that Pillow resizes with: r**2 / 6 reduced pixels**2 for
   what is left of the reduction, r = side / (k * size), less what the block means and the bilinear
   step hold (:func:`_blur_sigma`);
3. the reduced photo is resampled bilinearly at the crop's pixel centres, its edge pixels repeated
   beyond it (the network never sees an artificial border colour).

This stands in for Pillow's antialiased bilinear resize of the square, which the network was
evaluated with and its training crops are stored with (:mod:`training.data.stored_crop`): 0.10
against 0.47 ms for a dev photo's face, pixels 0.2-0.7 grey levels apart on average at scales
0.8-4.3. AFLW2000-3D dev NME per yaw bin, 68-point boxes 2.963 / 5.244 / 5.445 against 2.970 /
5.194 / 5.448, detected boxes 3.303 / 6.216 / 7.186 against 3.302 / 6.258 / 7.116 (noise of one
grey level added to the photo moves the Pillow crop's by as much: MODEL_CARD); held-out neutral
AUC 0.818 against 0.8175.

A photo decoded at a reduced scale already (libjpeg's DCT scaling: :func:`model.runtime.image_io.load_rgb`
with ``reduction``) is step 1 done, part of it, or more than it (the pipeline may decode a JPEG
with a given box reduced while the face keeps 3/4 of the network's input: the resample then
enlarges it): ``crop_face(..., reduction=d)`` reads an array whose pixel is a d x d block of the photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

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


# The block reduction leaves at least this much of the square's reduction to the blur and the
# resample: block means of k x k pixels and a bilinear resample alone blur as much as Pillow's filter
# does at sqrt(1.5) = 1.22, so from there on a Gaussian can make up the rest.
MIN_REST = 1.25


def crop_reduction(box: tuple[float, float, float, float], size: int, margin: float = DEFAULT_MARGIN) -> int:
    """k, the photo's block reduction for the crop of ``box``: the greatest power of two with
    side / k >= MIN_REST * size (1 for a square under MIN_REST times the crop)."""
    return _block_reduction(square_box(box, margin)[2], size)


def _block_reduction(side: float, size: int) -> int:
    """:func:`crop_reduction` for a square ``side`` photo pixels across."""
    return 1 << max(0, math.floor(math.log2(side / (MIN_REST * size))))


def _blur_sigma(rest: float, step: int) -> float:
    """The Gaussian's sigma (reduced pixels) that brings the block means of ``step`` x ``step`` photo
    pixels and the bilinear resample ``rest`` reduced pixels apart to the variance of Pillow's
    triangle filter, rest**2 / 6: the block means hold (1 - 1 / step**2) / 12, the resample 1 / 6
    (0 where they hold as much already)."""
    return math.sqrt(max(0.0, (rest**2 - 1.0) / 6.0 - (1.0 - 1.0 / step**2) / 12.0))


def _block_means(pixels: np.ndarray, k: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (ceil(h / k), ceil(w / k), 3) uint8: the rounded mean of each k x k block
    from the top-left corner; a block the bottom or right edge cuts is the mean of the pixels it has."""
    height, width = pixels.shape[:2]
    rows, cols = height // k, width // k
    out = np.empty((-(-height // k), -(-width // k), 3), np.uint8)
    if rows and cols:
        out[:rows, :cols] = cv2.resize(pixels[: rows * k, : cols * k], (cols, rows), interpolation=cv2.INTER_AREA)
    if cols < out.shape[1]:  # the last column of blocks, cut by the right edge
        strip = pixels[: rows * k, cols * k :].astype(np.float32)
        out[:rows, cols] = np.rint(strip.reshape(rows, k, -1, 3).mean(axis=(1, 2)))
    if rows < out.shape[0]:  # the last row of blocks, cut by the bottom edge (and the corner block)
        strip = pixels[rows * k :].astype(np.float32)
        out[rows, :cols] = np.rint(strip[:, : cols * k].reshape(strip.shape[0], cols, k, 3).mean(axis=(0, 2)))
        if cols < out.shape[1]:
            out[rows, cols] = np.rint(strip[:, cols * k :].mean(axis=(0, 1)))
    return out


def crop_face(image: np.ndarray, box: tuple[float, float, float, float], size: int,
              margin: float = DEFAULT_MARGIN, *, reduction: int = 1) -> tuple[np.ndarray, CropTransform]:
    """Cut the square around ``box`` (photo pixels) out of the photo and resample it to
    (size, size, 3) uint8 (module docstring), with its map back to photo pixels.

    ``image`` (H, W, 3) uint8 is the photo, or with ``reduction`` d > 1 the photo reduced by d (each
    pixel a d x d block, as libjpeg's DCT scaling decodes it). The work reads only the photo under
    the square (OpenCV reads the array's window in place) and allocates about the reduced square (under
    (2 * size + 4)**2 pixels), wherever the square lies: a huge box on a small photo reads the photo once.
    """
    origin_x, origin_y, side = square_box(box, margin)
    height, width = image.shape[:2]
    if (origin_x >= width * reduction or origin_y >= height * reduction
            or origin_x + side <= 0 or origin_y + side <= 0):
        raise ValueError(f"box {box} lies outside the {width * reduction}x{height * reduction} image")
    k = max(_block_reduction(side, size) // reduction, 1)  # the array's own reduction
    step = reduction * k  # photo pixels per reduced pixel
    # the reduced pixels the bilinear samples read: the square and one more on each side, within the photo
    first_col = min(max(math.floor(origin_x / step) - 1, 0), (width - 1) // k)
    first_row = min(max(math.floor(origin_y / step) - 1, 0), (height - 1) // k)
    end_col = max(min(math.ceil((origin_x + side) / step) + 1, -(-width // k)), first_col + 1)
    end_row = max(min(math.ceil((origin_y + side) / step) + 1, -(-height // k)), first_row + 1)
    window = image[first_row * k : end_row * k, first_col * k : end_col * k]
    reduced = _block_means(window, k) if k > 1 else window
    # crop pixel centre i + 0.5 -> photo x = origin + (i + 0.5) * side / size -> reduced x / step - 0.5
    per_pixel = side / size / step
    sigma = _blur_sigma(per_pixel, step)
    if sigma > 0.0:
        reduced = cv2.GaussianBlur(reduced, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    matrix = np.array([[per_pixel, 0.0, origin_x / step - first_col + 0.5 * per_pixel - 0.5],
                       [0.0, per_pixel, origin_y / step - first_row + 0.5 * per_pixel - 0.5]])
    crop = cv2.warpAffine(reduced, matrix, (size, size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return crop, CropTransform(origin_x, origin_y, side, size)
