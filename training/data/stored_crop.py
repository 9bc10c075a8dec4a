"""The stored crops of the training data (:mod:`training.data.prepare`): the square around a face
resized with Pillow's antialiased bilinear filter, as the shipped model's training data was made.

The network's own input crops at serve time are :func:`model.runtime.crop.crop_face`'s (a
power-of-two block reduction, a Gaussian and a bilinear resample: 0.10 against 0.47 ms); a stored
crop is an archive that training later warps with jitter, so it keeps Pillow's resize, and the
same photos prepare into the same bytes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from model.runtime.crop import CropTransform, square_box

_BAND_PIXELS = 1 << 20  # pixels of one band put through the first pass at a time (3 + 4 MiB)


@dataclass(frozen=True)
class _Axis:
    """One axis of the crop, in the coordinates of the photo padded by ``pad`` on each side (the
    whole padded photo that the crop was once cut from): Pillow's resampling reads [lo, hi) of
    it, and the square spans [start, end) counted from ``lo``."""

    start: float
    end: float
    lo: int
    hi: int


def _axis(origin: float, side: float, pad: int, length: int, size: int) -> _Axis:
    """Where the crop reads along one axis of a photo ``length`` pixels long.

    Pillow's bilinear resize reads, for output pixel ``i``, the input pixels within ``support``
    of ``start + (i + 0.5) * scale``, clipped to the input. [lo, hi) holds them all and is
    clipped only where the padded photo ends, so Pillow computes the coefficients it computed on
    the whole padded photo: it takes the box edges as float32, and an integer shift of a float32
    keeps each of its sums exact (for the power-of-two crop sizes of the network).
    """
    start = float(np.float32(origin + pad))
    end = float(np.float32(origin + pad + side))
    support = max(float(np.float32(end) - np.float32(start)) / size, 1.0)  # bilinear: 1, widened when reducing
    lo = max(0, math.floor(start - support) - 1)
    hi = min(length + 2 * pad, math.ceil(end + support) + 2)
    return _Axis(start - lo, end - lo, lo, hi)


@functools.cache
def _pillow_reorders_passes() -> bool:
    """Whether this Pillow may resize down the columns first (Pillow 13 does; before, always along the
    rows first): told by one small resize of an image much taller than wide."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 100), dtype=np.uint8))
    box, bilinear = (3.3, 4.7, 50.1, 51.5), Image.Resampling.BILINEAR
    fused = image.resize((128, 128), bilinear, box=box)
    rows = image.resize((128, 200), bilinear, box=(box[0], 0, box[2], 200))
    rows_first = rows.resize((128, 128), bilinear, box=(0, box[1], 128, box[3]))
    return not np.array_equal(np.asarray(fused), np.asarray(rows_first))


def _vertical_first(width: int, height: int, size: int) -> bool:
    """Whether Pillow resizes a ``width`` x ``height`` image to ``size`` x ``size`` down the columns
    first: Pillow 13 does when the height shrinks by more than twice what the width does (found on
    1,500 random resizes; tests/model/runtime/test_crop.py checks it against this Pillow)."""
    return _pillow_reorders_passes() and height > size and height - size > 2 * (width - size)


def _padded(image: np.ndarray, pad: int, rows: tuple[int, int], cols: tuple[int, int], out: np.ndarray) -> None:
    """Write the padded photo's rows [rows) x columns [cols) (edge pixels repeated) into ``out``."""
    height, width = image.shape[:2]
    r0, r1 = min(max(rows[0] - pad, 0), height - 1), max(min(rows[1] - pad, height), 1)
    c0, c1 = min(max(cols[0] - pad, 0), width - 1), max(min(cols[1] - pad, width), 1)
    top, left = r0 + pad - rows[0], c0 + pad - cols[0]  # where photo pixel (r0, c0) lands
    body = out[max(top, 0) : top + r1 - r0]
    source = image[r0 + max(-top, 0) : r1]
    body[:, max(left, 0) : left + c1 - c0] = source[:, c0 + max(-left, 0) : c1]
    body[:, : max(left, 0)] = source[:, c0 : c0 + 1]
    body[:, max(left + c1 - c0, 0) :] = source[:, c1 - 1 : c1]
    out[: max(top, 0)] = body[:1]
    out[max(top + r1 - r0, 0) :] = body[-1:]


