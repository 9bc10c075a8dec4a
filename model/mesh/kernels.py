"""Compiled loops of the mesh code (numba): the per-triangle and per-vertex work of the colour pass
that numpy can only do as dozens of whole-array operations, each a pass over memory with its own
call overhead.

Every kernel is compiled on its first call, about 4 s for all of them on this repository's 2-core
CPU (the service does it before it is ready: :meth:`service.engine.ReconstructionEngine.warm_up_colours`),
and releases the GIL while it runs, so the service's CPU threads run them side by side; compiled code
is kept between processes as :mod:`model.compiled` says (a CLI run on one photo: 1 s instead of 5).
The arithmetic is that of the numpy code it replaced (float32 where that was).
"""

from __future__ import annotations

import numpy as np

from model.compiled import njit

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


@njit(nogil=True)
def nearest_depth(grid_x: np.ndarray, grid_y: np.ndarray, depth: np.ndarray, faces: np.ndarray, width: int,
                  height: int, inside_eps: float) -> np.ndarray:
    """The nearest depth per cell centre of a ``height x width`` grid, (height * width,) float32,
    -inf where no triangle covers the centre. grid_x, grid_y (V,) float32 vertex positions in grid
    units (cell (row, col) centred at (col, row)); depth (V,) float32 (larger nearer); faces (F, 3).
    A centre is in a triangle when none of its barycentric weights is below -inside_eps (centres
    on a shared edge belong to both); triangles of no area or with NaN corners are skipped."""
    buffer = np.full(height * width, -np.inf, np.float32)
    eps = np.float32(-inside_eps)
    last_col, last_row = np.float32(width - 1), np.float32(height - 1)
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        xa, ya = grid_x[a], grid_y[a]
        xb, yb = grid_x[b], grid_y[b]
        xc, yc = grid_x[c], grid_y[c]
        # most triangles are smaller than a cell and hold no cell centre: done before any more work
        col0 = max(np.ceil(min(xa, xb, xc)), _ZERO)
        col1 = min(np.floor(max(xa, xb, xc)), last_col)
        if col0 > col1:
            continue
        row0 = max(np.ceil(min(ya, yb, yc)), _ZERO)
        row1 = min(np.floor(max(ya, yb, yc)), last_row)
        if row0 > row1:
            continue
        area2 = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
        if not abs(area2) > 1e-12:  # no area, or NaN
            continue
        za, zb, zc = depth[a], depth[b], depth[c]
        inv = _ONE / area2
        row = row0
        while row <= row1:
            col = col0
            while col <= col1:
                # barycentric weight of each corner: vanishes on the opposite edge
                weight_a = ((xc - xb) * (row - yb) - (yc - yb) * (col - xb)) * inv
                weight_b = ((xa - xc) * (row - yc) - (ya - yc) * (col - xc)) * inv
                weight_c = ((xb - xa) * (row - ya) - (yb - ya) * (col - xa)) * inv
                if weight_a >= eps and weight_b >= eps and weight_c >= eps:
                    value = weight_a * za + weight_b * zb + weight_c * zc
                    cell = int(row) * width + int(col)
                    if value > buffer[cell]:
                        buffer[cell] = value
                col += _ONE
            row += _ONE
    return buffer


