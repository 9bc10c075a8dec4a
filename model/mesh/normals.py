"""Smooth vertex normals of a triangle mesh (numpy only), shared by the exporters and the
visibility of a posed face."""

from __future__ import annotations

import numpy as np


def area_weighted_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, (V, 3) float32; +Z where undefined (a vertex no
    triangle of non-zero area uses). Triangles counter-clockwise seen from their front."""
    points = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    ux, uy, uz = x[b] - x[a], y[b] - y[a], z[b] - z[a]
    vx, vy, vz = x[c] - x[a], y[c] - y[a], z[c] - z[a]
    # each triangle's normal (twice its area long) added to its three corners
    corners = faces.reshape(-1)
    sums = np.stack([np.bincount(corners, weights=np.repeat(component, 3), minlength=len(points))
                     for component in (uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx)], axis=1)
    lengths = np.sqrt((sums * sums).sum(axis=1, keepdims=True))
    normals = np.where(lengths > 0, sums / np.where(lengths > 0, lengths, 1.0), [0.0, 0.0, 1.0])
    return normals.astype(np.float32)
