"""Per-vertex colours and UV texture baking from the input photo (numpy only).

Conventions:

* Photo pixel coordinates: x right, y down, the centre of pixel ``(row, col)``
  is at ``(col + 0.5, row + 0.5)``.
* Texture space: ``u`` right, ``v`` up, both in ``[0, 1]``. Texture row 0 is the
  top of the image (``v = 1``); the centre of texel ``(row, col)`` of a ``T x T``
  texture is at ``u = (col + 0.5) / T``, ``v = 1 - (row + 0.5) / T``.

:class:`UVRasterMap` depends only on the UV layout and the texture size, so it
is built once and reused: baking a photo is then a handful of gathers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Texels outside the layout within this many texels (8-neighbour steps) of it
# copy a nearby layout texel, so bilinear filtering and mipmaps do not pull
# background colour into the seams. The rest of the texture is a plain fill.
DILATE_TEXELS = 4

# Candidate texels rasterised per batch by UVRasterMap.build (bounds memory).
_RASTER_BATCH = 1 << 21

# Barycentric tolerance: texel centres exactly on a shared edge belong to
# one of the two triangles, never to neither.
_INSIDE_EPS = 1e-9

# Dilation neighbours, the closer (edge-sharing) ones first so they win ties.
_NEIGHBOURS = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup, clamped at the borders.

    image (H, W, 3) uint8; x, y (N,) pixel coords (x right, y down, pixel centres at
    +0.5) -> (3, N) float32 channel planes in [0, 255].
    """
    height, width = image.shape[:2]
    flat = np.ascontiguousarray(image).reshape(-1)
    xs = np.clip(x.astype(np.float32) - 0.5, 0.0, width - 1)
    ys = np.clip(y.astype(np.float32) - 0.5, 0.0, height - 1)
    # top-left pixel of the 2 x 2 footprint (float32 throughout: an int operand
    # would promote the blend to float64); a weight of 1 reaches the last row / column
    x0 = np.minimum(np.floor(xs), max(width - 2, 0))
    y0 = np.minimum(np.floor(ys), max(height - 2, 0))
    fx = xs - x0
    fy = ys - y0
    base = (y0.astype(np.intp) * width + x0.astype(np.intp)) * 3
    right = 3 if width > 1 else 0
    down = 3 * width if height > 1 else 0
    planes = np.empty((3, len(base)), dtype=np.float32)
    for channel in range(3):
        # np.take on offset views of the flat image: no per-corner index arrays
        top_left = np.take(flat[channel:], base).astype(np.float32)
        top_right = np.take(flat[channel + right :], base)
        bottom_left = np.take(flat[channel + down :], base).astype(np.float32)
        bottom_right = np.take(flat[channel + down + right :], base)
        top = top_left + (top_right - top_left) * fx
        bottom = bottom_left + (bottom_right - bottom_left) * fx
        planes[channel] = top + (bottom - top) * fy
    return planes


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Float colour values in [0, 255] -> uint8 of the same shape, rounded."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")