@njit(nogil=True)
def area_weighted_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals (V, 3) float32 of vertices (V, 3) float32 and faces (F, 3): each the sum of
    its triangles' normals (cross products, twice their areas long; triangles counter-clockwise seen
    from their front), normalised; +Z where the sum is zero."""
    sums = np.zeros((vertices.shape[0], 3), np.float32)
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        ux, uy, uz = vertices[b, 0] - vertices[a, 0], vertices[b, 1] - vertices[a, 1], vertices[b, 2] - vertices[a, 2]
        vx, vy, vz = vertices[c, 0] - vertices[a, 0], vertices[c, 1] - vertices[a, 1], vertices[c, 2] - vertices[a, 2]
        nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
        for corner in (a, b, c):
            sums[corner, 0] += nx
            sums[corner, 1] += ny
            sums[corner, 2] += nz
    for v in range(sums.shape[0]):
        length = np.sqrt(sums[v, 0] * sums[v, 0] + sums[v, 1] * sums[v, 1] + sums[v, 2] * sums[v, 2])
        if length > 0:
            sums[v, 0] /= length
            sums[v, 1] /= length
            sums[v, 2] /= length
        else:
            sums[v, 0], sums[v, 1], sums[v, 2] = _ZERO, _ZERO, _ONE
    return sums


@njit(nogil=True)
def _smoothstep(t: float | np.floating) -> float | np.floating:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


@njit(nogil=True)
def seen_terms(points: np.ndarray, normals: np.ndarray, finite: np.ndarray, rim_ring: np.ndarray, rim_pull: float,
               rim_rings: int, depth: np.ndarray, origin_x: float, origin_y: float, cell: float,
               photo_width: float, photo_height: float, facing_none: float, facing_full: float,
               depth_tolerance: float, max_slope: float, silhouette_coverage: float, photo_margin: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-vertex terms of :func:`model.mesh.visibility.face_visibility` (its module docstring),
    one pass over the vertices: (seen (V,) float64, the product of unoccluded, off the silhouette,
    finite and inside the photo (not tested when photo_width < 0); facing (V,) float64; sample
    points (V, 2) float32). points (V, 3) float64 photo pixels x, y and depth (non-finite vertices
    at 0); normals (V, 3) unit normals in the camera frame; rim_ring (V,) rings from the outer rim,
    whose sample points move ``rim_pull`` of the way to the projected face's centre on the rim, less
    with every ring, none from ``rim_rings`` on; depth (H, W) the z-buffer over the face's box
    (cells of ``cell`` pixels from the origin)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    count = x.shape[0]
    height, width = depth.shape
    seen = np.empty(count)
    facing = np.empty(count)
    sample_points = np.empty((count, 2), np.float32)
    centre_x, centre_y, finite_count = 0.0, 0.0, 0
    for v in range(count):
        if finite[v]:
            centre_x += x[v]
            centre_y += y[v]
            finite_count += 1
    if finite_count:
        centre_x /= finite_count
        centre_y /= finite_count
    # the share of covered cells in each cell's 3 x 3 neighbourhood (outside the grid: uncovered)
    covered = np.zeros((height + 2, width + 2), np.float32)
    for row in range(height):
        for col in range(width):
            if np.isfinite(depth[row, col]):
                covered[row + 1, col + 1] = 1.0
    for v in range(count):
        cos = np.float64(normals[v, 2])
        facing[v] = _smoothstep((cos - facing_none) / (facing_full - facing_none))
        col = min(max(int(np.floor((x[v] - origin_x) / cell)), 0), width - 1)
        row = min(max(int(np.floor((y[v] - origin_y) / cell)), 0), height - 1)
        behind = depth[row, col] - z[v]  # -inf where the cell is empty
        slope = np.sqrt(max(1.0 - cos * cos, 0.0)) / max(cos, 1e-6)
        tolerance = cell * (depth_tolerance + min(slope, max_slope))
        unoccluded = min(max(2.0 - behind / tolerance, 0.0), 1.0)
        pull = rim_pull * min(max(1.0 - rim_ring[v] / rim_rings, 0.0), 1.0)
        sample_x = x[v] + pull * (centre_x - x[v])
        sample_y = y[v] + pull * (centre_y - y[v])
        sample_points[v, 0] = sample_x
        sample_points[v, 1] = sample_y
        col = min(max(int(np.floor((sample_x - origin_x) / cell)), 0), width - 1)
        row = min(max(int(np.floor((sample_y - origin_y) / cell)), 0), height - 1)
        around = np.float32(0.0)
        for dr in range(3):
            for dc in range(3):
                around += covered[row + dr, col + dc]
        inner = _smoothstep((around / np.float32(9.0) - silhouette_coverage) / (1.0 - silhouette_coverage))
        weight = unoccluded * inner if finite[v] else 0.0
        if photo_width >= 0:
            inside = min(min(x[v], photo_width - x[v]), min(y[v], photo_height - y[v]))
            weight *= min(max(inside / photo_margin, 0.0), 1.0)
        seen[v] = weight
    return seen, facing, sample_points


@njit(nogil=True)
def _ring(values: np.ndarray, table: np.ndarray, overflow_vertices: np.ndarray, overflow_members: np.ndarray,
          counts: np.ndarray, mean: bool) -> np.ndarray:
    """The minimum (or the mean) of ``values`` (V,) over each vertex's group, given as the padded
    (K, V) table and overflow pairs of :class:`model.mesh.structure.VertexGroups`."""
    count = values.shape[0]
    reduced = np.empty(count)
    for v in range(count):
        total = 0.0 if mean else np.inf
        for k in range(table.shape[0]):
            member = table[k, v]
            if member < count:
                total = total + values[member] if mean else min(total, values[member])
        reduced[v] = total
    for i in range(overflow_vertices.shape[0]):
        v, member = overflow_vertices[i], overflow_members[i]
        reduced[v] = reduced[v] + values[member] if mean else min(reduced[v], values[member])
    if mean:
        for v in range(count):
            reduced[v] /= counts[v]
    return reduced


@njit(nogil=True)
def erode_then_blur(values: np.ndarray, scale: np.ndarray, table: np.ndarray, overflow_vertices: np.ndarray,
                    overflow_members: np.ndarray, counts: np.ndarray, erode_rings: int, blur_rings: int
                    ) -> np.ndarray:
    """(V,) float64 ``values``: the minimum over ``erode_rings`` rings of neighbours, times ``scale``
    (V,), then the mean over ``blur_rings`` rings; the neighbours as the padded (K, V) table and the
    overflow pairs of :attr:`model.mesh.structure.MeshStructure.neighbours`."""
    for _ in range(erode_rings):
        values = _ring(values, table, overflow_vertices, overflow_members, counts, False)
    values = values * scale
    for _ in range(blur_rings):
        values = _ring(values, table, overflow_vertices, overflow_members, counts, True)
    return values


@njit(nogil=True)
def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup, clamped at the borders: image (H, W, 3) uint8; x, y (N,) pixel coordinates
    (x right, y down, pixel centres at +0.5) -> (3, N) float32 channel planes in [0, 255]."""
    height, width = image.shape[0], image.shape[1]
    planes = np.empty((3, x.shape[0]), np.float32)
    last_x, last_y = np.float32(width - 1), np.float32(height - 1)
    # the 2 x 2 footprint's top-left pixel; a weight of 1 reaches the last row / column
    top_x, top_y = np.float32(max(width - 2, 0)), np.float32(max(height - 2, 0))
    right, down = (1 if width > 1 else 0), (1 if height > 1 else 0)
    half = np.float32(0.5)
    for i in range(x.shape[0]):
        xs = min(max(np.float32(x[i]) - half, _ZERO), last_x)
        ys = min(max(np.float32(y[i]) - half, _ZERO), last_y)
        x0, y0 = min(np.floor(xs), top_x), min(np.floor(ys), top_y)
        fx, fy = xs - x0, ys - y0
        col, row = int(x0), int(y0)
        for channel in range(3):
            top_left = np.float32(image[row, col, channel])
            top_right = np.float32(image[row, col + right, channel])
            bottom_left = np.float32(image[row + down, col, channel])
            bottom_right = np.float32(image[row + down, col + right, channel])
            top = top_left + (top_right - top_left) * fx
            bottom = bottom_left + (bottom_right - bottom_left) * fx
            planes[channel, i] = top + (bottom - top) * fy
    return planes


