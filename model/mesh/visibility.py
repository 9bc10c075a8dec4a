"""What the photo saw of a posed face mesh, vertex by vertex (numpy only).

Input is the mesh posed in the photo, ``image_points`` (V, 3) as in
:attr:`model.runtime.reconstructor.FaceResult.image_points`: x right and y down in photo pixels,
depth toward the camera (larger nearer) in the same pixel units. The camera is scaled
orthographic, so every vertex is seen along the same direction, +depth. Triangles are
counter-clockwise seen from the front in the face's own frame (+X left of the subject, +Y up,
+Z toward the viewer); (x, -y, depth) is that frame rotated and scaled, so a triangle's
outward normal is ``cross(b - a, c - a)`` there, and it faces the camera when its depth
component is positive.

A vertex's *weight* in [0, 1] says how well the photo shows it: the product of

* facing: a smoothstep of the cosine between its normal and the view direction, 0 at and
  below :data:`FACING_NONE` (edge-on or turned away), 1 from :data:`FACING_FULL` on;
* unoccluded: a z-buffer of the mesh, rasterised on a grid of :data:`GRID` cells along the
  longer side of the face's box, holds the nearest depth per cell; a vertex more than a
  tolerance behind it is hidden (the tolerance grows with the surface's slope, which moves
  the depth within a cell);
* inside the photo: vertices off the photo's edge were not seen;
* off the silhouette: a sample point (below) whose z-buffer cell has uncovered cells around
  it (:data:`SILHOUETTE_COVERAGE`) reads the background or hair along with the face;

the last three eroded by :data:`ERODE_RINGS` rings of mesh neighbours (so the last ring next
to an occluder or the silhouette does not count as seen) plus :data:`BLUR_RINGS` rings first;
the product is then blurred by :data:`BLUR_RINGS` rings, so colour sources blend over a few
vertices instead of switching from one to the next, without reaching into hidden parts.

*Sample points* are where each vertex's colour is read in the photo: the projected vertex,
except that the outer rim of the mesh (its longest boundary loop) and the
:data:`~model.mesh.structure.RIM_RINGS` - 1 rings inside it are pulled toward the centre of the projected face, the
rim by :data:`RIM_PULL` of its distance from there, less with every ring, so that the rim,
which lies on the face's outline in the photo, reads skin rather than hair or background.

The structure of the mesh (neighbours, the triangles at each vertex, rim rings:
:mod:`model.mesh.structure`) depends only on the triangles and is cached; its per-vertex groups
are padded tables, so a ring of neighbours is one gather and one reduction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.mesh.normals import area_weighted_normals
from model.mesh.structure import RIM_RINGS, MeshStructure, mesh_structure

GRID = 64  # z-buffer cells along the longer side of the face's projected box
FACING_NONE = 0.05  # cosine (normal . view) at and below which a vertex is not seen (~87 degrees)
FACING_FULL = 0.3  # cosine from which a vertex is seen squarely enough (~73 degrees)
DEPTH_TOLERANCE = 1.5  # cells of depth a vertex may lie behind the z-buffer and still count as seen
_MAX_SLOPE = 6.0  # cap on the slope term of the depth tolerance, in cells per cell
# Share of covered z-buffer cells around a sample point at and below which it counts as on the
# silhouette (not seen: its colour would mix in the background); all covered counts as seen.
SILHOUETTE_COVERAGE = 5.0 / 9.0
ERODE_RINGS = 1
BLUR_RINGS = 2
PHOTO_MARGIN = 1.5  # pixels over which a vertex fades out toward the photo's edge
RIM_PULL = 0.05  # the rim's sample point moves this fraction of the way to the face's centre

# Barycentric tolerance: cell centres on a shared edge belong to a triangle.
_INSIDE_EPS = 1e-7
# Candidate (triangle, cell) pairs tested at once by DepthBuffer.render (bounds memory).
_RASTER_BATCH = 1 << 18


@dataclass(frozen=True)
class FaceVisibility:
    """What the photo saw of one posed face, for colouring its mesh.

    weight (V,) float32 in [0, 1]: how well the photo shows each vertex (0 hidden);
    sample_points (V, 2) float32: photo pixels where each vertex's colour is read (the
    projected vertex, the outer rim pulled inward); mirror (V,) int: the left/right mirror
    vertex (an involution), whose colour stands in where a vertex was not seen; groups (V,)
    int: where neither side was seen, the fill colour is that of the seen vertices nearby on
    the mesh (``structure``), or, beyond them or without ``structure``, of the vertex's group
    (a region).
    """

    weight: np.ndarray
    sample_points: np.ndarray
    mirror: np.ndarray
    groups: np.ndarray
    structure: MeshStructure | None = None  # the mesh's neighbourhoods: fill colours from nearby
    # (V, 3) float32: the posed mesh's unit normals in the camera frame (x right, y up, z toward the
    # camera), those the facing was judged by; the image-space mesh's own normals (glTF axes)
    normals: np.ndarray | None = None

    @property
    def visible(self) -> np.ndarray:
        """(V,) bool: the vertex counts as seen (weight at least one half)."""
        return self.weight >= 0.5


def vertex_normals(image_points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of the posed mesh, in the camera frame
    (x right, y up, z toward the camera); image_points (V, 3) x, y down, depth (larger nearer)."""
    # (x, -y, z): the face's own frame rotated and scaled, where triangles are counter-clockwise
    return area_weighted_normals(np.asarray(image_points, dtype=np.float32) * np.array([1.0, -1.0, 1.0], np.float32),
                                 faces)


