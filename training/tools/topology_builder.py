"""Builds the shipped face topology asset (``model/assets/face_topology.npz``) from photos.

The template is the project's own: the mean of similarity-aligned MediaPipe 3D landmark sets
over a few thousand training photos, made exactly left/right symmetric. The triangulation is
the Delaunay triangulation of the template's frontal projection restricted to the face oval
(a disk: 468 vertices, the 36 oval points as its only boundary, 898 triangles), then midpoint
subdivided twice with the new vertices placed on the smoothest surface through the 468. Regions
come from MediaPipe's named contours.

Regenerate with::

    facerecon build-topology --images ../shared/data/train/utkface ../shared/data/train/lfw \
        --out model/assets/face_topology.npz
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.linalg import spsolve
from scipy.spatial import Delaunay

from model.topology import NUM_BASE_VERTICES, REGION_NAMES, FaceTopology
from training.data.landmarks import MediaPipeLabeler

log = logging.getLogger(__name__)

TOPOLOGY_FORMAT = "2"
TEMPLATE_FACE_WIDTH_M = 0.15
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# MediaPipe face-mesh vertex of each iBUG 68-point landmark (jaw 0-16, brows 17-26,
# nose 27-35, eyes 36-47, outer lips 48-59, inner lips 60-67). The jaw entries here only
# define the face box of the training crops; the asset's jaw comes from :func:`jaw_from_oval`.
IBUG68_FROM_MEDIAPIPE = np.array(
    [
        162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
        71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
        168, 197, 5, 4, 75, 97, 2, 326, 305,
        33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
        61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
        78, 82, 13, 312, 308, 317, 14, 87,
    ],
    dtype=np.int64,
)

# MediaPipe anchor vertices used to orient the template.
_RIGHT_EYE_OUTER, _LEFT_EYE_OUTER, _FOREHEAD_TOP, _CHIN = 33, 263, 10, 152


@dataclass(frozen=True)
class TopologyBuildConfig:
    """Settings of :func:`build_topology`."""

    max_images: int = 3000
    seed: int = 0
    subdivisions: int = 2


def find_images(dirs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"image folder not found: {d}")
        files.extend(p for p in sorted(d.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES)
    return files


def collect_landmarks(files: list[Path]) -> np.ndarray:
    """Label each photo -> (N, 468, 3) landmark sets in a +Y up, +Z toward viewer frame."""
    sets = []
    with MediaPipeLabeler() as labeler:
        for path in files:
            try:
                image = np.asarray(Image.open(path).convert("RGB"))
            except OSError as err:
                log.warning("skipping unreadable %s: %s", path, err)
                continue
            points = labeler.label(image)
            if points is not None:
                sets.append(points * np.array([1.0, -1.0, -1.0], dtype=np.float32))
    if not sets:
        raise RuntimeError("no face was found in any of the images")
    return np.stack(sets).astype(np.float64)


def _kabsch(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) that best maps centred source (N, 3) onto centred target (N, 3)."""
    u, _, vt = np.linalg.svd(source.T @ target)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def procrustes_mean(sets: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Generalised Procrustes (similarity) mean of (N, P, 3) point sets -> (P, 3), unit norm."""
    centred = sets - sets.mean(axis=1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=(1, 2), keepdims=True)
    mean = centred[0]
    for _ in range(iterations):
        aligned = np.stack([c @ _kabsch(c, mean) for c in centred])
        scales = np.einsum("npk,pk->n", aligned, mean)[:, None, None]
        mean = (aligned * scales).mean(axis=0)
        mean /= np.linalg.norm(mean)
    return mean


def orient_template(points: np.ndarray) -> np.ndarray:
    """Rotate (P, 3) so the eyes run along +X, forehead is +Y and the face looks along +Z."""
    x_axis = points[_LEFT_EYE_OUTER] - points[_RIGHT_EYE_OUTER]
    x_axis /= np.linalg.norm(x_axis)
    up = points[_FOREHEAD_TOP] - points[_CHIN]
    y_axis = up - x_axis * (up @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    z_axis = np.cross(x_axis, y_axis)
    return (points - points.mean(axis=0)) @ np.stack([x_axis, y_axis, z_axis], axis=1)


def mirror_assignment(points: np.ndarray) -> np.ndarray:
    """(P, 3) roughly symmetric about x = 0 -> (P,) permutation pairing each point with its mirror."""
    reflected = points * np.array([-1.0, 1.0, 1.0])
    cost = np.linalg.norm(reflected[:, None, :] - points[None, :, :], axis=-1)
    _, mirror = linear_sum_assignment(cost)
    if not np.array_equal(mirror[mirror], np.arange(len(points))):
        raise RuntimeError("mirror assignment of the template is not an involution")
    return mirror


def symmetrise(points: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Average (P, 3) with its own reflection so it is exactly symmetric about x = 0."""
    return 0.5 * (points + points[mirror] * np.array([-1.0, 1.0, 1.0]))


def ordered_loop(edges: frozenset[tuple[int, int]]) -> np.ndarray:
    """Chain undirected edges that form one closed loop into an ordered vertex list."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    start = min(neighbours)
    loop, previous = [start], None
    while True:
        current = loop[-1]
        nxt = next(n for n in neighbours[current] if n != previous)
        if nxt == start:
            break
        previous = current
        loop.append(nxt)
    if len(loop) != len(neighbours):
        raise ValueError("edges do not form a single loop")
    return np.array(loop)


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test: points (N, 2) inside closed polygon (M, 2) -> (N,) bool."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return ((crosses & (x < x_cross)).sum(axis=1) % 2) == 1


def triangulate_disk(points: np.ndarray, oval: np.ndarray) -> np.ndarray:
    """Delaunay triangulation of the frontal projection (P, 3) inside the ordered oval loop.

    Returns (F, 3) triangles, counter-clockwise seen from +Z.
    """
    xy = points[:, :2]
    triangles = Delaunay(xy).simplices
    centroids = xy[triangles].mean(axis=1)
    triangles = triangles[_inside_polygon(centroids, xy[oval])]
    a, b, c = (xy[triangles[:, k]] for k in range(3))
    signed = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    triangles[signed < 0] = triangles[signed < 0][:, [0, 2, 1]]
    expected = 2 * len(points) - len(oval) - 2
    if len(triangles) != expected:
        raise RuntimeError(f"triangulation has {len(triangles)} triangles, a disk needs {expected}")
    return triangles


def _unit_normals(points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) unit normals of triangles (F, 3) over points (P, 3)."""
    corners = points[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)


def _smallest_angle(points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) smallest corner angle of each triangle in degrees."""
    corners = points[faces]
    out = np.full(len(faces), 180.0)
    for k in range(3):
        u = corners[:, (k + 1) % 3] - corners[:, k]
        v = corners[:, (k + 2) % 3] - corners[:, k]
        cos = (u * v).sum(1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-30)
        out = np.minimum(out, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return out


def _signed_areas(plane: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = (plane[faces[:, k]] for k in range(3))
    return (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]


def smooth_by_edge_flips(points: np.ndarray, plane: np.ndarray, faces: np.ndarray, fixed_edges: set[tuple[int, int]],
                         mirror: np.ndarray, min_angle: float = 8.0, max_rounds: int = 50) -> np.ndarray:
    """Flip interior edges of a triangulation (F, 3) where that lowers the fold between the two
    triangles in 3D (points (P, 3)), keeping the triangulation an embedding of the 2D layout
    ``plane`` (P, 2), never flipping ``fixed_edges`` and never making a corner sharper than
    ``min_angle`` degrees (or than it already was). An edge and its mirror image flip together, so
    the result stays left/right symmetric. Returns the new (F, 3)."""
    faces = faces.copy()
    for _ in range(max_rounds):
        keys = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        owner: dict[tuple[int, int], list[int]] = {}
        for index, key in enumerate(map(tuple, keys.tolist())):
            owner.setdefault(key, []).append(index // 3)
        candidates = []
        for (a, b), pair in owner.items():
            if len(pair) != 2 or (a, b) in fixed_edges:
                continue
            first, second = faces[pair[0]], faces[pair[1]]
            c = int(next(v for v in first if v not in (a, b)))
            d = int(next(v for v in second if v not in (a, b)))
            if (min(c, d), max(c, d)) in owner:
                continue
            k = int(np.flatnonzero(first == c)[0])
            x, y = int(first[(k + 1) % 3]), int(first[(k + 2) % 3])
            new = np.array([[c, x, d], [c, d, y]])
            if (_signed_areas(plane, new) <= 0).any():
                continue
            old_fold = np.degrees(np.arccos(np.clip(np.prod(_unit_normals(points, faces[pair]), axis=0).sum(), -1, 1)))
            new_fold = np.degrees(np.arccos(np.clip(np.prod(_unit_normals(points, new), axis=0).sum(), -1, 1)))
            worst = min(min_angle, float(_smallest_angle(points, faces[pair]).min()))
            if new_fold < old_fold - 1.0 and _smallest_angle(points, new).min() >= worst:
                candidates.append((old_fold - new_fold, (a, b), pair, new))
        flipped: set[int] = set()
        by_edge = {edge: (pair, new) for _, edge, pair, new in candidates}
        for _, (a, b), pair, new in sorted(candidates, key=lambda item: -item[0]):
            mirrored = (int(min(mirror[a], mirror[b])), int(max(mirror[a], mirror[b])))
            moves = [(pair, new)]
            if mirrored != (a, b):
                if mirrored not in by_edge:
                    continue
                moves.append(by_edge[mirrored])
            touched = [t for p, _ in moves for t in p]
            if flipped.intersection(touched) or len(set(touched)) != len(touched):
                continue
            for p, n in moves:
                faces[p] = n
            flipped.update(touched)
        if not flipped:
            break
    return faces


def _segments_cross(p: np.ndarray, q: np.ndarray, r: np.ndarray, s: np.ndarray) -> bool:
    """Whether the open 2D segments pq and rs cross."""
    def side(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b - a)[0] * (c - a)[1] - (b - a)[1] * (c - a)[0])
    return side(p, q, r) * side(p, q, s) < 0 and side(r, s, p) * side(r, s, q) < 0


def insert_edges_by_flips(plane: np.ndarray, faces: np.ndarray, edges: set[tuple[int, int]],
                          max_rounds: int = 100) -> np.ndarray:
    """Make every edge (a, b) of ``edges`` an edge of the 2D triangulation (F, 3) of ``plane``
    (P, 2) by flipping the edges that cross it (where their quadrilateral is convex)."""
    faces = faces.copy()
    for _ in range(max_rounds):
        present = {tuple(e) for e in np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1).tolist()}
        missing = [e for e in edges if e not in present]
        if not missing:
            return faces
        flipped = False
        for a, b in missing:
            for u, v in sorted(present):
                if {u, v} & {a, b} or not _segments_cross(plane[a], plane[b], plane[u], plane[v]):
                    continue
                pair = np.flatnonzero(((faces == u) | (faces == v)).sum(axis=1) == 2)
                first, second = faces[pair[0]], faces[pair[1]]
                c = int(next(w for w in first if w not in (u, v)))
                d = int(next(w for w in second if w not in (u, v)))
                k = int(np.flatnonzero(first == c)[0])
                x, y = int(first[(k + 1) % 3]), int(first[(k + 2) % 3])
                new = np.array([[c, x, d], [c, d, y]])
                if (_signed_areas(plane, new) > 0).all():
                    faces[pair] = new
                    flipped = True
                    break
            if flipped:
                break
        if not flipped:
            break
    raise RuntimeError(f"could not insert edges {sorted(missing)} into the triangulation")


def triangulate_face(template: np.ndarray, oval: np.ndarray, openings: list[np.ndarray],
                     mirror: np.ndarray) -> np.ndarray:
    """The base triangulation (F, 3) of the template (P, 3): a disk inside the oval loop with a
    hole inside each opening loop (inner lips, eyes), counter-clockwise seen from +Z.

    Delaunay on the frontal projection folds where the face turns away from the camera (the
    cheeks toward the ears, around the nostrils), so the points are laid out flat by mean-value
    coordinates of that first triangulation (angles measured in 3D), triangulated again there,
    and edges are then flipped to lower the folds in 3D. The opening loops are kept as edges and
    the triangles inside them removed.
    """
    first = triangulate_disk(template, oval)
    plane = mean_value_uvs(template, first).astype(np.float64)
    faces = triangulate_disk(np.c_[plane, np.zeros(len(plane))], oval)
    loops = [oval, *openings]
    fixed = {(int(min(a, b)), int(max(a, b))) for loop in loops for a, b in zip(loop, np.roll(loop, -1))}
    faces = insert_edges_by_flips(plane, faces, fixed)
    faces = smooth_by_edge_flips(template, plane, faces, fixed, mirror)
    edges = {tuple(e) for e in np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1).tolist()}
    if missing := sorted(fixed - edges):
        raise RuntimeError(f"opening or oval edges missing from the triangulation: {missing}")
    centroids = plane[faces].mean(axis=1)
    inside = np.zeros(len(faces), dtype=bool)
    for loop in openings:
        inside |= _inside_polygon(centroids, plane[loop])
    return faces[~inside]


def subdivide(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One round of midpoint subdivision keeping the old vertices first.

    Returns vertices (V + E, 3), faces (4F, 3) and edge_parents (E, 2) of the new vertices.
    """
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    mid = (len(vertices) + inverse.reshape(-1, 3)).astype(np.int64)
    v0, v1, v2 = faces.T
    m01, m12, m20 = mid.T
    new_faces = np.concatenate(
        [
            np.stack([v0, m01, m20], 1),
            np.stack([v1, m12, m01], 1),
            np.stack([v2, m20, m12], 1),
            np.stack([m01, m12, m20], 1),
        ]
    )
    new_vertices = np.concatenate([vertices, vertices[unique].mean(axis=1)])
    return new_vertices, new_faces, unique


def boundary_vertices(faces: np.ndarray) -> np.ndarray:
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return np.unique(unique[counts == 1])


def fair_new_vertices(vertices: np.ndarray, faces: np.ndarray, num_fixed: int) -> np.ndarray:
    """Place the vertices past index ``num_fixed`` on the smoothest surface through the fixed ones.

    Minimises the squared Laplacian of all positions (thin-plate energy) with the first
    ``num_fixed`` vertices held, a sparse linear solve. The Laplacian weighs each neighbour by the
    inverse edge length and normalises by the total weight, so a cluster of close base vertices
    (mouth corners, nostrils) is not pulled like far ones: uniform weights left pleats there.
    Unlike repeated Laplacian smoothing (membrane energy), this does not shrink the new vertices
    toward the fixed ones' chords, which left every fixed vertex standing out as a bump.
    """
    n = len(vertices)
    out = vertices.astype(np.float64).copy()
    edges = np.unique(np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1), axis=0)
    weight = 1.0 / np.maximum(np.linalg.norm(out[edges[:, 0]] - out[edges[:, 1]], axis=1), 1e-9)
    adjacency = sparse.coo_matrix(
        (np.r_[weight, weight], (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])), shape=(n, n)
    ).tocsr()
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    laplacian = sparse.diags(1.0 / degree) @ (sparse.diags(degree) - adjacency)
    energy = (laplacian.T @ laplacian).tocsr()
    free = np.arange(n) >= num_fixed
    rhs = -(energy[free][:, ~free] @ out[~free])
    out[free] = spsolve(energy[free][:, free].tocsc(), rhs)
    return out


