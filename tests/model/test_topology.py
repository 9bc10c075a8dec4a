import numpy as np
import pytest

from model.topology import NUM_BASE_VERTICES, REGION_NAMES, FaceTopology

# iBUG 68-point left/right correspondence (a fact of the annotation scheme).
IBUG68_MIRROR = np.array(
    [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
     26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
     27, 28, 29, 30, 35, 34, 33, 32, 31,
     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
     54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
     64, 63, 62, 61, 60, 67, 66, 65]
)


def _directed_edges(faces: np.ndarray) -> np.ndarray:
    return faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)


def _check_oriented_manifold(faces: np.ndarray, num_vertices: int, holes: int) -> list[set[int]]:
    """Asserts faces form an oriented manifold disk with ``holes`` holes; returns the vertex sets
    of its boundary loops."""
    directed = _directed_edges(faces)
    # Consistent winding: no directed edge twice; interior edges appear once each way.
    assert len(np.unique(directed, axis=0)) == len(directed)
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert counts.max() <= 2
    boundary_edges = undirected[counts == 1]
    boundary = np.unique(boundary_edges)
    # Every boundary vertex has exactly two boundary edges: the boundary is a set of loops.
    assert np.all(np.bincount(boundary_edges.ravel())[boundary] == 2)
    # Euler characteristic of a disk with holes.
    assert num_vertices - len(undirected) + len(faces) == 1 - holes
    assert len(np.unique(faces)) == num_vertices
    loops: list[set[int]] = []
    remaining = {tuple(e) for e in boundary_edges.tolist()}
    while remaining:
        loop = set(remaining.pop())
        grew = True
        while grew:
            linked = {e for e in remaining if e[0] in loop or e[1] in loop}
            remaining -= linked
            loop |= {v for e in linked for v in e}
            grew = bool(linked)
        loops.append(loop)
    assert len(loops) == 1 + holes
    return loops


