"""Compiled loops of the face detector's input and output (numba, :mod:`model.compiled`): work that
Pillow or numpy can only do after copying the photo into their own layout, or as a series of
whole-array operations, each with its own call overhead."""

from __future__ import annotations

import numpy as np

from model.compiled import njit


@njit(nogil=True)
def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """image (H, W, 3) uint8 -> (ceil(H / factor), ceil(W / factor), 3) uint8: each pixel the mean of a
    ``factor x factor`` block (of the pixels a last, cut block holds), the same numbers as Pillow's
    ``Image.reduce`` (its fixed-point rounding, :func:`_divide`), so that the detector sees the
    inputs its box calibration was fitted on.

    One pass over the photo: the rows of a band of blocks summed into one line (a loop the compiler
    vectorises), then each block's columns of that line; a 640x480 photo by 5 in 0.13 ms, where
    handing the array to Pillow and its ``reduce`` took 0.4."""
    height, width = image.shape[0], image.shape[1]
    rows, cols, whole = -(-height // factor), -(-width // factor), width // factor
    flat = image.reshape(height, width * 3)
    line = np.empty(width * 3, np.uint32)
    sums = np.empty(cols * 3, np.uint32)
    out = np.empty((rows, cols * 3), np.uint8)
    for row in range(rows):
        top = row * factor
        bottom = min(top + factor, height)
        for j in range(width * 3):
            line[j] = 0
        for y in range(top, bottom):
            for j in range(width * 3):
                line[j] += np.uint32(flat[y, j])
        for col in range(cols):
            red = green = blue = np.uint32(0)  # three running sums, not one slot written per pixel
            for x in range(col * factor, min(col * factor + factor, width)):
                red += line[3 * x]
                green += line[3 * x + 1]
                blue += line[3 * x + 2]
            sums[3 * col], sums[3 * col + 1], sums[3 * col + 2] = red, green, blue
        _divide(sums[: 3 * whole], (bottom - top) * factor, out[row, : 3 * whole])
        _divide(sums[3 * whole :], (bottom - top) * (width - whole * factor), out[row, 3 * whole :])
    return out.reshape(rows, cols, 3)


@njit(nogil=True)
def _divide(sums: np.ndarray, count: int, out: np.ndarray) -> None:
    """out = the mean of ``count`` pixels from their ``sums``, as uint8, in Pillow's fixed point: the
    sum plus half the count, times 2**24 / count (truncated, computed in float32), shifted down by
    24 bits; that is the mean rounded half up, or at times 1 below it."""
    if count == 0:
        return
    half = np.int64(count // 2)
    scale = np.int64(np.float32(4294967296.0) / np.float32(256 * count))
    for j in range(len(sums)):
        out[j] = np.uint8(((np.int64(sums[j]) + half) * scale) >> 24)


@njit(nogil=True)
def weighted_suppression(scores: np.ndarray, boxes: np.ndarray, points: np.ndarray, order: np.ndarray,
                         iou_threshold: float, max_faces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-max suppression of the candidates ``order`` (M,) int64, best first.

    scores (N,), boxes (N, 4) x1, y1, x2, y2, points (N, P) -> F <= max_faces faces, best first:
    scores (F,), boxes (F, 4), points (F, P), float64. The best remaining candidate takes every
    remaining candidate that overlaps it by IoU > ``iou_threshold`` (itself included); the face's box
    and points are their score-weighted means, its score the best one's. A few microseconds, where
    the same in numpy operations took 0.1-0.2 ms. (The candidates come sorted: numba's own sort
    takes seconds to compile.)"""
    count, width = order.shape[0], points.shape[1]
    areas = np.empty(count)
    for i in range(count):
        c = order[i]
        areas[i] = (boxes[c, 2] - boxes[c, 0]) * (boxes[c, 3] - boxes[c, 1])
    remaining = np.ones(count, np.bool_)
    kept = min(count, max_faces)
    out_scores, out_boxes, out_points = np.empty(kept), np.zeros((kept, 4)), np.zeros((kept, width))
    found = 0
    for top in range(count):
        if found == kept:
            break
        if not remaining[top]:
            continue
        best = order[top]
        total = 0.0
        for i in range(top, count):
            c = order[i]
            if not remaining[i]:
                continue
            across = max(min(boxes[best, 2], boxes[c, 2]) - max(boxes[best, 0], boxes[c, 0]), 0.0)
            down = max(min(boxes[best, 3], boxes[c, 3]) - max(boxes[best, 1], boxes[c, 1]), 0.0)
            inter = across * down
            # itself always, even when degenerate (IoU 0 with itself)
            if i == top or inter / max(areas[top] + areas[i] - inter, 1e-12) > iou_threshold:
                remaining[i] = False
                weight = np.float64(scores[c])
                total += weight
                for k in range(4):
                    out_boxes[found, k] += weight * boxes[c, k]
                for k in range(width):
                    out_points[found, k] += weight * points[c, k]
        out_scores[found] = scores[best]
        for k in range(4):
            out_boxes[found, k] /= total
        for k in range(width):
            out_points[found, k] /= total
        found += 1
    return out_scores[:found], out_boxes[:found], out_points[:found]