@njit(nogil=True)
def spread_to(values: np.ndarray, needed: np.ndarray, table: np.ndarray, overflow_vertices: np.ndarray,
              overflow_members: np.ndarray, counts: np.ndarray, rings: int, enough: float) -> np.ndarray:
    """``values`` (V, C) float32 averaged over each vertex's neighbours, ring after ring, up to ``rings``
    times or until every ``needed`` (V,) vertex has its last column at least ``enough``; each ring only
    over the vertices the needed ones read in the rings left (within them of a needed vertex), so the
    answer is meant for the needed vertices alone. The neighbours as the padded (K, V) table and
    overflow pairs of :attr:`model.mesh.structure.MeshStructure.neighbours` (a symmetric relation)."""
    count, channels = values.shape
    # the vertices within rings - 1 rings of a needed one, nearest first (a ring at a time), and where
    # each ring of them ends
    distance = np.full(count, rings, np.int64)
    reached = np.empty(count, np.int64)
    size = 0
    for v in range(count):
        if needed[v]:
            distance[v] = 0
            reached[size] = v
            size += 1
    ends = np.empty(rings, np.int64)
    ends[0] = size
    start = 0
    for step in range(1, rings):
        for i in range(start, ends[step - 1]):
            v = reached[i]
            for k in range(table.shape[0]):
                member = table[k, v]
                if member < count and distance[member] > step:
                    distance[member] = step
                    reached[size] = member
                    size += 1
        for i in range(overflow_vertices.shape[0]):
            v, member = overflow_vertices[i], overflow_members[i]
            if distance[v] == step - 1 and distance[member] > step:
                distance[member] = step
                reached[size] = member
                size += 1
        start, ends[step] = ends[step - 1], size
    spread = values.copy()
    place = np.full(count, -1, np.int64)  # a reached vertex's place among them
    for i in range(size):
        place[reached[i]] = i
    reduced = np.empty((size, channels), np.float32)
    for ring in range(rings):
        done = True
        for i in range(ends[0]):
            if spread[reached[i], channels - 1] < enough:
                done = False
                break
        if done:
            break
        last = ends[rings - 1 - ring]  # this ring's values are read by the needed vertices within reach of them
        for i in range(last):
            v = reached[i]
            for c in range(channels):
                reduced[i, c] = 0.0
            for k in range(table.shape[0]):
                member = table[k, v]
                if member < count:
                    for c in range(channels):
                        reduced[i, c] += spread[member, c]
        for j in range(overflow_vertices.shape[0]):
            i = place[overflow_vertices[j]]
            if 0 <= i < last:
                for c in range(channels):
                    reduced[i, c] += spread[overflow_members[j], c]
        for i in range(last):
            v = reached[i]
            for c in range(channels):
                spread[v, c] = reduced[i, c] / counts[v]
    return spread


