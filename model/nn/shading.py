"""Appearance for the region image loss: per-vertex albedo shaded by spherical-harmonics light."""

from __future__ import annotations

import math

import torch

# Lambertian irradiance constants for SH bands 0, 1, 2 folded into the basis, scaled so that a
# light of (1, 0, ..., 0) shades every normal by exactly 1 (colour = albedo).
_BAND0 = 1.0
_BAND1 = 2.0 / 3.0 * math.sqrt(3.0)
_BAND2 = 0.25 * math.sqrt(15.0)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals (..., 3) -> second-order real SH irradiance basis (..., 9)."""
    x, y, z = normals.unbind(-1)
    return torch.stack(
        [
            torch.full_like(x, _BAND0),
            _BAND1 * y,
            _BAND1 * z,
            _BAND1 * x,
            _BAND2 * x * y,
            _BAND2 * y * z,
            _BAND2 / (2.0 * math.sqrt(3.0)) * (3.0 * z * z - 1.0),
            _BAND2 * x * z,
            _BAND2 / 2.0 * (x * x - y * y),
        ],
        dim=-1,
    )


def shade(albedo: torch.Tensor, normals: torch.Tensor, lighting: torch.Tensor) -> torch.Tensor:
    """Lambertian SH shading.

    albedo (B, V, 3) in [0, 1], normals (B, V, 3) unit, in camera space, lighting (B, 9, 3)
    -> colours (B, V, 3).
    """
    irradiance = sh_basis(normals) @ lighting
    return albedo * irradiance
