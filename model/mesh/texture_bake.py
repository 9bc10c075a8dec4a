"""Per-vertex colours and UV texture baking from the input photo (numpy; the bilinear lookups and the
fill's spread over the mesh as compiled loops, :mod:`model.mesh.kernels`).

Conventions:

* Photo pixel coordinates: x right, y down, the centre of pixel ``(row, col)``
  is at ``(col + 0.5, row + 0.5)``.
* Texture space: ``u`` right, ``v`` up, both in ``[0, 1]``. Texture row 0 is the
  top of the image (``v = 1``); the centre of texel ``(row, col)`` of a ``T x T``
  texture is at ``u = (col + 0.5) / T``, ``v = 1 - (row + 0.5) / T``.

:class:`UVRasterMap` depends only on the UV layout and the texture size, so it
is built once and reused: baking a photo is then a handful of gathers.

Given a :class:`~model.mesh.visibility.FaceVisibility`, colours come only from what the photo
saw: a vertex (or texel) of weight ``w`` whose mirror vertex has weight ``m`` takes the shares

* ``w`` of its own sample,
* ``(1 - w) m`` of its mirror's sample (the other side of the face, seen instead),
* ``FILL_SHARE max(0, 1 - (w + m) / FILL_SEEN)`` of a fill colour, that of the seen vertices
  nearby on the mesh (or of its group, a region): for points neither side of which was seen,

normalised to sum to one. Weights vary smoothly over the mesh (and are interpolated with the
barycentrics over each texel's triangle), so the sources blend without seams; a point the
photo saw squarely (``w = 1``) keeps exactly its own sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from model.compiled import read_only
from model.mesh import kernels
from model.mesh.visibility import FaceVisibility

# Texels outside the layout within this many texels (8-neighbour steps) of it
# copy a nearby layout texel, so bilinear filtering and mipmaps do not pull
# background colour into the seams. The rest of the texture is a plain fill.
DILATE_TEXELS = 4

# Candidate texels rasterised per batch by UVRasterMap.build (bounds memory).
_RASTER_BATCH = 1 << 21

# Barycentric tolerance: texel centres exactly on a shared edge belong to
# one of the two triangles, never to neither.
_INSIDE_EPS = 1e-9

# Share of the fill colour where a point and its mirror are both unseen, fading out as their
# weights add up to FILL_SEEN (see the module's docstring).
FILL_SHARE = 0.05
FILL_SEEN = 0.2
# Rings of mesh neighbours over which the fill gathers the colours of seen vertices, and the
# spread weight from which those alone make the fill (less: blended with the group's colour).
FILL_RINGS = 4
_FILL_NEAR = 1e-3

# Weights at least this high count as fully seen: the point's own sample alone.
_FULL = 1.0 - 1e-6

# Dilation neighbours, the closer (edge-sharing) ones first so they win ties.
_NEIGHBOURS = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup, clamped at the borders (:func:`model.mesh.kernels.bilinear`).

    image (H, W, 3) uint8; x, y (N,) pixel coords (x right, y down, pixel centres at
    +0.5) -> (3, N) float32 channel planes in [0, 255].
    """
    return kernels.bilinear(read_only(image), np.ascontiguousarray(x, dtype=np.float32),
                            np.ascontiguousarray(y, dtype=np.float32))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Float colour values in [0, 255] -> uint8 of the same shape, rounded."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")


def _check_visibility(visibility: FaceVisibility, count: int) -> None:
    for name in ("weight", "mirror", "groups"):
        if np.shape(getattr(visibility, name)) != (count,):
            raise ValueError(f"visibility.{name} must be ({count},), got {np.shape(getattr(visibility, name))}")