@njit(nogil=True)
def group_sums(values: np.ndarray, groups: np.ndarray, count: int) -> np.ndarray:
    """(C, V) values summed over each of ``count`` groups, groups (V,) int -> (C, count) float64."""
    sums = np.zeros((values.shape[0], count))
    for v in range(values.shape[1]):
        group = groups[v]
        for c in range(values.shape[0]):
            sums[c, group] += values[c, v]
    return sums


@njit(nogil=True)
def _shares(own: np.float32, mirrored: np.float32, fill_seen: np.float32, share_scale: np.float32
            ) -> tuple[np.float32, np.float32, np.float32]:
    """The shares of a point's own sample, its mirror's and the fill colour, summing to one, from its
    weight and its mirror's (:mod:`model.mesh.texture_bake`'s docstring); float32 throughout."""
    mirror_share = (_ONE - own) * mirrored
    fill_part = max(fill_seen - own - mirrored, _ZERO) * share_scale
    total = own + mirror_share + fill_part  # > 0: the fill's share is where the other two are 0
    return own / total, mirror_share / total, fill_part / total


@njit(nogil=True)
def fill_shares(own: np.ndarray, mirrored: np.ndarray, fill_seen: float, fill_share: float) -> np.ndarray:
    """(N,) float32 weights of points and of their mirrors -> (N,) float32 the fill colour's share
    of each (:func:`_shares`)."""
    seen_sum, share_scale = np.float32(fill_seen), np.float32(fill_share / fill_seen)
    shares = np.empty(own.shape[0], np.float32)
    for i in range(own.shape[0]):
        shares[i] = _shares(own[i], mirrored[i], seen_sum, share_scale)[2]
    return shares


@njit(nogil=True)
def blend_by_shares(samples: np.ndarray, weight: np.ndarray, mirror: np.ndarray, fill: np.ndarray,
                    fill_seen: float, fill_share: float) -> np.ndarray:
    """Each vertex's colour (V, 3) uint8, rounded: its own sample, its mirror vertex's and its fill
    colour (samples and fill (3, V) float32) by the shares of :func:`_shares`, from its weight and
    its mirror's (weight (V,) float32)."""
    count = weight.shape[0]
    colours = np.empty((count, 3), np.uint8)
    seen_sum, share_scale = np.float32(fill_seen), np.float32(fill_share / fill_seen)
    for v in range(count):
        own_share, mirror_share, fill_part = _shares(weight[v], weight[mirror[v]], seen_sum, share_scale)
        for c in range(3):
            value = own_share * samples[c, v] + mirror_share * samples[c, mirror[v]] + fill_part * fill[c, v]
            colours[v, c] = np.uint8(min(max(np.rint(value), _ZERO), np.float32(255.0)))
    return colours