def _fold_angles(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(E,) degrees between the normals of the two triangles on each interior edge."""
    corners = vertices.astype(np.float64)[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    edges = np.sort(_directed_edges(faces), axis=1)
    owner = np.repeat(np.arange(len(faces)), 3)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edges, owner = edges[order], owner[order]
    shared = (edges[1:] == edges[:-1]).all(axis=1)
    cos = (normals[owner[:-1][shared]] * normals[owner[1:][shared]]).sum(axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _mediapipe_loops() -> tuple[set[int], ...]:
    contours = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")
    oval = {v for edge in contours.FACEMESH_FACE_OVAL for v in edge}
    left = {v for edge in contours.FACEMESH_LEFT_EYE for v in edge}
    right = {v for edge in contours.FACEMESH_RIGHT_EYE for v in edge}
    inner_lips = {v for edge in contours.FACEMESH_LIPS for v in edge} & {
        78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95}
    return oval, inner_lips, left, right


def test_base_triangulation_is_the_face_oval_with_mouth_and_eye_openings(topology: FaceTopology):
    loops = _check_oriented_manifold(topology.base_faces, NUM_BASE_VERTICES, holes=3)
    assert sorted(map(sorted, loops)) == sorted(map(sorted, _mediapipe_loops()))


def test_surface_has_the_mouth_and_each_eye_as_boundary_loops(topology: FaceTopology):
    surface = topology.surface_faces
    loops = _check_oriented_manifold(surface, topology.num_surface_vertices, holes=3)
    oval, inner_lips, left, right = _mediapipe_loops()
    for base_loop in (oval, inner_lips, left, right):
        assert sum(base_loop <= loop for loop in loops) == 1  # each base loop lies on one boundary loop


def test_cavities_close_the_openings(topology: FaceTopology):
    """Surface plus cavities is one disk bounded by the oval alone: a viewer looking into an
    open mouth or an eye sees a surface, not through the head."""
    (boundary,) = _check_oriented_manifold(topology.faces, topology.num_vertices, holes=0)
    assert _mediapipe_loops()[0] <= boundary
    surface = topology.vertices[: topology.num_surface_vertices]
    np.testing.assert_allclose(topology.attach_cavities(surface), topology.vertices, atol=1e-6)
    cavity = topology.vertices[topology.num_surface_vertices :]
    names = np.array(REGION_NAMES)[topology.regions[topology.num_surface_vertices :]]
    assert set(names) == {"mouth", "eye_left", "eye_right"}
    mouth_rim = topology.cavity_sources[names == "mouth"][0]
    rim_depth = topology.vertices[mouth_rim, 2].mean()
    assert cavity[names == "mouth", 2].min() < rim_depth - 0.015  # the mouth recedes into the head


def test_output_mesh_is_dense_and_keeps_the_base_vertices(topology: FaceTopology):
    assert topology.num_vertices >= 5000
    sizes = topology.level_sizes
    assert sizes[0] == NUM_BASE_VERTICES and sizes[-1] == topology.num_surface_vertices and len(sizes) == 3
    # The base vertices stay addressable and keep their template positions.
    base_corners = np.unique(topology.faces[np.isin(topology.faces, np.arange(NUM_BASE_VERTICES))])
    assert len(base_corners) == NUM_BASE_VERTICES
    parents = topology.edge_parents
    assert np.all(parents.max(axis=1) < np.arange(NUM_BASE_VERTICES, topology.num_surface_vertices))


def test_no_neighbouring_triangles_of_the_template_fold(topology: FaceTopology):
    """No pleats or notches: every pair of neighbouring triangles is within 120 degrees (the
    Delaunay triangulation of the frontal projection had 24 pairs past 150 near the ears,
    nostrils and upper lip)."""
    assert _fold_angles(topology.vertices, topology.faces).max() < 120.0
    assert _fold_angles(topology.vertices, topology.surface_faces).max() < 90.0


def test_triangles_face_the_viewer(topology: FaceTopology):
    v = topology.vertices[topology.surface_faces]
    normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert np.mean(normals[:, 2] > 0) > 0.97


def test_template_is_face_sized_and_symmetric(topology: FaceTopology):
    v = topology.vertices
    base = v[: topology.level_sizes[0]]
    assert base[:, 0].max() - base[:, 0].min() == pytest.approx(0.15, rel=1e-3)  # the 468 points: 15 cm wide
    assert v[:, 0].max() - v[:, 0].min() == pytest.approx(0.15, rel=1e-2)  # the smooth border bulges a little
    assert 0.15 < v[:, 1].max() - v[:, 1].min() < 0.22
    nose_tip = v[1]
    assert nose_tip[2] == pytest.approx(v[:, 2].max(), abs=0.005)
    mirrored = v[topology.mirror] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(mirrored, v, atol=1e-6)


def test_mirror_map_is_an_involution(topology: FaceTopology):
    m = topology.mirror
    assert np.array_equal(m[m], np.arange(topology.num_vertices))
    assert np.array_equal(np.sort(m), np.arange(topology.num_vertices))


def test_regions_cover_every_vertex_and_respect_the_mirror(topology: FaceTopology):
    assert topology.regions.min() >= 0
    assert set(np.unique(topology.regions)) == set(range(len(REGION_NAMES)))
    names = np.array(REGION_NAMES)[topology.regions]
    swapped = np.char.replace(np.char.replace(np.char.replace(names, "left", "@"), "right", "left"), "@", "right")
    agree = swapped[topology.mirror] == names
    assert agree.mean() > 0.97
    # Left means the subject's left, at +X.
    x = topology.vertices[:, 0]
    assert np.all(x[names == "eye_left"] > 0) and np.all(x[names == "eye_right"] < 0)


def test_landmarks68_are_mirror_consistent_and_in_their_regions(topology: FaceTopology):
    lm = topology.landmarks68
    assert lm.shape == (68,) and lm.max() < NUM_BASE_VERTICES
    assert np.array_equal(topology.mirror[lm], lm[IBUG68_MIRROR])
    regions = np.array(REGION_NAMES)[topology.regions[lm]]
    assert regions[30] == "nose"
    assert set(regions[36:42]) == {"eye_right"} and set(regions[42:48]) == {"eye_left"}
    y = topology.vertices[lm, 1]
    assert y[19] > y[37] > y[30] > y[51] > y[57] > y[8]


def test_landmark_mirror_pairs_the_ibug_points(topology: FaceTopology):
    partner = topology.landmark_mirror
    assert (partner[partner] == np.arange(68)).all()
    pairs = {0: 16, 4: 12, 17: 26, 31: 35, 36: 45, 39: 42, 48: 54, 60: 64}
    assert all(partner[a] == b for a, b in pairs.items())
    assert all(partner[i] == i for i in (8, 27, 30, 33, 51, 57, 62, 66))


def test_uvs_are_an_unfolded_layout(topology: FaceTopology):
    uv = topology.uvs
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    t = uv[topology.faces]
    signed = ((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
              - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0]))
    assert np.all(signed > 0)


def test_save_load_round_trip(topology: FaceTopology, tmp_path):
    path = tmp_path / "topo.npz"
    topology.save(path)
    again = FaceTopology.load(path)
    assert again.version == topology.version
    for name in ("vertices", "faces", "base_faces", "uvs", "regions", "mirror", "landmarks68", "edge_parents",
                 "cavity_sources", "cavity_weights", "cavity_offsets", "cavity_shade"):
        np.testing.assert_array_equal(getattr(again, name), getattr(topology, name))


def test_missing_asset_says_how_to_regenerate(tmp_path):
    with pytest.raises(FileNotFoundError, match="build-topology"):
        FaceTopology.load(tmp_path / "nope.npz")


def test_landmark_vertices_do_not_stand_out_of_the_surface(topology: FaceTopology):
    """The subdivision vertices lie on a smooth surface through the 468 base vertices, so a base
    vertex is no bump: its umbrella Laplacian is of the order of its neighbours' (it was 12x with
    membrane smoothing of the new vertices)."""
    v = topology.vertices.astype(np.float64)
    n = len(v)
    f = topology.faces
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    neighbours = [set() for _ in range(n)]
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    umbrella = np.array([np.linalg.norm(v[sorted(nb)].mean(axis=0) - v[i]) for i, nb in enumerate(neighbours)])
    base = topology.level_sizes[0]
    assert umbrella[:base].mean() < 5 * umbrella[base : topology.num_surface_vertices].mean()


def test_cavity_rim_matrix_gives_the_weighted_rim_sums(topology: FaceTopology):
    surface = np.random.default_rng(0).normal(size=(2, topology.num_surface_vertices, 3))
    rim, matrix = topology.cavity_rim_matrix()
    assert len(np.unique(rim)) == len(rim) < topology.cavity_sources.size
    direct = (topology.cavity_weights[..., None] * surface[:, topology.cavity_sources]).sum(axis=2)
    np.testing.assert_allclose(matrix @ surface[:, rim], direct, atol=1e-6)
    np.testing.assert_allclose(matrix.sum(axis=1), topology.cavity_weights.sum(axis=1), atol=1e-6)