def _fill_colors(planes: np.ndarray, visibility: FaceVisibility, needed: np.ndarray) -> np.ndarray:
    """Vertex samples (3, V) -> (3, V) fill colours, for the ``needed`` (V,) bool vertices: the mean
    sample of the seen vertices near each on the mesh, weighted by how well they were seen and how
    near they are (with ``visibility.structure``: within FILL_RINGS rings, or fewer once every needed
    vertex has seen ones near); farther from any, the mean of the seen vertices of its group; where
    its group has none, of all seen vertices; where none was seen, the plain mean sample. The other
    vertices (no fill share) get their group's colour."""
    weight = np.asarray(visibility.weight, dtype=np.float32)
    groups = np.asarray(visibility.groups, dtype=np.intp)
    count = int(groups.max()) + 1 if len(groups) else 1
    # the seen colours: weighted samples and their weights (4, V)
    seen = np.empty((4, len(weight)), dtype=np.float32)
    np.multiply(planes, weight, out=seen[:3])
    seen[3] = weight
    sums = kernels.group_sums(seen, groups, count)  # (4, G) float64
    total = sums.sum(axis=1)
    overall = total[:3] / total[3] if total[3] > 0 else planes.mean(axis=1)
    means = np.where(sums[3] > 1e-6, sums[:3] / np.maximum(sums[3], 1e-6), overall[:, None]).astype(np.float32)
    fill = np.take(means, groups, axis=1)
    structure = visibility.structure
    rows = np.flatnonzero(needed)
    if structure is None or not len(rows):
        return fill
    # spread the seen colours over the mesh, averaged ring by ring, each ring only where the needed
    # vertices read it
    neighbours = structure.neighbours
    spread = kernels.spread_to(np.ascontiguousarray(seen.T), np.asarray(needed, dtype=bool), neighbours.table,
                               neighbours.overflow_vertices, neighbours.overflow_members, neighbours.counts,
                               FILL_RINGS, _FILL_NEAR)
    local = spread[rows].T  # (4, U)
    near = np.clip(local[3] / _FILL_NEAR, 0.0, 1.0)  # fades to the group's colour far from any seen vertex
    fill[:, rows] = near * (local[:3] / np.maximum(local[3], 1e-12)) + (1.0 - near) * fill[:, rows]
    return fill


def sample_vertex_colors(image: np.ndarray, points: np.ndarray, visibility: FaceVisibility | None = None
                         ) -> np.ndarray:
    """Colour of the photo under each projected vertex.

    image (H, W, 3) uint8, points (V, 2) pixel coords where each vertex is read (x right, y
    down, pixel centres at +0.5; with ``visibility``, pass its ``sample_points``) -> (V, 3)
    uint8, bilinear, clamped at the borders. With ``visibility``, vertices the photo did not
    see squarely blend in their mirror vertex's colour, or their group's (module docstring).
    """
    _check_image(image)
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (V, 2), got {points.shape}")
    planes = _bilinear(image, points[:, 0], points[:, 1])
    if visibility is not None:
        _check_visibility(visibility, len(points))
        weight = np.ascontiguousarray(visibility.weight, dtype=np.float32)
        mirror = np.ascontiguousarray(visibility.mirror, dtype=np.intp)
        needed = weight + weight[mirror] < FILL_SEEN  # a share of the fill colour
        return kernels.blend_by_shares(planes, weight, mirror, _fill_colors(planes, visibility, needed), FILL_SEEN,
                                       FILL_SHARE)
    return _to_uint8(planes.T)


