"""The structure of a triangle mesh that depends only on its triangles (numpy only): each vertex's
neighbours as a padded table for fast per-vertex reductions, and the rings from the outer rim.
Built once per distinct ``faces`` array content and cached, so a face mesh's structure costs
nothing per request. Used by what the photo saw of a posed face (:mod:`model.mesh.visibility`)
and its colours (:mod:`model.mesh.texture_bake`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

RIM_RINGS = 4  # rings (rim included) that MeshStructure.rim_ring counts; every vertex farther gets this value
_STRUCTURE_CACHE_SIZE = 8


@dataclass(frozen=True)
class VertexGroups:
    """One group of members (row indices of an array to reduce) per vertex, as a padded table.

    table (K, V) int: column v holds the first K members of v's group, padded with the index
    one past the last member (reads the reduction's identity); K is the most common group
    size, so the few longer groups spill their other members into overflow_vertices (M,) and
    overflow_members (M,), one (vertex, member) pair each. counts (V,) float32 group sizes.
    """

    table: np.ndarray
    overflow_vertices: np.ndarray
    overflow_members: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_pairs(cls, vertices: np.ndarray, members: np.ndarray, num_vertices: int, num_members: int
                   ) -> VertexGroups:
        """(vertex, member) pairs (N,) -> the groups of num_vertices vertices, members below
        num_members, each group in the order its pairs come."""
        order = np.argsort(vertices, kind="stable")
        vertices, members = vertices[order], members[order]
        sizes = np.bincount(vertices, minlength=num_vertices)
        slots = np.arange(len(vertices)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # place in the group
        width = int(np.argmax(np.bincount(sizes, minlength=1)))
        table = np.full((width, num_vertices), num_members, dtype=np.intp)
        fits = slots < width
        table[slots[fits], vertices[fits]] = members[fits]
        return cls(table=table, overflow_vertices=vertices[~fits].astype(np.intp),
                   overflow_members=members[~fits].astype(np.intp), counts=sizes.astype(np.float32))

    def reduce(self, ufunc: np.ufunc, values: np.ndarray, identity: float) -> np.ndarray:
        """ufunc (minimum, maximum, add) over each vertex's group of rows of values (N, ...)
        -> (V, ...); identity: the ufunc's identity for values' dtype (what padding reads)."""
        padded = np.empty((len(values) + 1,) + values.shape[1:], values.dtype)
        padded[:-1] = values
        padded[-1] = identity
        reduced = ufunc.reduce(np.take(padded, self.table, axis=0), axis=0)
        ufunc.at(reduced, self.overflow_vertices, values[self.overflow_members])
        return reduced


@dataclass(frozen=True)
class MeshStructure:
    """Neighbourhoods and outer rim of a triangle mesh (topology only).

    neighbours: each vertex's group of itself (first) and its neighbours (the vertices it
    shares an edge with); rim_ring (V,) int: rings from the outer rim (0 on it),
    :data:`RIM_RINGS` for every vertex that far or farther, and for all when the mesh has no
    boundary.
    """

    neighbours: VertexGroups
    rim_ring: np.ndarray

    def neighbour_min(self, values: np.ndarray) -> np.ndarray:
        """(V,) float -> (V,): the smallest value over each vertex and its neighbours."""
        return self.neighbours.reduce(np.minimum, values, np.inf)

    def neighbour_mean(self, values: np.ndarray) -> np.ndarray:
        """(V, ...) float -> (V, ...): the mean value over each vertex and its neighbours."""
        sums = self.neighbours.reduce(np.add, values, 0.0)
        np.divide(sums.T, self.neighbours.counts, out=sums.T)  # (..., V): a long inner loop
        return sums

    @classmethod
    def build(cls, faces: np.ndarray, num_vertices: int) -> MeshStructure:
        """faces (F, 3) indices below num_vertices; an edge used by one triangle only is a
        boundary edge, and the connected boundary with the most vertices is the outer rim."""
        faces = np.asarray(faces, dtype=np.int64)
        count = int(num_vertices)
        src = faces.reshape(-1)
        dst = faces[:, [1, 2, 0]].reshape(-1)
        low, high = np.minimum(src, dst), np.maximum(src, dst)
        keys, uses = np.unique(low * count + high, return_counts=True)
        edge_a, edge_b = np.divmod(keys, count)
        own = np.arange(count, dtype=np.int64)
        neighbours = VertexGroups.from_pairs(np.concatenate([own, edge_a, edge_b]),
                                             np.concatenate([own, edge_b, edge_a]), count, count)

        boundary_a, boundary_b = edge_a[uses == 1], edge_b[uses == 1]
        structure = cls(neighbours=neighbours, rim_ring=np.full(count, RIM_RINGS, dtype=np.int64))
        if len(boundary_a) == 0:
            return structure
        rim = _longest_loop(boundary_a, boundary_b, count)
        ring = structure.rim_ring
        ring[rim] = 0
        reached = ring == 0
        for step in range(1, RIM_RINGS):
            reached = neighbours.reduce(np.maximum, reached, False)
            ring[reached & (ring == RIM_RINGS)] = step
        return structure


def _longest_loop(edge_a: np.ndarray, edge_b: np.ndarray, count: int) -> np.ndarray:
    """Boundary edges (B,) pairs -> (K,) the vertices of the connected boundary with the most vertices."""
    labels = np.arange(count, dtype=np.int64)
    while True:
        lowest = np.minimum(labels[edge_a], labels[edge_b])
        before = labels.copy()
        np.minimum.at(labels, edge_a, lowest)
        np.minimum.at(labels, edge_b, lowest)
        labels = labels[labels]  # pointer jumping: long loops settle in few rounds
        if np.array_equal(labels, before):
            break
    on_boundary = np.unique(np.concatenate([edge_a, edge_b]))
    loop_labels, sizes = np.unique(labels[on_boundary], return_counts=True)
    return on_boundary[labels[on_boundary] == loop_labels[np.argmax(sizes)]]


_structures: dict[tuple[int, bytes], MeshStructure] = {}
_last_structure: list[tuple[np.ndarray, int, MeshStructure]] = []  # the last faces array asked about


def mesh_structure(faces: np.ndarray, num_vertices: int) -> MeshStructure:
    """:meth:`MeshStructure.build`, cached per (vertex count, triangle content)."""
    if _last_structure and _last_structure[0][0] is faces and _last_structure[0][1] == num_vertices:
        return _last_structure[0][2]  # the same array again (a topology's): no hashing
    given = faces
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    key = (int(num_vertices), hashlib.blake2b(faces.tobytes(), digest_size=16).digest())
    structure = _structures.get(key)
    if structure is None:
        if len(_structures) >= _STRUCTURE_CACHE_SIZE:
            _structures.clear()
        structure = _structures[key] = MeshStructure.build(faces, num_vertices)
    _last_structure[:] = [(given, int(num_vertices), structure)]
    return structure