def stored_crop(image: np.ndarray, box: tuple[float, float, float, float], size: int, margin: float
                ) -> tuple[np.ndarray, CropTransform]:
    """Cut the square around ``box`` out of image (H, W, 3) uint8 and resize it to (size, size, 3).

    Antialiased (PIL's resampling filters widen when downscaling). Parts of the square outside
    the photo are filled by replicating the photo's edge pixels, so the network never sees an
    artificial border colour.

    The pixels are exactly those of padding the whole photo by the square's overhang and resizing
    the square out of it with Pillow, but nothing of that size is built. The window Pillow reads
    (the square and its filter's reach), when it has at most ``_BAND_PIXELS`` pixels (every face
    of an ordinary photo) and Pillow takes its passes in the same order for it as for the whole
    padded photo, is padded into one array and resized in one call. Otherwise: Pillow resizes in
    two passes, one axis and then the other, rounding to 8 bits in between; here the first pass
    runs on the photo's own rows (or columns) under the square, a band at a time, each band padded
    along that axis, into a strip ``size`` pixels across whose rows (columns) beyond the photo
    repeat its edge ones, and the second pass runs on the strip. Memory: the strip (``7 * size``
    bytes per pixel of the square's side, as numpy and as Pillow image) and one band of at most
    ``_BAND_PIXELS`` pixels, wherever the square lies.
    """
    origin_x, origin_y, side = square_box(box, margin)
    height, width = image.shape[:2]
    if origin_x >= width or origin_y >= height or origin_x + side <= 0 or origin_y + side <= 0:
        raise ValueError(f"box {box} lies outside the {width}x{height} image")
    pad = math.ceil(max(0.0, -origin_x, -origin_y, origin_x + side - width, origin_y + side - height))
    bilinear = Image.Resampling.BILINEAR
    cols = _axis(origin_x, side, pad, width, size)
    rows = _axis(origin_y, side, pad, height, size)
    vertical_first = _vertical_first(width + 2 * pad, height + 2 * pad, size)
    window_rows, window_cols = rows.hi - rows.lo, cols.hi - cols.lo
    if (window_rows * window_cols <= _BAND_PIXELS
            and _vertical_first(window_cols, window_rows, size) == vertical_first):
        # A window of one band that Pillow resizes in the same pass order: both passes in one call.
        window = np.empty((window_rows, window_cols, 3), np.uint8)
        _padded(image, pad, (rows.lo, rows.hi), (cols.lo, cols.hi), window)
        crop = Image.fromarray(window).resize((size, size), bilinear, box=(cols.start, rows.start, cols.end, rows.end))
    elif not vertical_first:
        # Along the rows: the photo rows [r0, r1) under the window, then down the strip's columns.
        r0, r1 = max(rows.lo - pad, 0), min(rows.hi - pad, height)
        across = cols.hi - cols.lo
        strip = np.empty((rows.hi - rows.lo, size, 3), np.uint8)
        count = max(1, min(_BAND_PIXELS // across, r1 - r0))
        band = np.empty((count, across, 3), np.uint8)
        for top in range(r0, r1, count):
            n = min(count, r1 - top)
            _padded(image, pad, (top + pad, top + pad + n), (cols.lo, cols.hi), band[:n])
            resized = Image.fromarray(band[:n]).resize((size, n), bilinear, box=(cols.start, 0, cols.end, n))
            strip[top + pad - rows.lo : top + pad - rows.lo + n] = np.asarray(resized)
        strip[: r0 + pad - rows.lo] = strip[r0 + pad - rows.lo]
        strip[r1 + pad - rows.lo :] = strip[r1 + pad - rows.lo - 1]
        crop = Image.fromarray(strip).resize((size, size), bilinear, box=(0, rows.start, size, rows.end))
    else:
        # Down the photo columns [c0, c1) under the window, then along the strip's rows.
        c0, c1 = max(cols.lo - pad, 0), min(cols.hi - pad, width)
        down = rows.hi - rows.lo
        strip = np.empty((size, cols.hi - cols.lo, 3), np.uint8)
        count = max(1, min(_BAND_PIXELS // down, c1 - c0))
        band = np.empty((down, count, 3), np.uint8)
        for left in range(c0, c1, count):
            n = min(count, c1 - left)
            part = band if n == count else np.empty((down, n, 3), np.uint8)
            _padded(image, pad, (rows.lo, rows.hi), (left + pad, left + pad + n), part)
            resized = Image.fromarray(part).resize((n, size), bilinear, box=(0, rows.start, n, rows.end))
            strip[:, left + pad - cols.lo : left + pad - cols.lo + n] = np.asarray(resized)
        strip[:, : c0 + pad - cols.lo] = strip[:, c0 + pad - cols.lo : c0 + pad - cols.lo + 1]
        strip[:, c1 + pad - cols.lo :] = strip[:, c1 + pad - cols.lo - 1 : c1 + pad - cols.lo]
        crop = Image.fromarray(strip).resize((size, size), bilinear, box=(cols.start, 0, cols.end, size))
    return np.asarray(crop), CropTransform(origin_x, origin_y, side, size)
