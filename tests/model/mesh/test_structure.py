import numpy as np

from model.mesh.structure import MeshStructure, VertexGroups, mesh_structure
from tests.model.mesh.test_visibility import grid_mesh


def group_members(groups: VertexGroups, vertex: int) -> list[int]:
    """A vertex's group as the table and overflow hold it (padding is one past the last member)."""
    padding = groups.table.max()
    in_table = [int(member) for member in groups.table[:, vertex] if member != padding]
    return in_table + groups.overflow_members[groups.overflow_vertices == vertex].tolist()


def test_mesh_structure_neighbours_and_cache():
    points, faces = grid_mesh(3, 3, 0, 0, 1, 0)
    structure = MeshStructure.build(faces, 10)  # vertex 9 is in no triangle
    neighbours = structure.neighbours
    centre_group = group_members(neighbours, 4)
    assert centre_group[0] == 4 and len(centre_group) == 7 == neighbours.counts[4]
    assert sorted(centre_group) == sorted(set(faces[(faces == 4).any(axis=1)].ravel().tolist()))
    assert len(neighbours.overflow_vertices) > 0  # the centre's group is longer than the most common one
    assert group_members(neighbours, 9) == [9] and neighbours.counts[9] == 1  # itself only
    values = np.arange(10, dtype=np.float64)
    assert structure.neighbour_min(values)[8] == 4 and structure.neighbour_min(values)[9] == 9
    assert mesh_structure(faces, 10) is mesh_structure(faces.copy(), 10)


def test_neighbour_reductions_match_plain_ones_over_each_group(topology):
    faces, count = topology.faces, topology.num_vertices
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    rows = np.concatenate([np.arange(count), edges[:, 0], edges[:, 1]])
    members = np.concatenate([np.arange(count), edges[:, 1], edges[:, 0]])
    structure = mesh_structure(faces, count)
    assert len(structure.neighbours.overflow_vertices) > 0  # the topology has a few long groups
    np.testing.assert_array_equal(structure.neighbours.counts, np.bincount(rows, minlength=count))
    values = np.random.default_rng(0).random((count, 4))
    expected_min = np.full(count, np.inf)
    np.minimum.at(expected_min, rows, values[members, 0])
    np.testing.assert_array_equal(structure.neighbour_min(values[:, 0]), expected_min)
    expected_sum = np.zeros((count, 4))
    np.add.at(expected_sum, rows, values[members])
    expected_mean = expected_sum / structure.neighbours.counts[:, None]
    np.testing.assert_allclose(structure.neighbour_mean(values), expected_mean, rtol=1e-12)
    np.testing.assert_allclose(structure.neighbour_mean(values[:, 1]), expected_mean[:, 1], rtol=1e-12)
    single = structure.neighbour_mean(values.astype(np.float32))
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected_mean, rtol=1e-5)

