"""Mirror averaging (test-time augmentation): each crop is also reconstructed from its mirror image,
and the two answers are averaged.

The network is not exactly left-right symmetric, so a face and its mirror image give slightly
different meshes; mapped back into the unmirrored crop, their mean is more accurate (AFLW2000-3D
dev, see the README's model card) for one more crop per network run. Outputs are the network's
(see :class:`model.nn.face_model.FaceReconstruction`), each (B, ...) over B crops of S x S pixels.

Mirroring about the crop's vertical centre line maps, per output: vertices (frontal metres and
crop NDC) x -> -x with the left/right vertex permutation; crop pixels x -> S - x, with the vertex
permutation for vertices and the iBUG left/right pairs for landmarks; a rotation R -> F R F with
F = diag(-1, 1, 1), i.e. yaw and roll change sign; translation x -> -x; per-vertex albedo is
permuted; the spherical-harmonics light terms odd in x change sign.

The encoder's codes (identity, expression, pose and albedo codes) have no such map: their spaces
are learned, and nothing says which code a face's mirror image has. They are not averaged: a
mirror-averaged answer carries the unmirrored crop's codes (decoded again, they give the
unmirrored crop's answer, not the average).
"""

from __future__ import annotations

import numpy as np

from model.topology import FaceTopology

VERTEX_OUTPUTS = ("neutral_vertices", "expressive_vertices", "posed_vertices")
SH_ODD_IN_X = (3, 4, 7)  # model.nn.shading.sh_basis terms x, xy and xz
FLIP_X = np.array([-1.0, 1.0, 1.0], dtype=np.float32)


def mirror_outputs(out: dict[str, np.ndarray], topology: FaceTopology, size: int) -> dict[str, np.ndarray]:
    """The outputs of mirrored crops, re-expressed in the frame of the unmirrored crops."""
    mirror = topology.mirror
    mirrored = {name: out[name][:, mirror] * FLIP_X for name in VERTEX_OUTPUTS}
    mirrored["vertices_2d"] = out["vertices_2d"][:, mirror] * FLIP_X[:2] + np.array([size, 0.0], np.float32)
    partner = topology.landmark_mirror
    mirrored["landmarks_2d"] = out["landmarks_2d"][:, partner] * FLIP_X[:2] + np.array([size, 0.0], np.float32)
    mirrored["landmarks_3d"] = out["landmarks_3d"][:, partner] * FLIP_X + np.array([size, 0.0, 0.0], np.float32)
    mirrored["rotation"] = out["rotation"] * FLIP_X[:, None] * FLIP_X[None, :]
    mirrored["euler_degrees"] = out["euler_degrees"] * np.array([-1.0, 1.0, -1.0], np.float32)  # yaw, pitch, roll
    mirrored["translation"] = out["translation"] * FLIP_X
    mirrored["scale"] = out["scale"]
    mirrored["albedo"] = out["albedo"][:, mirror]
    lighting = out["lighting"].copy()
    lighting[:, list(SH_ODD_IN_X)] *= -1.0
    mirrored["lighting"] = lighting
    return mirrored


def average_with_mirror(out: dict[str, np.ndarray], mirrored_crop_out: dict[str, np.ndarray],
                        topology: FaceTopology, size: int) -> dict[str, np.ndarray]:
    """Mean of the outputs for crops (B, ...) and those for the same crops mirrored (B, ...): every
    output :func:`mirror_outputs` maps (not the codes, see the module).

    Rotations are averaged, then projected back onto the rotations (the nearest one, by SVD).
    """
    mirrored = mirror_outputs(mirrored_crop_out, topology, size)
    mean = {name: ((out[name] + mirrored[name]) / 2.0).astype(out[name].dtype)
            for name in mirrored}
    left, _, right = np.linalg.svd(mean["rotation"])
    sign = np.sign(np.linalg.det(left @ right))
    left[:, :, -1] *= sign[:, None]
    mean["rotation"] = (left @ right).astype(out["rotation"].dtype)
    return mean

