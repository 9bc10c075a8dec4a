"""Rotations, the pose transform, camera projection and vertex normals (torch).

Frames: the face model lives in metres with +X to the subject's left, +Y up and +Z toward the
camera. The pose transform maps it into normalised crop coordinates (NDC): x in [-1, 1] from the
crop's left to right edge, y in [-1, 1] from bottom to top, z toward the camera in the same
units. The camera is orthographic (scaled orthographic once the scale is included), so
projection to pixels only rescales x and y.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Continuous 6D rotation representation (B, 6) -> rotation matrices (B, 3, 3).

    The two 3-vectors are orthonormalised (Gram-Schmidt) into the first two columns; the
    third is their cross product, so the result is always a proper rotation.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def euler_to_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Angles in radians (B,) -> R = Rz(roll) @ Ry(yaw) @ Rx(pitch), (B, 3, 3).

    Positive yaw turns the nose toward +X (the image's right, the subject's left), positive
    pitch tilts the chin down, positive roll turns the face counter-clockwise as seen in
    the image.
    """
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def matrix_to_euler_degrees(rotation: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (B, 3, 3) -> (B, 3) yaw, pitch, roll in degrees (inverse of
    :func:`euler_to_matrix`; yaw in [-90, 90])."""
    sin_yaw = (-rotation[:, 2, 0]).clamp(-1.0, 1.0)
    yaw = torch.asin(sin_yaw)
    pitch = torch.atan2(rotation[:, 2, 1], rotation[:, 2, 2])
    roll = torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0])
    return torch.stack([yaw, pitch, roll], dim=-1) * (180.0 / math.pi)


def pose_transform(
    vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """posed = scale * R @ v + t.

    vertices (B, V, 3) metres, rotation (B, 3, 3), translation (B, 3) NDC, scale (B,) NDC per
    metre -> (B, V, 3) NDC. Computed on (B, 3, V), where ONNX Runtime broadcasts over V (a 3-wide
    last axis costs it a few times more).
    """
    posed = (scale[:, None, None] * rotation) @ vertices.transpose(1, 2) + translation[:, :, None]
    return posed.transpose(1, 2)


def project_to_pixels(ndc: torch.Tensor, image_size: int) -> torch.Tensor:
    """Orthographic projection of NDC points (B, N, 3) to crop pixels (B, N, 2).

    Pixel x grows to the right and y downwards, with (0, 0) the crop's top-left corner and
    pixel centres at +0.5.
    """
    half = image_size / 2.0
    to_pixels = ndc.new_tensor([[half, 0.0, 0.0], [0.0, -half, 0.0]])
    return (to_pixels @ ndc.transpose(1, 2) + half).transpose(1, 2)  # on (B, 2, N), as pose_transform


def ndc_to_screen(ndc: torch.Tensor, image_size: int) -> torch.Tensor:
    """NDC (B, N, 3) -> renderer screen space (B, N, 3): pixels x, y and depth z (larger nearer)."""
    return torch.cat([project_to_pixels(ndc, image_size), ndc[..., 2:] * (image_size / 2.0)], dim=-1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (B, V, 3) of counter-clockwise triangles faces (F, 3)."""
    v0, v1, v2 = (vertices[:, faces[:, k]] for k in range(3))
    face_normals = torch.cross(v1 - v0, v2 - v0, dim=-1)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals = normals.index_add(1, faces[:, k], face_normals)
    return F.normalize(normals, dim=-1, eps=1e-12)
