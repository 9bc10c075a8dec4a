import numpy as np
import pytest

pytest.importorskip("scipy")

from tests.conftest import SHARED_DATA  # noqa: E402
from training.tools.topology_builder import (  # noqa: E402
    boundary_loop,
    boundary_loops,
    insert_edges_by_flips,
    mean_value_uvs,
    mirror_assignment,
    procrustes_mean,
    subdivide,
    triangulate_disk,
)


def _signed_area(corners: np.ndarray) -> np.ndarray:
    """(F, 3, 2) triangles -> (F,) twice their signed area (positive counter-clockwise)."""
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]


def _disk_points(n_inner: int = 200, n_ring: int = 36, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    angle = np.linspace(0, 2 * np.pi, n_ring, endpoint=False)
    ring = np.stack([np.cos(angle), 1.2 * np.sin(angle)], 1)
    r = 0.9 * np.sqrt(rng.random(n_inner))
    t = rng.random(n_inner) * 2 * np.pi
    inner = np.stack([r * np.cos(t), 1.2 * r * np.sin(t)], 1)
    xy = np.concatenate([ring, inner])
    points = np.concatenate([xy, (1 - (xy**2).sum(1, keepdims=True) / 2)], 1)
    return points, np.arange(n_ring)


def test_triangulated_disk_has_2v_minus_b_minus_2_triangles_facing_plus_z():
    points, oval = _disk_points()
    faces = triangulate_disk(points, oval)
    assert len(faces) == 2 * len(points) - len(oval) - 2
    xy = points[faces][:, :, :2]
    signed = _signed_area(xy)
    assert np.all(signed > 0)
    assert set(boundary_loop(faces).tolist()) == set(oval.tolist())


def test_subdivision_keeps_old_vertices_and_adds_edge_midpoints():
    points, oval = _disk_points(n_inner=30, n_ring=12)
    faces = triangulate_disk(points, oval)
    vertices, new_faces, parents = subdivide(points, faces)
    assert np.array_equal(vertices[: len(points)], points)
    assert len(new_faces) == 4 * len(faces)
    np.testing.assert_allclose(vertices[len(points):], points[parents].mean(axis=1))


def test_procrustes_mean_undoes_similarity_transforms():
    rng = np.random.default_rng(1)
    shape = rng.normal(size=(50, 3))
    sets = []
    for _ in range(8):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))
        sets.append(rng.uniform(0.5, 2.0) * shape @ q.T + rng.normal(size=3))
    mean = procrustes_mean(np.stack(sets))
    centred = shape - shape.mean(0)
    centred /= np.linalg.norm(centred)
    u, _, vt = np.linalg.svd(mean.T @ centred)
    np.testing.assert_allclose(mean @ (u @ vt), centred, atol=1e-6)


def test_mirror_assignment_pairs_reflected_points():
    rng = np.random.default_rng(2)
    half = rng.normal(size=(20, 3)) + np.array([2.0, 0, 0])
    points = np.concatenate([half, half * np.array([-1, 1, 1]), np.c_[np.zeros(5), rng.normal(size=(5, 2))]])
    mirror = mirror_assignment(points)
    assert np.array_equal(mirror[:20], np.arange(20, 40))
    assert np.array_equal(mirror[40:], np.arange(40, 45))


def test_mean_value_uvs_do_not_fold():
    points, oval = _disk_points()
    faces = triangulate_disk(points, oval)
    uv = mean_value_uvs(points, faces)
    t = uv[faces]
    assert np.all(_signed_area(t) > 0)
    assert uv.min() >= 0.0 and uv.max() <= 1.0


@pytest.mark.skipif(not (SHARED_DATA / "train" / "lfw").is_dir(), reason="needs ../shared/data/train (face photos)")
def test_builds_a_valid_topology_from_real_photos(tmp_path):
    pytest.importorskip("mediapipe")
    from model.topology import FaceTopology
    from training.tools.topology_builder import TopologyBuildConfig, build_topology_from_images

    out = tmp_path / "topo.npz"
    built = build_topology_from_images([SHARED_DATA / "train" / "lfw"], out, TopologyBuildConfig(max_images=40))
    loaded = FaceTopology.load(out)
    assert loaded.version == built.version
    assert len(boundary_loops(loaded.surface_faces)) == 4  # the oval, the mouth and two eyes
    assert loaded.num_vertices > loaded.num_surface_vertices  # the cavities behind them
    assert np.array_equal(loaded.mirror[loaded.mirror], np.arange(loaded.num_vertices))


def test_mean_value_uvs_keep_a_patch_for_each_hole_and_do_not_fold():
    points, oval = _disk_points(n_inner=300)
    faces = triangulate_disk(points, oval)
    centre = np.argmin(np.linalg.norm(points[:, :2], axis=1))
    holed = faces[~(faces == centre).any(axis=1)]  # remove the fan around one vertex: a hole
    holed = holed - (holed > centre)  # and the vertex
    points = np.delete(points, centre, axis=0)
    assert len(boundary_loops(holed)) == 2
    uv = mean_value_uvs(points, holed)
    assert np.all(_signed_area(uv[holed]) > 0)
    # The hole keeps an open patch: its rim surrounds where the removed vertex would sit.
    rim = [loop for loop in boundary_loops(holed) if len(loop) < len(oval)][0]
    assert np.ptp(uv[rim], axis=0).min() > 0.01


def test_edges_are_inserted_by_flips_without_breaking_the_embedding():
    points, oval = _disk_points(n_inner=80, seed=3)
    faces = triangulate_disk(points, oval)
    edges = {tuple(e) for e in np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1).tolist()}
    # A chord between two interior points that is not an edge yet but crosses only a few.
    interior = np.arange(len(oval), len(points))
    distance = np.linalg.norm(points[interior, None, :2] - points[None, interior, :2], axis=-1)
    a, b = next((int(interior[i]), int(interior[j])) for i, j in zip(*np.nonzero((distance > 0.25) & (distance < 0.35)))
                if (min(interior[i], interior[j]), max(interior[i], interior[j])) not in edges)
    wanted = {(min(a, b), max(a, b))}
    out = insert_edges_by_flips(points[:, :2], faces, wanted)
    new_edges = {tuple(e) for e in np.sort(out[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1).tolist()}
    assert wanted <= new_edges
    assert len(out) == len(faces) and np.all(_signed_area(points[out][:, :, :2]) > 0)
