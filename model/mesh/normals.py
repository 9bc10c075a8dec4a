"""Smooth vertex normals of a triangle mesh (numpy only), shared by the exporters and the
visibility of a posed face."""

from __future__ import annotations

import numpy as np

from model.mesh.structure import mesh_structure


def triangle_normals(vertices: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(F, 3) float32: each triangle's normal, twice its area long; vertices (V, 3), corners (3, F)
    the triangles' corners as contiguous rows (:attr:`MeshStructure.corner_columns`: one gather a
    coordinate and corner), counter-clockwise seen from their front."""
    points = np.asarray(vertices, dtype=np.float32)
    x, y, z = (np.ascontiguousarray(points[:, k]) for k in range(3))
    a, b, c = corners
    xa, ya, za = x[a], y[a], z[a]
    ux, uy, uz = x[b] - xa, y[b] - ya, z[b] - za
    vx, vy, vz = x[c] - xa, y[c] - ya, z[c] - za
    normals = np.empty((len(a), 3), np.float32)
    normals[:, 0] = uy * vz - uz * vy
    normals[:, 1] = uz * vx - ux * vz
    normals[:, 2] = ux * vy - uy * vx
    return normals


def unit_normals(sums: np.ndarray) -> np.ndarray:
    """Each vertex's summed triangle normals (V, 3) -> unit vertex normals (V, 3) float32; +Z
    where the sum is zero (a vertex no triangle of non-zero area uses)."""
    lengths = np.sqrt(np.einsum("ij,ij->i", sums, sums))
    defined = lengths > 0
    normals = (sums / np.where(defined, lengths, 1.0)[:, None]).astype(np.float32)
    normals[~defined] = (0.0, 0.0, 1.0)
    return normals


def area_weighted_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, (V, 3) float32; +Z where undefined (a vertex no
    triangle of non-zero area uses). Triangles counter-clockwise seen from their front. Each
    vertex sums the normals of its triangles through the mesh's cached corner table
    (:class:`model.mesh.structure.MeshStructure`)."""
    structure = mesh_structure(faces, len(vertices))
    return unit_normals(structure.corner_sum(triangle_normals(vertices, structure.corner_columns)))