@dataclass
class UVRasterMap:
    """Which triangle covers each texel of a ``T x T`` texture, and where.

    Build it once per topology and texture size with :meth:`build`; it can
    also be rebuilt from stored ``face_index`` and ``bary`` arrays (and ``uvs``,
    which baking with visibility needs, to find each texel's mirror texel).

    Derived on construction, for :func:`bake_uv_texture`: ``texels`` (N,) flat
    indices of the covered texels, ``texel_faces`` (N,) their triangles,
    ``texel_bary`` (3, N) their barycentrics (one contiguous plane per
    triangle corner), ``ring_texels`` (R,) the dilation ring outside the layout
    and ``ring_sources`` (R,) the covered texel each ring texel copies.
    """

    face_index: np.ndarray  # (T, T) int, -1 outside the layout
    bary: np.ndarray  # (T, T, 3) float32, barycentrics w.r.t. the triangle's vertices
    uvs: np.ndarray | None = None  # (V, 2) the layout's texture coordinates, v up
    texels: np.ndarray = field(init=False, repr=False)
    texel_faces: np.ndarray = field(init=False, repr=False)
    texel_bary: np.ndarray = field(init=False, repr=False)
    ring_texels: np.ndarray = field(init=False, repr=False)
    ring_sources: np.ndarray = field(init=False, repr=False)
    _mirror_cache: dict[bytes, np.ndarray] = field(init=False, repr=False, compare=False, default_factory=dict)
    # the last (faces, mirror, mirror texels): the same arrays again skip hashing them
    _mirror_last: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        init=False, repr=False, compare=False, default_factory=list)

    def __post_init__(self) -> None:
        size = self.face_index.shape[0]
        if self.face_index.shape != (size, size) or self.bary.shape != (size, size, 3):
            raise ValueError(
                f"face_index must be (T, T) and bary (T, T, 3), got "
                f"{self.face_index.shape} and {self.bary.shape}"
            )
        if self.uvs is not None and (np.ndim(self.uvs) != 2 or np.shape(self.uvs)[1] != 2):
            raise ValueError(f"uvs must be (V, 2), got {np.shape(self.uvs)}")
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

    def mirror_texels(self, faces: np.ndarray, mirror: np.ndarray) -> np.ndarray:
        """(N,) for each covered texel, the index into ``texels`` of the covered texel at its
        mirror image: the point of the same barycentrics in the triangle of the mirror vertices
        (``mirror`` (V,)) of its triangle's corners (``faces`` (F, 3), the layout's triangles).

        A mirror image just outside the layout takes the texel its dilation ring copies, one
        farther out the texel itself. Cached per (faces, mirror).
        """
        if self.uvs is None:
            raise ValueError("this UVRasterMap has no uvs: build it with UVRasterMap.build or pass uvs")
        if self._mirror_last and self._mirror_last[0][0] is faces and self._mirror_last[0][1] is mirror:
            return self._mirror_last[0][2]
        given = (faces, mirror)
        faces = np.ascontiguousarray(faces, dtype=np.int64)
        mirror = np.ascontiguousarray(mirror, dtype=np.int64)
        digest = hashlib.blake2b(faces.tobytes(), digest_size=16)
        digest.update(mirror.tobytes())
        key = digest.digest()
        cached = self._mirror_cache.get(key)
        if cached is None:
            cached = self._mirror_texels(np.asarray(self.uvs, dtype=np.float64), faces, mirror)
            if len(self._mirror_cache) >= 4:
                self._mirror_cache.clear()
            self._mirror_cache[key] = cached
        self._mirror_last[:] = [(*given, cached)]
        return cached

    def _mirror_texels(self, uvs: np.ndarray, faces: np.ndarray, mirror: np.ndarray) -> np.ndarray:
        size = self.size
        mirrored = uvs[mirror[faces]]  # (F, 3, 2)
        u = _texel_blend([mirrored[:, k, 0] for k in range(3)], self.texel_faces, self.texel_bary)
        v = _texel_blend([mirrored[:, k, 1] for k in range(3)], self.texel_faces, self.texel_bary)
        cols = np.clip(np.floor(u * size), 0, size - 1).astype(np.intp)
        rows = np.clip(np.floor((1.0 - v) * size), 0, size - 1).astype(np.intp)
        position = np.full(size * size, -1, dtype=np.intp)
        position[self.texels] = np.arange(len(self.texels))
        position[self.ring_texels] = position[self.ring_sources]
        found = position[rows * size + cols]
        return np.where(found >= 0, found, np.arange(len(self.texels)))

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
            uvs=uvs.astype(np.float32),
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