@dataclass(frozen=True)
class DepthBuffer:
    """The nearest depth of the mesh per cell of a square-celled grid over its projected box.

    depth (H, W) float64, -inf where no triangle covers the cell's centre; cell (row, col)
    spans photo pixels x in origin_x + cell * [col, col + 1), y likewise with row.
    """

    depth: np.ndarray
    origin_x: float
    origin_y: float
    cell: float

    def coverage(self) -> np.ndarray:
        """(H, W) float: the share of covered cells in each cell's 3 x 3 neighbourhood (outside
        the grid counts as uncovered): 1 inside the face, about one half on its outline."""
        height, width = self.depth.shape
        padded = np.zeros((height + 2, width + 2), np.float32)
        padded[1:-1, 1:-1] = np.isfinite(self.depth)
        rows = padded[:-2] + padded[1:-1] + padded[2:]
        return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / 9.0

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Photo pixels -> (rows, cols) of their cells, clamped to the grid."""
        height, width = self.depth.shape
        cols = np.clip(np.floor((x - self.origin_x) / self.cell), 0, width - 1).astype(np.intp)
        rows = np.clip(np.floor((y - self.origin_y) / self.cell), 0, height - 1).astype(np.intp)
        return rows, cols

    @classmethod
    def render(cls, image_points: np.ndarray, faces: np.ndarray, grid: int = GRID) -> DepthBuffer:
        """Rasterise the triangles (all of them: no back-face culling) at the cell centres.

        image_points (V, 3) photo pixels x, y (down), depth (larger nearer); faces (F, 3).
        Every cell centre in a triangle's bounding box is a candidate; all candidates (in
        batches of whole triangles when there are very many) are tested at once.
        """
        points = np.asarray(image_points, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        x, y, z = (np.ascontiguousarray(points[:, k]) for k in range(3))
        finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
        if not finite.any():
            return cls(depth=np.full((1, 1), -np.inf), origin_x=0.0, origin_y=0.0, cell=1.0)
        finite_x, finite_y = (x, y) if finite.all() else (x[finite], y[finite])
        x_lo, y_lo = float(finite_x.min()), float(finite_y.min())
        extent_x, extent_y = float(finite_x.max()) - x_lo, float(finite_y.max()) - y_lo
        cell = max(extent_x, extent_y, 1e-6) / grid
        width = min(max(int(np.ceil(extent_x / cell)), 1), grid)
        height = min(max(int(np.ceil(extent_y / cell)), 1), grid)
        depth = np.full(height * width, -np.inf)

        # grid units: cell (row, col) centred at (col, row); one (F,) array per corner
        gx = ((x - x_lo) / cell - 0.5).astype(np.float32)
        gy = ((y - y_lo) / cell - 0.5).astype(np.float32)
        gz = z.astype(np.float32)
        cx = [gx[faces[:, k]] for k in range(3)]
        cy = [gy[faces[:, k]] for k in range(3)]
        cz = [gz[faces[:, k]] for k in range(3)]
        area2 = (cx[1] - cx[0]) * (cy[2] - cy[0]) - (cx[2] - cx[0]) * (cy[1] - cy[0])
        col0 = np.maximum(np.ceil(np.minimum(np.minimum(cx[0], cx[1]), cx[2])), 0)
        col1 = np.minimum(np.floor(np.maximum(np.maximum(cx[0], cx[1]), cx[2])), width - 1)
        row0 = np.maximum(np.ceil(np.minimum(np.minimum(cy[0], cy[1]), cy[2])), 0)
        row1 = np.minimum(np.floor(np.maximum(np.maximum(cy[0], cy[1]), cy[2])), height - 1)
        box_w, box_h = col1 - col0 + 1, row1 - row0 + 1
        usable = (np.abs(area2) > 1e-12) & (box_w > 0) & (box_h > 0)  # False for NaN corners too
        tris = np.flatnonzero(usable)
        widths = box_w[tris].astype(np.intp)
        sizes = widths * box_h[tris].astype(np.intp)  # candidate cell centres per triangle
        ends = np.cumsum(sizes)
        first = 0
        while first < len(tris):
            # whole triangles with about _RASTER_BATCH candidates (bounds memory when triangles are large)
            last = max(int(np.searchsorted(ends, ends[first] - sizes[first] + _RASTER_BATCH, side="right")),
                       first + 1)
            batch = slice(first, last)
            # candidates (N,): every cell centre of each triangle's box, row by row
            starts = ends[batch] - sizes[batch]  # each triangle's first candidate
            members = np.repeat(tris[batch], sizes[batch])
            in_box = np.arange(starts[0], ends[last - 1]) - np.repeat(starts, sizes[batch])
            box_rows, box_cols = np.divmod(in_box, np.repeat(widths[batch], sizes[batch]))
            px = col0[members] + box_cols.astype(np.float32)
            py = row0[members] + box_rows.astype(np.float32)
            inv = 1.0 / area2[members]
            inside = np.ones(len(members), dtype=bool)
            value = np.zeros(len(members), np.float32)
            for k in range(3):
                xa, ya = cx[(k + 1) % 3][members], cy[(k + 1) % 3][members]
                xb, yb = cx[(k + 2) % 3][members], cy[(k + 2) % 3][members]
                # barycentric weight of corner k: vanishes on the opposite edge a -> b
                weight = ((xb - xa) * (py - ya) - (yb - ya) * (px - xa)) * inv
                inside &= weight >= -_INSIDE_EPS
                value += weight * cz[k][members]
            flat = (py * width + px)[inside].astype(np.intp)
            np.maximum.at(depth, flat, value[inside].astype(np.float64))  # same dtype: numpy's fast path
            first = last
        return cls(depth=depth.reshape(height, width), origin_x=x_lo, origin_y=y_lo, cell=cell)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def face_visibility(image_points: np.ndarray, faces: np.ndarray, mirror: np.ndarray,
                    groups: np.ndarray | None = None, image_size: tuple[int, int] | None = None,
                    *, grid: int = GRID) -> FaceVisibility:
    """How well the photo shows each vertex of a posed face, and where to read its colour.

    image_points (V, 3) photo pixels x, y (down) and depth (larger nearer); faces (F, 3),
    counter-clockwise seen from the front; mirror (V,) the left/right mirror map; groups (V,)
    int fill groups (e.g. the topology's regions; None: one group); image_size (W, H) of the
    photo, or None not to test the photo's edges. See the module's docstring.
    """
    points = np.asarray(image_points, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"image_points must be (V, 3), got {points.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {faces.shape}")
    count = len(points)
    if faces.size and (faces.min() < 0 or faces.max() >= count):
        raise ValueError(f"faces must index the {count} image points")
    mirror = np.asarray(mirror, dtype=np.int64)
    if mirror.shape != (count,):
        raise ValueError(f"mirror must be ({count},), got {mirror.shape}")
    groups = np.zeros(count, np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    if groups.shape != (count,):
        raise ValueError(f"groups must be ({count},), got {groups.shape}")
    finite = np.isfinite(points[:, 0]) & np.isfinite(points[:, 1]) & np.isfinite(points[:, 2])
    structure = mesh_structure(faces, count)

    # a vertex that is not finite sits at the origin (unseen), so that its neighbours' normals stay finite
    clean = points[:, :3] if finite.all() else np.where(finite[:, None], points[:, :3], 0.0)
    x, y, z = clean.T

    normals = vertex_normals(clean, faces)
    cosine = normals[:, 2].astype(np.float64)
    facing = _smoothstep((cosine - FACING_NONE) / (FACING_FULL - FACING_NONE))

    buffer = DepthBuffer.render(points, faces, grid)
    rows, cols = buffer.cell_of(x, y)
    behind = buffer.depth[rows, cols] - z  # -inf where the cell is empty
    slope = np.sqrt(np.maximum(1.0 - cosine**2, 0.0)) / np.maximum(cosine, 1e-6)
    tolerance = buffer.cell * (DEPTH_TOLERANCE + np.minimum(slope, _MAX_SLOPE))
    unoccluded = np.clip(2.0 - behind / tolerance, 0.0, 1.0)

    centre_x, centre_y = (x[finite].mean(), y[finite].mean()) if finite.any() else (0.0, 0.0)
    pull = RIM_PULL * np.clip(1.0 - structure.rim_ring / RIM_RINGS, 0.0, 1.0)
    sample_points = np.empty((count, 2), np.float32)
    sample_points[:, 0] = sample_x = x + pull * (centre_x - x)
    sample_points[:, 1] = sample_y = y + pull * (centre_y - y)
    # on the silhouette, a sample's footprint reaches past the face (background, hair)
    sample_rows, sample_cols = buffer.cell_of(sample_x, sample_y)
    coverage = buffer.coverage()[sample_rows, sample_cols]
    inner = _smoothstep((coverage - SILHOUETTE_COVERAGE) / (1.0 - SILHOUETTE_COVERAGE))

    # the in-view terms switch within a cell or two: erode them (facing is smooth already)
    weight = unoccluded * inner * finite
    if image_size is not None:
        width, height = image_size
        inside = np.minimum(np.minimum(x, width - x), np.minimum(y, height - y))
        weight = weight * np.clip(inside / PHOTO_MARGIN, 0.0, 1.0)
    for _ in range(ERODE_RINGS + BLUR_RINGS):  # the blur below then stays within what was seen
        weight = structure.neighbour_min(weight)
    weight = weight * facing
    for _ in range(BLUR_RINGS):
        weight = structure.neighbour_mean(weight)
    return FaceVisibility(weight=np.clip(weight, 0.0, 1.0).astype(np.float32),
                          sample_points=sample_points, mirror=mirror, groups=groups,
                          structure=structure, normals=normals)


def merge_weights(visibility: FaceVisibility, image_points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """How much one photo's colour of each vertex counts when the colours of several photos of a
    face are merged: (V,) float32, its visibility weight (seen, unoccluded, off the silhouette)
    times the cosine between its normal and the view direction (the normal's z in the photo's
    camera frame), so the photo that faced a part most squarely has the most say there."""
    points = np.asarray(image_points, dtype=np.float64)
    cosine = vertex_normals(np.where(np.isfinite(points[:, :3]), points[:, :3], 0.0), faces)[:, 2]
    return (np.asarray(visibility.weight, dtype=np.float32) * np.clip(cosine, 0.0, 1.0)).astype(np.float32)
