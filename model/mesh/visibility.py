"""What the photo saw of a posed face mesh, vertex by vertex.

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

The structure of the mesh (neighbours, rim rings: :mod:`model.mesh.structure`) depends only on
the triangles and is cached. The z-buffer, the normals, the per-vertex terms and the rings run as
compiled loops (:mod:`model.mesh.kernels`): a few passes over the mesh instead of dozens of numpy
operations, each with its own pass and call overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.mesh import kernels
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

    depth (H, W) float32, -inf where no triangle covers the cell's centre; cell (row, col)
    spans photo pixels x in origin_x + cell * [col, col + 1), y likewise with row.
    """

    depth: np.ndarray
    origin_x: float
    origin_y: float
    cell: float

    @classmethod
    def render(cls, image_points: np.ndarray, faces: np.ndarray, grid: int = GRID) -> DepthBuffer:
        """Rasterise the triangles (all of them: no back-face culling) at the cell centres
        (:func:`model.mesh.kernels.nearest_depth`).

        image_points (V, 3) photo pixels x, y (down), depth (larger nearer); faces (F, 3).
        """
        points = np.asarray(image_points, dtype=np.float64)
        faces = np.ascontiguousarray(faces, dtype=np.int64)
        x, y, z = (np.ascontiguousarray(points[:, k]) for k in range(3))
        finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
        if not finite.any():
            return cls(depth=np.full((1, 1), -np.inf, np.float32), origin_x=0.0, origin_y=0.0, cell=1.0)
        finite_x, finite_y = (x, y) if finite.all() else (x[finite], y[finite])
        x_lo, y_lo = float(finite_x.min()), float(finite_y.min())
        extent_x, extent_y = float(finite_x.max()) - x_lo, float(finite_y.max()) - y_lo
        cell = max(extent_x, extent_y, 1e-6) / grid
        width = min(max(int(np.ceil(extent_x / cell)), 1), grid)
        height = min(max(int(np.ceil(extent_y / cell)), 1), grid)

        # grid units: cell (row, col) centred at (col, row)
        grid_x = ((x - x_lo) / cell - 0.5).astype(np.float32)
        grid_y = ((y - y_lo) / cell - 0.5).astype(np.float32)
        depth = kernels.nearest_depth(grid_x, grid_y, z.astype(np.float32), faces, width, height, _INSIDE_EPS)
        return cls(depth=depth.reshape(height, width), origin_x=x_lo, origin_y=y_lo, cell=cell)


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
    clean = np.ascontiguousarray(points[:, :3] if finite.all() else np.where(finite[:, None], points[:, :3], 0.0))

    normals = vertex_normals(clean, faces)
    buffer = DepthBuffer.render(points, faces, grid)
    photo_width, photo_height = (-1.0, -1.0) if image_size is None else map(float, image_size)
    # unoccluded, off the silhouette, finite and inside the photo; these switch within a cell or
    # two: eroded below (facing is smooth already)
    weight, facing, sample_points = kernels.seen_terms(
        clean, normals, finite, structure.rim_ring, RIM_PULL, RIM_RINGS, buffer.depth, buffer.origin_x,
        buffer.origin_y, buffer.cell, photo_width, photo_height, FACING_NONE, FACING_FULL, DEPTH_TOLERANCE,
        _MAX_SLOPE, SILHOUETTE_COVERAGE, PHOTO_MARGIN)
    # eroded by the blur's rings too, so that the blur stays within what was seen
    neighbours = structure.neighbours
    weight = kernels.erode_then_blur(weight, facing, neighbours.table, neighbours.overflow_vertices,
                                     neighbours.overflow_members, neighbours.counts, ERODE_RINGS + BLUR_RINGS,
                                     BLUR_RINGS)
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