def sample_vertex_colors(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Colour of the photo under each projected vertex.

    image (H, W, 3) uint8, points (V, 2) pixel coords (x right, y down, pixel
    centres at +0.5) -> (V, 3) uint8, bilinear, clamped at the borders.
    """
    _check_image(image)
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (V, 2), got {points.shape}")
    return _to_uint8(_bilinear(image, points[:, 0], points[:, 1]).T)


@dataclass
class UVRasterMap:
    """Which triangle covers each texel of a ``T x T`` texture, and where.

    Build it once per topology and texture size with :meth:`build`; it can
    also be rebuilt from stored ``face_index`` and ``bary`` arrays.

    Derived on construction, for :func:`bake_uv_texture`: ``texels`` (N,) flat
    indices of the covered texels, ``texel_faces`` (N,) their triangles,
    ``texel_bary`` (3, N) their barycentrics (one contiguous plane per
    triangle corner), ``ring_texels`` (R,) the dilation ring outside the layout
    and ``ring_sources`` (R,) the covered texel each ring texel copies.
    """

    face_index: np.ndarray  # (T, T) int, -1 outside the layout
    bary: np.ndarray  # (T, T, 3) float32, barycentrics w.r.t. the triangle's vertices
    texels: np.ndarray = field(init=False, repr=False)
    texel_faces: np.ndarray = field(init=False, repr=False)
    texel_bary: np.ndarray = field(init=False, repr=False)
    ring_texels: np.ndarray = field(init=False, repr=False)
    ring_sources: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        size = self.face_index.shape[0]
        if self.face_index.shape != (size, size) or self.bary.shape != (size, size, 3):
            raise ValueError(
                f"face_index must be (T, T) and bary (T, T, 3), got "
                f"{self.face_index.shape} and {self.bary.shape}"
            )
        flat_faces = self.face_index.reshape(-1)
        covered = flat_faces >= 0
        self.texels = np.flatnonzero(covered)
        self.texel_faces = flat_faces[self.texels].astype(np.intp)
        self.texel_bary = np.ascontiguousarray(self.bary.reshape(-1, 3)[self.texels].T, dtype=np.float32)
        self.ring_texels, self.ring_sources = _dilation_ring(covered, size)

    @property
    def size(self) -> int:
        """T, the texture width and height in texels."""
        return self.face_index.shape[0]

    @classmethod
    def build(cls, uvs: np.ndarray, faces: np.ndarray, size: int) -> UVRasterMap:
        """Rasterise the UV layout: uvs (V, 2) in [0, 1] (v up), faces (F, 3).

        A texel belongs to a triangle when its centre lies inside or on it;
        degenerate UV triangles cover nothing. Where triangles overlap, the
        one with the highest index wins.
        """
        uvs = np.asarray(uvs, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        if uvs.ndim != 2 or uvs.shape[1] != 2:
            raise ValueError(f"uvs must be (V, 2), got {uvs.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be (F, 3), got {faces.shape}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")

        # Texel space: texel (row, col) has its centre at (x, y) = (col, row).
        xy = np.stack([uvs[:, 0] * size - 0.5, (1.0 - uvs[:, 1]) * size - 0.5], axis=1)
        corners = xy[faces]  # (F, 3, 2)
        lo = np.clip(np.ceil(corners.min(axis=1)), 0, size - 1).astype(np.int64)
        hi = np.clip(np.floor(corners.max(axis=1)), 0, size - 1).astype(np.int64)
        width = hi[:, 0] - lo[:, 0] + 1
        height = hi[:, 1] - lo[:, 1] + 1
        counts = width * height

        # Barycentric set-up per triangle: l_a = (e_a . (p - c)) / area2 ...
        a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
        area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
        counts[area2 == 0] = 0

        best = np.full(size * size, -1, dtype=np.int64)
        best_bary = np.zeros((size * size, 3), dtype=np.float64)
        ends = np.cumsum(counts)
        starts = ends - counts
        first = 0
        while first < len(faces):
            # a batch of whole triangles holding about _RASTER_BATCH candidates
            last = max(int(np.searchsorted(ends, starts[first] + _RASTER_BATCH, side="right")), first + 1)
            tri = np.repeat(np.arange(first, last), counts[first:last])
            local = np.arange(len(tri)) - (starts[tri] - starts[first])
            px = lo[tri, 0] + local % width[tri]
            py = lo[tri, 1] + local // width[tri]
            dxc = px - c[tri, 0]
            dyc = py - c[tri, 1]
            la = ((b[tri, 1] - c[tri, 1]) * dxc - (b[tri, 0] - c[tri, 0]) * dyc) / area2[tri]
            lb = ((c[tri, 1] - a[tri, 1]) * dxc - (c[tri, 0] - a[tri, 0]) * dyc) / area2[tri]
            lc = 1.0 - la - lb
            inside = (la >= -_INSIDE_EPS) & (lb >= -_INSIDE_EPS) & (lc >= -_INSIDE_EPS)
            flat = py[inside] * size + px[inside]
            # ascending triangle order + keep the last write per texel
            order = np.argsort(flat, kind="stable")
            flat_sorted = flat[order]
            keep = np.ones(len(order), dtype=bool)
            keep[:-1] = flat_sorted[1:] != flat_sorted[:-1]
            chosen = order[keep]
            best[flat[chosen]] = tri[inside][chosen]
            best_bary[flat[chosen]] = np.stack([la, lb, lc], axis=1)[inside][chosen]
            first = last

        return cls(
            face_index=best.reshape(size, size),
            bary=np.clip(best_bary, 0.0, 1.0).astype(np.float32).reshape(size, size, 3),
        )


def _dilation_ring(covered: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grow the layout by DILATE_TEXELS 8-neighbour steps.

    covered (T*T,) bool -> (ring (R,) flat indices of the new texels,
    sources (R,) flat index of the covered texel each one copies).
    """
    source = np.where(covered, np.arange(size * size), -1).reshape(size, size)
    for _ in range(DILATE_TEXELS):
        padded = np.pad(source, 1, constant_values=-1)
        grown = source.copy()
        for dy, dx in _NEIGHBOURS:
            neighbour = padded[1 + dy : 1 + dy + size, 1 + dx : 1 + dx + size]
            take = (grown < 0) & (neighbour >= 0)
            grown[take] = neighbour[take]
        source = grown
    flat_source = source.reshape(-1)
    ring = np.flatnonzero((flat_source >= 0) & ~covered)
    return ring, flat_source[ring]


def _nearest_in_rows(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """valid (R, C) bool -> (before, after), each (R, C) int32: the column of the
    nearest valid cell at or left of / at or right of each cell, -1 where none."""
    columns = valid.shape[1]
    ranks = np.arange(1, columns + 1, dtype=np.int32)
    before = np.maximum.accumulate(valid * ranks, axis=1) - 1
    after_flipped = np.maximum.accumulate(valid[:, ::-1] * ranks, axis=1)
    after = np.where(after_flipped > 0, columns - after_flipped, -1)[:, ::-1]
    return before, after


def _axis_nearest_fill(colors: np.ndarray, sources: np.ndarray, targets: np.ndarray, size: int) -> np.ndarray:
    """Colour each target texel from the nearest source texel in its row or column.

    colors (3, K) float32 channel planes of the source texels at flat indices
    sources (K,), K >= 1; targets (M,) flat indices of other texels ->
    (3, M) float32: the colour of the closest source straight left, right,
    above or below the target; the mean source colour for a target whose row
    and column hold no source.
    """
    valid: np.ndarray = np.zeros(size * size, dtype=bool)
    valid[sources] = True
    valid = valid.reshape(size, size)
    grid = np.zeros((3, size * size), dtype=np.float32)
    grid[:, sources] = colors
    rows, cols = np.divmod(targets, size)
    distance_list: list[np.ndarray] = []
    flat_list: list[np.ndarray] = []
    # rows of `valid`, then rows of its transpose (contiguous: fast accumulate)
    for transposed in (False, True):
        line, along = (cols, rows) if transposed else (rows, cols)
        lines_valid = np.ascontiguousarray(valid.T) if transposed else valid
        for nearest in _nearest_in_rows(lines_valid):
            found = nearest[line, along]
            exists = found >= 0
            distance_list.append(np.where(exists, np.abs(found - along), 2 * size))
            flat = found * size + line if transposed else line * size + found
            flat_list.append(np.where(exists, flat, 0))
    distances, flats = np.stack(distance_list, axis=1), np.stack(flat_list, axis=1)
    closest = np.argmin(distances, axis=1)
    filled = grid[:, np.take_along_axis(flats, closest[:, None], axis=1)[:, 0]]
    lonely = np.take_along_axis(distances, closest[:, None], axis=1)[:, 0] >= 2 * size
    filled[:, lonely] = colors.mean(axis=1, keepdims=True)
    return filled


def bake_uv_texture(
    image: np.ndarray,
    image_points: np.ndarray,
    faces: np.ndarray,
    uv_map: UVRasterMap,
    visible: np.ndarray | None = None,
) -> np.ndarray:
    """Project the photo into the UV layout.

    image (H, W, 3) uint8; image_points (V, 2) pixel coords of every vertex in
    the photo; faces (F, 3), the topology ``uv_map`` was built for;
    visible (V,) bool or None -> (T, T, 3) uint8 texture, row 0 = top (v = 1).

    Every covered texel samples the photo (bilinear) at the point its
    barycentrics give in the triangle of projected vertices. When ``visible``
    is given, covered texels whose triangle has no visible vertex take the
    colour of the nearest visible texel straight left, right, above or below
    them (the mean visible colour when their row and column have none); if
    no triangle has a visible vertex, visibility is ignored.
    Outside the layout, a ring of DILATE_TEXELS texels copies a nearby
    covered texel (8-neighbour growth) and the rest is the mean colour of the
    layout.
    """
    _check_image(image)
    image_points = np.asarray(image_points, dtype=np.float32)
    faces = np.asarray(faces)
    if image_points.ndim != 2 or image_points.shape[1] != 2:
        raise ValueError(f"image_points must be (V, 2), got {image_points.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {faces.shape}")
    size = uv_map.size
    if len(uv_map.texels) == 0:
        return np.zeros((size, size, 3), dtype=np.uint8)

    # photo position of each texel: its barycentrics over the triangle corners'
    # projections, gathered per corner from (F,) arrays
    x = np.zeros(len(uv_map.texels), dtype=np.float32)
    y = np.zeros(len(uv_map.texels), dtype=np.float32)
    for corner in range(3):
        projected = image_points[faces[:, corner]]
        x += uv_map.texel_bary[corner] * np.take(np.ascontiguousarray(projected[:, 0]), uv_map.texel_faces)
        y += uv_map.texel_bary[corner] * np.take(np.ascontiguousarray(projected[:, 1]), uv_map.texel_faces)
    planes = _bilinear(image, x, y)

    if visible is not None:
        visible = np.asarray(visible, dtype=bool)
        if visible.shape != (len(image_points),):
            raise ValueError(f"visible must be (V,), got {visible.shape}")
        seen = np.take(visible[faces].any(axis=1), uv_map.texel_faces)
        if seen.any() and not seen.all():
            planes[:, ~seen] = _axis_nearest_fill(planes[:, seen], uv_map.texels[seen], uv_map.texels[~seen], size)

    mean = _to_uint8(planes.mean(axis=1))
    colors = _to_uint8(planes)
    texture = np.empty((size * size, 3), dtype=np.uint8)
    flat_texture = texture.reshape(-1)
    offsets = uv_map.texels * 3
    for channel in range(3):  # per channel: 3-byte rows are slow to fill and scatter
        texture[:, channel] = mean[channel]
        flat_texture[offsets + channel] = colors[channel]
    texture[uv_map.ring_texels] = texture[uv_map.ring_sources]
    return texture.reshape(size, size, 3)