def extend_mirror(mirror: np.ndarray, edge_parents: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Mirror map of the subdivided mesh (V,) from the coarse one and the edge parents.

    A midpoint's mirror is the midpoint of the mirrored edge where that edge exists; the few
    midpoints of edges whose mirror image is not an edge are paired by nearest reflection.
    """
    n_old = len(mirror)
    lookup = {tuple(e): n_old + i for i, e in enumerate(edge_parents.tolist())}
    out = np.concatenate([mirror, -np.ones(len(edge_parents), dtype=np.int64)])
    for i, (a, b) in enumerate(edge_parents.tolist()):
        key = tuple(sorted((int(mirror[a]), int(mirror[b]))))
        out[n_old + i] = lookup.get(key, -1)
    unmatched = np.flatnonzero(out < 0)
    if len(unmatched):
        sub = vertices[unmatched]
        cost = np.linalg.norm(
            (sub * np.array([-1.0, 1.0, 1.0]))[:, None] - sub[None], axis=-1
        )
        _, pairing = linear_sum_assignment(cost)
        out[unmatched] = unmatched[pairing]
    if not np.array_equal(out[out], np.arange(len(out))):
        raise RuntimeError("subdivided mirror map is not an involution")
    return out


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Every boundary loop of a mesh (F, 3) as ordered vertices following the triangles' winding."""
    directed = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    _, inverse, counts = np.unique(np.sort(directed, axis=1), axis=0, return_inverse=True, return_counts=True)
    following = dict(directed[counts[inverse.ravel()] == 1].tolist())
    loops = []
    while following:
        start = min(following)
        loop = [start]
        while following[loop[-1]] != start:
            loop.append(following.pop(loop[-1]))
        following.pop(loop[-1])
        loops.append(np.array(loop))
    return loops


def boundary_loop(faces: np.ndarray) -> np.ndarray:
    """The outer (longest) boundary loop of a disk with holes (F, 3), following the winding."""
    return max(boundary_loops(faces), key=len)


def mean_value_uvs(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Fold-free UVs (V, 2) in [0.02, 0.98] for a disk mesh, holes allowed: the outer boundary on
    a circle by chord length, every other vertex by mean-value coordinates (Floater), which
    cannot fold. Each hole is filled for the solve by a fan to a virtual vertex at its centroid,
    so a hole keeps its own patch of the layout (the cavity surfaces behind the openings use it).
    """
    filled_vertices, filled_faces = _fill_holes(vertices, faces)
    return _mean_value_disk_uvs(filled_vertices, filled_faces)[: len(vertices)]


def _fill_holes(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Close every inner boundary loop of (V, 3), (F, 3) with a fan to a new centroid vertex."""
    loops = boundary_loops(faces)
    outer = max(loops, key=len)
    extra_vertices, extra_faces = [vertices], [faces]
    count = len(vertices)
    for loop in loops:
        if np.array_equal(loop, outer):
            continue
        extra_vertices.append(vertices[loop].mean(axis=0, keepdims=True))
        # A hole's boundary runs clockwise seen from the front, so (b, a, centre) is counter-clockwise.
        extra_faces.append(np.stack([np.roll(loop, -1), loop, np.full(len(loop), count)], axis=1))
        count += 1
    return np.concatenate(extra_vertices), np.concatenate(extra_faces)


def _mean_value_disk_uvs(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    n = len(vertices)
    loop = boundary_loop(faces)
    chords = np.linalg.norm(vertices[np.roll(loop, -1)] - vertices[loop], axis=1)
    angle = 2 * np.pi * np.concatenate([[0.0], np.cumsum(chords)[:-1]]) / chords.sum()
    # Start the circle at the chin so the layout is upright (the chin is the lowest vertex).
    angle += -np.pi / 2 - angle[np.argmin(vertices[loop, 1])]
    rows, cols, weights = [], [], []
    for k in range(3):
        i, j, o = faces[:, k], faces[:, (k + 1) % 3], faces[:, (k + 2) % 3]
        # Angle at vertex i in this triangle, split between its two edges (i, j) and (i, o).
        e1, e2 = vertices[j] - vertices[i], vertices[o] - vertices[i]
        l1, l2 = np.linalg.norm(e1, axis=1), np.linalg.norm(e2, axis=1)
        cos = np.clip((e1 * e2).sum(1) / (l1 * l2), -1.0, 1.0)
        half_tan = np.tan(np.arccos(cos) / 2)
        rows += [i, i]
        cols += [j, o]
        weights += [half_tan / l1, half_tan / l2]
    w = sparse.coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    laplacian = sparse.diags(np.asarray(w.sum(axis=1)).ravel()) - w
    interior = np.setdiff1d(np.arange(n), loop)
    uv = np.zeros((n, 2))
    uv[loop] = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    system = laplacian[interior][:, interior].tocsc()
    rhs = -laplacian[interior][:, loop] @ uv[loop]
    uv[interior] = np.stack([spsolve(system, rhs[:, c]) for c in range(2)], axis=1)
    return (0.5 + 0.48 * uv).astype(np.float32)


def _hull_contains(anchor_points: np.ndarray, query: np.ndarray, grow: float) -> np.ndarray:
    """query (N, 2) inside the convex hull of anchor_points (M, 2) scaled by ``grow``."""
    centre = anchor_points.mean(axis=0)
    hull = Delaunay(centre + grow * (anchor_points - centre))
    return hull.find_simplex(query) >= 0


def _split_loops(edges: frozenset[tuple[int, int]]) -> list[np.ndarray]:
    """Split undirected edges into their connected components, each an ordered loop."""
    remaining = set(edges)
    loops = []
    while remaining:
        component = {remaining.pop()}
        grew = True
        while grew:
            touched = {v for e in component for v in e}
            linked = {e for e in remaining if e[0] in touched or e[1] in touched}
            remaining -= linked
            component |= linked
            grew = bool(linked)
        loops.append(ordered_loop(frozenset(component)))
    return loops


def _contour_vertices(edges: frozenset[tuple[int, int]]) -> np.ndarray:
    return np.unique(np.array(sorted(edges)).ravel())


def label_regions(vertices: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per-vertex region index (V,) from MediaPipe's named contours on the base vertices (468, 3)."""
    from mediapipe.python.solutions import face_mesh_connections as contours

    xy, base_xy = vertices[:, :2], base[:, :2]
    region = np.full(len(vertices), -1, dtype=np.int64)
    index = {name: i for i, name in enumerate(REGION_NAMES)}

    def assign(name: str, mask: np.ndarray) -> None:
        region[(region < 0) & mask] = index[name]

    outer_lips, inner_lips = sorted(
        _split_loops(contours.FACEMESH_LIPS), key=lambda loop: -np.ptp(base_xy[loop, 0])
    )
    lip_y = base_xy[outer_lips, 1]
    mouth_line_y = base_xy[inner_lips, 1].mean()

    assign("mouth", _hull_contains(base_xy[inner_lips], xy, 1.0))
    in_lips = _hull_contains(base_xy[outer_lips], xy, 1.08)
    # Split the inner-lip loop at the mouth corners into its upper and lower arcs.
    start, stop = sorted((np.argmin(base_xy[inner_lips, 0]), np.argmax(base_xy[inner_lips, 0])))
    arc_a, arc_b = inner_lips[start : stop + 1], np.roll(inner_lips, -stop)[: len(inner_lips) - stop + start + 1]
    upper_inner, lower_inner = sorted((arc_a, arc_b), key=lambda arc: -base_xy[arc, 1].mean())
    d_upper = np.min(np.linalg.norm(xy[:, None] - base_xy[upper_inner][None], axis=-1), axis=1)
    d_lower = np.min(np.linalg.norm(xy[:, None] - base_xy[lower_inner][None], axis=-1), axis=1)
    assign("upper_lip", in_lips & (d_upper <= d_lower))
    assign("lower_lip", in_lips)
    for side in ("left", "right"):
        eye = _contour_vertices(getattr(contours, f"FACEMESH_{side.upper()}_EYE"))
        brow = _contour_vertices(getattr(contours, f"FACEMESH_{side.upper()}_EYEBROW"))
        assign(f"eye_{side}", _hull_contains(base_xy[eye], xy, 1.35))
        assign(f"brow_{side}", _hull_contains(base_xy[brow], xy, 1.3))
    assign("nose", _hull_contains(base_xy[_contour_vertices(contours.FACEMESH_NOSE)], xy, 1.1))
    brow_points = np.concatenate(
        [_contour_vertices(contours.FACEMESH_LEFT_EYEBROW), _contour_vertices(contours.FACEMESH_RIGHT_EYEBROW)]
    )
    assign("forehead", xy[:, 1] > base_xy[brow_points, 1].mean())
    assign("chin_jaw", xy[:, 1] < lip_y.min() + 0.25 * (mouth_line_y - lip_y.min()))
    assign("cheek_left", xy[:, 0] >= 0)
    assign("cheek_right", xy[:, 0] < 0)
    return region


@dataclass(frozen=True)
class CavitySpec:
    """The surface behind one opening: rings that shrink toward the rim's centroid (``shrink``
    of the way) while receding ``depth`` metres and opening ``spread`` metres up (upper rim) and
    down (lower rim), then a centre vertex; ``shade`` darkens the albedo ring by ring (from the
    rim inward, then the centre). The spread keeps the inside of a closed mouth a pocket rather
    than two walls pressed together (which would fold at the corners)."""

    shrink: tuple[float, ...]
    depth: tuple[float, ...]
    spread: tuple[float, ...]
    shade: tuple[float, ...]


# The mouth recedes 2.4 cm into the head, opens into a pocket and darkens; an eyeball bulges
# gently forward of its rim.
MOUTH_CAVITY = CavitySpec(shrink=(0.05, 0.3, 0.65, 1.0), depth=(0.004, 0.012, 0.020, 0.024),
                          spread=(0.003, 0.008, 0.007, 0.0), shade=(0.55, 0.35, 0.2, 0.15))
EYE_CAVITY = CavitySpec(shrink=(0.2, 0.55, 1.0), depth=(0.002, 0.0012, 0.0008), spread=(0.0015, 0.001, 0.0),
                        shade=(1.0, 1.0, 1.0))


def cavity_rows(rim: np.ndarray, rim_points: np.ndarray, spec: CavitySpec,
                first_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weights (K, L) over the rim loop (L,) of each cavity vertex, their offsets (K, 3) in the
    face's frame and shades (K,), and the cavity's triangles (T, 3), numbered from
    ``first_index`` (the rim keeps its own indices). ``rim_points`` (L, 3): the rim in the template.

    The rim runs as the surface's boundary edges do (clockwise seen from the front, around a hole),
    so the cavity's triangles take each rim edge the other way round: one consistent winding.
    """
    size = len(rim)
    centroid = np.full(size, 1.0 / size)
    # -1 on the lower rim, +1 on the upper, 0 at the corners: the rim's elliptic angle.
    centred = rim_points[:, :2] - rim_points[:, :2].mean(axis=0)
    vertical = np.sin(np.arctan2(centred[:, 1] / np.ptp(centred[:, 1]), centred[:, 0] / np.ptp(centred[:, 0])))
    weights, offsets, shade = [], [], []
    for shrink, depth, spread, s in zip(spec.shrink[:-1], spec.depth[:-1], spec.spread[:-1], spec.shade[:-1]):
        weights.append((1.0 - shrink) * np.eye(size) + shrink * centroid)
        offsets.append(np.stack([np.zeros(size), spread * vertical, np.full(size, -depth)], axis=1))
        shade += [s] * size
    weights.append(centroid[None])
    offsets.append(np.array([[0.0, 0.0, -spec.depth[-1]]]))
    shade.append(spec.shade[-1])
    rings = [rim] + [first_index + r * size + np.arange(size) for r in range(len(spec.shrink) - 1)]
    centre = first_index + (len(spec.shrink) - 1) * size
    faces = []
    for outer, inner in zip(rings[:-1], rings[1:]):
        a, b = outer, np.roll(outer, -1)
        a2, b2 = inner, np.roll(inner, -1)
        faces += [np.stack([b, a, a2], 1), np.stack([b, a2, b2], 1)]
    faces.append(np.stack([np.roll(rings[-1], -1), rings[-1], np.full(size, centre)], 1))
    return np.concatenate(weights), np.concatenate(offsets), np.array(shade), np.concatenate(faces)


def attach_cavities(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, regions: np.ndarray,
                    mirror: np.ndarray, openings: list[tuple[np.ndarray, CavitySpec]]) -> dict[str, np.ndarray]:
    """Append a cavity behind each opening (rim loop (L,) of surface vertices, spec).

    Returns the asset's arrays with the cavity vertices appended: vertices, faces, uvs, regions,
    mirror, and cavity_sources / cavity_weights / cavity_offsets / cavity_shade.
    """
    count = len(vertices)
    width = max(len(rim) for rim, _ in openings)
    sources, weights, offsets, shade, new_faces, rim_of, starts = [], [], [], [], [], [], []
    for rim, spec in openings:
        w, o, s, f = cavity_rows(rim, vertices[rim], spec, count)
        starts.append(count)
        sources.append(np.pad(np.tile(rim, (len(w), 1)), ((0, 0), (0, width - len(rim)))))
        weights.append(np.pad(w, ((0, 0), (0, width - len(rim)))))
        offsets.append(o)
        shade.append(s)
        new_faces.append(f)
        rim_of.append(rim)
        count += len(w)
    sources_all, weights_all = np.concatenate(sources), np.concatenate(weights)
    offsets_all = np.concatenate(offsets)
    cavity_vertices = (weights_all[..., None] * vertices[sources_all]).sum(1) + offsets_all
    cavity_uvs = (weights_all[..., None] * uvs[sources_all]).sum(1)
    cavity_regions = np.concatenate([np.full(len(w), regions[rim[0]]) for rim, w in zip(rim_of, weights)])
    # Mirror: ring position j of one cavity <-> the ring position of the rim vertex's mirror.
    cavity_mirror = []
    for rim, w in zip(rim_of, weights):
        other = next(k for k, r in enumerate(rim_of) if set(mirror[rim].tolist()) == set(r.tolist()))
        partner_rim, partner_start = rim_of[other], starts[other]
        position = {int(v): i for i, v in enumerate(partner_rim)}
        along = np.array([position[int(mirror[v])] for v in rim])
        rings = (len(w) - 1) // len(rim)
        ring_blocks = [partner_start + r * len(rim) + along for r in range(rings)]
        cavity_mirror.append(np.concatenate([*ring_blocks, [partner_start + len(w) - 1]]))
    return {
        "vertices": np.concatenate([vertices, cavity_vertices]),
        "faces": np.concatenate([faces, *new_faces]),
        "uvs": np.concatenate([uvs, cavity_uvs]),
        "regions": np.concatenate([regions, cavity_regions]),
        "mirror": np.concatenate([mirror, *cavity_mirror]),
        "cavity_sources": sources_all,
        "cavity_weights": weights_all,
        "cavity_offsets": offsets_all,
        "cavity_shade": np.concatenate(shade),
    }


def jaw_from_oval(template: np.ndarray, mirror: np.ndarray, oval: np.ndarray) -> np.ndarray:
    """The 17 iBUG jaw points as base vertices: the jawline is the face oval from where it
    passes below the outer eye corner down to the chin, with the nine points of each half
    spaced evenly by arc length along it (snapped to oval vertices), mirrored for the other half.
    """
    chin = int(oval[np.argmin(template[oval, 1])])
    start = np.flatnonzero(oval == chin)[0]
    # Walk the oval from the chin toward the subject's right (-X) side.
    step = 1 if template[oval[(start + 1) % len(oval)], 0] < 0 else -1
    path = [chin]
    eye_level = template[_RIGHT_EYE_OUTER, 1]
    k = start
    while True:
        k = (k + step) % len(oval)
        path.append(int(oval[k]))
        if template[oval[k], 1] < eye_level:
            continue
        path.pop()
        break
    path = path[::-1]  # from below the eye to the chin
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(template[path], axis=0), axis=1))])
    right = [path[int(np.argmin(np.abs(arc - t)))] for t in np.linspace(0.0, arc[-1], 9)]
    left = [int(mirror[v]) for v in right[:-1]][::-1]
    return np.array(right + left, dtype=np.int64)


def opening_loops(template: np.ndarray) -> list[tuple[np.ndarray, CavitySpec]]:
    """The base-vertex loops that become openings: the inner lips, then each eye's lid margin."""
    from mediapipe.python.solutions import face_mesh_connections as contours

    inner_lips = min(_split_loops(contours.FACEMESH_LIPS), key=lambda loop: np.ptp(template[loop, 0]))
    return [(inner_lips, MOUTH_CAVITY),
            (ordered_loop(contours.FACEMESH_LEFT_EYE), EYE_CAVITY),
            (ordered_loop(contours.FACEMESH_RIGHT_EYE), EYE_CAVITY)]


def build_topology(landmark_sets: np.ndarray, config: TopologyBuildConfig) -> FaceTopology:
    """(N, 468, 3) MediaPipe landmark sets (+Y up, +Z toward viewer) -> the topology asset."""
    from mediapipe.python.solutions import face_mesh_connections as contours

    if landmark_sets.shape[1:] != (NUM_BASE_VERTICES, 3):
        raise ValueError(f"expected (N, 468, 3) landmark sets, got {landmark_sets.shape}")
    template = orient_template(procrustes_mean(landmark_sets))
    mirror = mirror_assignment(template)
    template = symmetrise(template, mirror)
    oval = ordered_loop(contours.FACEMESH_FACE_OVAL)
    width = template[oval, 0].max() - template[oval, 0].min()
    template *= TEMPLATE_FACE_WIDTH_M / width
    return topology_from_template(template, mirror, oval, config)


def topology_from_template(template: np.ndarray, mirror: np.ndarray, oval: np.ndarray,
                           config: TopologyBuildConfig) -> FaceTopology:
    """The asset from the symmetric, scaled template (468, 3), its mirror map and the oval loop."""
    openings = opening_loops(template)
    base_faces = triangulate_face(template, oval, [loop for loop, _ in openings], mirror)

    vertices, faces, parents = template, base_faces, []
    for _ in range(config.subdivisions):
        vertices, faces, level_parents = subdivide(vertices, faces)
        mirror = extend_mirror(mirror, level_parents, vertices)
        parents.append(level_parents)
    vertices = fair_new_vertices(vertices, faces, NUM_BASE_VERTICES)
    vertices = symmetrise(vertices, mirror)
    edge_parents = np.concatenate(parents) if parents else np.zeros((0, 2), dtype=np.int64)
    uvs = mean_value_uvs(vertices, faces)
    regions = label_regions(vertices, vertices[:NUM_BASE_VERTICES])
    # The openings' rims on the subdivided surface: the hole loops through each base loop.
    loops = boundary_loops(faces)
    holes = [loop for loop in loops if loop is not max(loops, key=len)]
    rims = [(next(h for h in holes if base[0] in set(h.tolist())), spec) for base, spec in openings]
    arrays = attach_cavities(vertices, faces, uvs, regions, mirror, rims)

    digest = hashlib.sha256(arrays["faces"].astype(np.int32).tobytes()
                            + arrays["vertices"].astype(np.float32).tobytes())
    return FaceTopology(
        version=f"{TOPOLOGY_FORMAT}.{digest.hexdigest()[:12]}",
        vertices=arrays["vertices"].astype(np.float32),
        faces=arrays["faces"].astype(np.int64),
        base_faces=base_faces.astype(np.int64),
        uvs=arrays["uvs"].astype(np.float32),
        regions=arrays["regions"].astype(np.int64),
        mirror=arrays["mirror"].astype(np.int64),
        landmarks68=np.concatenate([jaw_from_oval(template, mirror[:NUM_BASE_VERTICES], oval),
                                    IBUG68_FROM_MEDIAPIPE[17:]]),
        edge_parents=edge_parents.astype(np.int64),
        cavity_sources=arrays["cavity_sources"].astype(np.int64),
        cavity_weights=arrays["cavity_weights"].astype(np.float32),
        cavity_offsets=arrays["cavity_offsets"].astype(np.float32),
        cavity_shade=arrays["cavity_shade"].astype(np.float32),
    )


def build_topology_from_images(
    image_dirs: list[Path], out: Path, config: TopologyBuildConfig = TopologyBuildConfig()
) -> FaceTopology:
    files = find_images(image_dirs)
    if not files:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, image_dirs))}")
    rng = np.random.default_rng(config.seed)
    if len(files) > config.max_images:
        files = [files[i] for i in sorted(rng.choice(len(files), config.max_images, replace=False))]
    log.info("labelling %d photos", len(files))
    topology = build_topology(collect_landmarks(files), config)
    out.parent.mkdir(parents=True, exist_ok=True)
    topology.save(out)
    return topology