def _texel_blend(values: list[np.ndarray], faces: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Per-corner (F,) values of the triangles faces (N,) -> (N,) interpolated with bary (3, N)."""
    total = bary[0] * np.take(values[0], faces)
    for corner in (1, 2):
        total += bary[corner] * np.take(values[corner], faces)
    return total


def bake_uv_texture(
    image: np.ndarray,
    image_points: np.ndarray,
    faces: np.ndarray,
    uv_map: UVRasterMap,
    visibility: FaceVisibility | None = None,
) -> np.ndarray:
    """Project the photo into the UV layout.

    image (H, W, 3) uint8; image_points (V, 2) pixel coords where each vertex is read in the
    photo (with ``visibility``, pass its ``sample_points``); faces (F, 3), the topology
    ``uv_map`` was built for -> (T, T, 3) uint8 texture, row 0 = top (v = 1).

    Every covered texel samples the photo (bilinear) at the point its barycentrics give in
    the triangle of projected vertices. With ``visibility``, a texel's weight is the
    barycentric blend of its triangle's vertex weights, and it blends (module docstring) its
    own sample with that of its mirror texel (:meth:`UVRasterMap.mirror_texels`: the photo at
    the same barycentrics in the triangle of the mirror vertices, to the nearest texel) and
    the fill colours of its triangle's vertices. Outside the layout, a ring of DILATE_TEXELS
    texels copies a nearby covered texel (8-neighbour growth) and the rest is the mean
    colour of the layout.
    """
    _check_image(image)
    image_points = np.asarray(image_points, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.intp)
    if image_points.ndim != 2 or image_points.shape[1] != 2:
        raise ValueError(f"image_points must be (V, 2), got {image_points.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {faces.shape}")
    size = uv_map.size
    if len(uv_map.texels) == 0:
        return np.zeros((size, size, 3), dtype=np.uint8)

    # photo position of each texel: its barycentrics over the triangle corners'
    # projections, gathered per corner from (F,) arrays
    x = _texel_blend([np.ascontiguousarray(image_points[faces[:, k], 0]) for k in range(3)],
                     uv_map.texel_faces, uv_map.texel_bary)
    y = _texel_blend([np.ascontiguousarray(image_points[faces[:, k], 1]) for k in range(3)],
                     uv_map.texel_faces, uv_map.texel_bary)
    planes = _bilinear(image, x, y)

    if visibility is not None:
        _check_visibility(visibility, len(image_points))
        weight = np.asarray(visibility.weight, dtype=np.float32)
        if weight[faces].min() < _FULL:  # else every texel keeps its own sample
            planes = _blend_texels(planes, image, image_points, faces, uv_map, visibility)

    return _texture(planes, uv_map)


def bake_vertex_texture(colors: np.ndarray, faces: np.ndarray, uv_map: UVRasterMap) -> np.ndarray:
    """Per-vertex colours into the UV layout: colors (V, 3) float in [0, 1] (e.g. the model's
    albedo) or uint8; faces (F, 3), the topology ``uv_map`` was built for -> (T, T, 3) uint8
    texture, row 0 = top (v = 1). Each covered texel blends its triangle's vertex colours by its
    barycentrics; outside the layout as :func:`bake_uv_texture`."""
    colors = np.asarray(colors)
    faces = np.asarray(faces, dtype=np.intp)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError(f"colors must be (V, 3), got {colors.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {faces.shape}")
    scale = 1.0 if colors.dtype == np.uint8 else 255.0
    values = colors.astype(np.float32) * np.float32(scale)
    if len(uv_map.texels) == 0:
        return np.zeros((uv_map.size, uv_map.size, 3), dtype=np.uint8)
    planes = np.stack([_texel_blend([np.ascontiguousarray(values[faces[:, k], channel]) for k in range(3)],
                                    uv_map.texel_faces, uv_map.texel_bary) for channel in range(3)])
    return _texture(planes, uv_map)


def _texture(planes: np.ndarray, uv_map: UVRasterMap) -> np.ndarray:
    """The covered texels' colours (3, N) in [0, 255] -> the (T, T, 3) uint8 texture: the dilation
    ring copies nearby covered texels, the rest is the layout's mean colour."""
    size = uv_map.size
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


def _blend_texels(planes: np.ndarray, image: np.ndarray, image_points: np.ndarray, faces: np.ndarray,
                  uv_map: UVRasterMap, visibility: FaceVisibility) -> np.ndarray:
    """The texels' own samples (3, N) -> (3, N) blended with their mirror texels' samples and
    the fill colours by the texels' visibility (see :func:`bake_uv_texture`)."""
    weight = np.asarray(visibility.weight, dtype=np.float32)
    own_weight = _texel_blend([np.ascontiguousarray(weight[faces[:, k]]) for k in range(3)],
                              uv_map.texel_faces, uv_map.texel_bary)
    mirror_texels = uv_map.mirror_texels(faces, visibility.mirror)
    mirror_weight = np.take(own_weight, mirror_texels)
    # without the fill, the shares are s and 1 - s: colour = mirror + s (own - mirror)
    mirror_share = (1.0 - own_weight) * mirror_weight
    own_share = own_weight / np.maximum(own_weight + mirror_share, 1e-12)
    blended = np.empty_like(planes)
    for channel in range(3):
        mirrored = np.take(planes[channel], mirror_texels)
        np.subtract(planes[channel], mirrored, out=blended[channel])
        blended[channel] *= own_share
        blended[channel] += mirrored
    # the fill has a say only where both sides are barely seen: with the shares (a, b, c),
    # colour = (a + b) / (a + b + c) * the blend above + c / (a + b + c) * fill
    needed = np.flatnonzero(own_weight + mirror_weight < FILL_SEEN)
    if len(needed):
        texel_faces, bary = uv_map.texel_faces[needed], uv_map.texel_bary[:, needed]
        needed_faces = np.zeros(len(faces), dtype=bool)
        needed_faces[texel_faces] = True
        needed_vertices = np.zeros(len(image_points), dtype=bool)
        needed_vertices[faces[needed_faces]] = True
        fill = _fill_colors(_bilinear(image, image_points[:, 0], image_points[:, 1]), visibility, needed_vertices)
        filled = kernels.fill_shares(own_weight[needed], mirror_weight[needed], FILL_SEEN, FILL_SHARE)
        for channel in range(3):
            kept = blended[channel, needed]
            fill_colour = _texel_blend([np.ascontiguousarray(fill[channel, faces[:, k]]) for k in range(3)],
                                       texel_faces, bary)
            blended[channel, needed] = kept + filled * (fill_colour - kept)
    return blended


# Added to every photo's weight when merging, so that where no photo saw a point its colour is
# the plain mean of theirs (each already filled from its mirror side or neighbours).
MERGE_FLOOR = 1e-3


def _check_merge(values: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> None:
    if not values or len(values) != len(weights):
        raise ValueError(f"need one weight array per photo and one photo at least, got {len(values)} "
                         f"and {len(weights)}")


def merge_vertex_colors(colors: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> np.ndarray:
    """Per-vertex colours of one face from several photos, (V, 3) uint8 each (from
    :func:`sample_vertex_colors`), and each photo's per-vertex weights (V,) (e.g.
    :func:`model.mesh.visibility.merge_weights`) -> (V, 3) uint8: every vertex the weighted mean
    of the photos' colours (each weight plus MERGE_FLOOR)."""
    _check_merge(colors, weights)
    shares = np.stack([np.asarray(w, dtype=np.float32) for w in weights]) + np.float32(MERGE_FLOOR)  # (P, V)
    stacked = np.stack([np.asarray(c, dtype=np.float32) for c in colors])  # (P, V, 3)
    return _to_uint8((shares[..., None] * stacked).sum(axis=0) / shares.sum(axis=0)[:, None])


def merge_uv_textures(textures: Sequence[np.ndarray], weights: Sequence[np.ndarray], faces: np.ndarray,
                      uv_map: UVRasterMap) -> np.ndarray:
    """UV textures of one face baked from several photos, (T, T, 3) uint8 each (from
    :func:`bake_uv_texture`), and each photo's per-vertex weights (V,) -> one (T, T, 3) uint8
    texture: every covered texel the weighted mean of the photos' texels, a texel's weight being
    the barycentric blend of its triangle's vertex weights (plus MERGE_FLOOR); outside the layout
    as :func:`bake_uv_texture`."""
    _check_merge(textures, weights)
    faces = np.asarray(faces, dtype=np.intp)
    total = np.zeros((3, len(uv_map.texels)), dtype=np.float32)
    weight_sum = np.zeros(len(uv_map.texels), dtype=np.float32)
    for texture, weight in zip(textures, weights):
        weight = np.asarray(weight, dtype=np.float32)
        texel_weight = _texel_blend([np.ascontiguousarray(weight[faces[:, k]]) for k in range(3)],
                                    uv_map.texel_faces, uv_map.texel_bary) + np.float32(MERGE_FLOOR)
        total += texel_weight * np.asarray(texture).reshape(-1, 3)[uv_map.texels].T.astype(np.float32)
        weight_sum += texel_weight
    return _texture(total / weight_sum, uv_map)
