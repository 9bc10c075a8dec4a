"""Smooth vertex normals of a triangle mesh, shared by the exporters and the visibility of a posed face."""

from __future__ import annotations

import numpy as np

from model.mesh import kernels


def area_weighted_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, (V, 3) float32; +Z where undefined (a vertex no
    triangle of non-zero area uses). Triangles counter-clockwise seen from their front. Each
    vertex sums its triangles' normals (cross products, as long as twice their areas) in one
    compiled pass (:func:`model.mesh.kernels.area_weighted_normals`)."""
    return kernels.area_weighted_normals(np.ascontiguousarray(vertices, dtype=np.float32),
                                         np.ascontiguousarray(faces, dtype=np.int64))
