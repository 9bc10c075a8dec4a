"""Colours for exported meshes, taken from the photo (numpy only, no torch).

Image points are photo pixels: x to the right, y down, pixel centres at +0.5. Texture row 0 is
the top of the texture (v = 1), as in glTF and PNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_DILATION_STEPS = 8


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample image (H, W, C) at pixel coordinates x, y (N,) -> (N, C) float, clamped at borders."""
    height, width = image.shape[:2]
    fx = np.clip(x - 0.5, 0.0, width - 1.0)
    fy = np.clip(y - 0.5, 0.0, height - 1.0)
    x0 = np.minimum(np.floor(fx).astype(np.int64), width - 2 if width > 1 else 0)
    y0 = np.minimum(np.floor(fy).astype(np.int64), height - 2 if height > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    ax, ay = (fx - x0)[:, None], (fy - y0)[:, None]
    img = image.astype(np.float32)
    top = img[y0, x0] * (1 - ax) + img[y0, x1] * ax
    bottom = img[y1, x0] * (1 - ax) + img[y1, x1] * ax
    return top * (1 - ay) + bottom * ay


def sample_vertex_colors(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """image (H, W, 3) uint8, points (V, 2) photo pixels -> (V, 3) uint8 colours (bilinear)."""
    return np.clip(np.rint(_bilinear(image, points[:, 0], points[:, 1])), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class UVRasterMap:
    """Which triangle covers each texel of a UV layout, and where: built once per topology.

    face_index (T, T) int64, -1 outside the layout; bary (T, T, 3) float32.
    """

    face_index: np.ndarray
    bary: np.ndarray

    @property
    def size(self) -> int:
        return int(self.face_index.shape[0])

    @classmethod
    def build(cls, uvs: np.ndarray, faces: np.ndarray, size: int) -> "UVRasterMap":
        """Rasterise the layout uvs (V, 2) in [0, 1], faces (F, 3) at size x size texels."""
        xy = np.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size], axis=1).astype(np.float64)
        corners = xy[faces]  # (F, 3, 2)
        lo, hi = corners.min(axis=1), corners.max(axis=1)
        c0 = np.clip(np.ceil(lo[:, 0] - 0.5), 0, None).astype(np.int64)
        c1 = np.clip(np.floor(hi[:, 0] - 0.5), None, size - 1).astype(np.int64)
        r0 = np.clip(np.ceil(lo[:, 1] - 0.5), 0, None).astype(np.int64)
        r1 = np.clip(np.floor(hi[:, 1] - 0.5), None, size - 1).astype(np.int64)
        box_w, box_h = np.clip(c1 - c0 + 1, 0, None), np.clip(r1 - r0 + 1, 0, None)
        counts = box_w * box_h
        tri = np.repeat(np.arange(len(faces)), counts)
        local = np.arange(tri.size) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = c0[tri] + local % box_w[tri]
        rows = r0[tri] + local // box_w[tri]
        px, py = cols + 0.5, rows + 0.5
        (x0, y0), (x1, y1), (x2, y2) = (corners[tri, k].T for k in range(3))
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        with np.errstate(divide="ignore", invalid="ignore"):
            weights = np.stack(
                [
                    (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1),
                    (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2),
                    (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0),
                ],
                axis=1,
            ) / area[:, None]
        inside = (np.abs(area) > 1e-12) & np.all(weights >= -1e-7, axis=1)
        face_index = np.full((size, size), -1, dtype=np.int64)
        bary = np.zeros((size, size, 3), dtype=np.float32)
        face_index[rows[inside], cols[inside]] = tri[inside]
        bary[rows[inside], cols[inside]] = weights[inside]
        return cls(face_index=face_index, bary=bary)


def _fill_holes(texture: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Grow filled texels (T, T) into empty ones by neighbour averaging for a few steps (so
    seams and mip-maps do not show the background), then paint the rest the mean colour."""
    texture = texture.astype(np.float32)
    filled = filled.copy()
    for _ in range(_DILATION_STEPS):
        if filled.all():
            break
        padded = np.pad(texture * filled[..., None], ((1, 1), (1, 1), (0, 0)))
        weight = np.pad(filled.astype(np.float32), 1)
        total = sum(padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        count = sum(weight[1 + dy : weight.shape[0] - 1 + dy, 1 + dx : weight.shape[1] - 1 + dx]
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        grow = (~filled) & (count > 0)
        texture[grow] = total[grow] / count[grow][:, None]
        filled |= grow
    if filled.any():
        texture[~filled] = texture[filled].mean(axis=0)
    return np.clip(np.rint(texture), 0, 255).astype(np.uint8)


def bake_uv_texture(image: np.ndarray, image_points: np.ndarray, faces: np.ndarray, uv_map: UVRasterMap,
                    visible: np.ndarray | None = None) -> np.ndarray:
    """Texture (T, T, 3) uint8 sampled from the photo (H, W, 3) uint8.

    image_points (V, 2): where each mesh vertex lies in the photo. Every texel of the layout
    takes the photo colour at the point its triangle maps it to. With ``visible`` (V,) bool,
    triangles with no visible corner are not sampled; they take colours grown from the
    visible texels around them instead of whatever the photo shows there.
    """
    covered = uv_map.face_index >= 0
    if visible is not None:
        covered &= visible[faces[np.clip(uv_map.face_index, 0, None)]].any(axis=-1)
    texel_faces = uv_map.face_index[covered]
    points = np.einsum("nk,nkd->nd", uv_map.bary[covered], image_points[faces[texel_faces]].astype(np.float64))
    texture = np.zeros((uv_map.size, uv_map.size, 3), dtype=np.float32)
    texture[covered] = _bilinear(image, points[:, 0], points[:, 1])
    return _fill_holes(texture, covered)
