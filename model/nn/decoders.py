"""Decoders from the first representation (features) to 3D, with no PCA basis.

Decoders predict per-vertex values on a coarse level of the subdivided face mesh; a fixed
midpoint upsampling (:class:`SubdivisionUpsampler`) carries them to the full output mesh, whose
template keeps its own smooth dense geometry.
"""

from __future__ import annotations

import torch
from torch import nn

from model.topology import NUM_BASE_VERTICES, FaceTopology


class SubdivisionUpsampler(nn.Module):
    """Midpoint upsampling of per-vertex values (B, Vc, C) -> (B, V, C).

    Each vertex a subdivision level adds takes the mean of its edge's two parents.
    """

    def __init__(self, topology: FaceTopology, coarse_level: int) -> None:
        super().__init__()
        sizes = topology.level_sizes
        self.coarse_vertices = sizes[coarse_level]
        self.levels = len(sizes) - 1 - coarse_level
        for k in range(self.levels):
            start, stop = sizes[coarse_level + k], sizes[coarse_level + k + 1]
            parents = torch.as_tensor(topology.edge_parents[start - NUM_BASE_VERTICES : stop - NUM_BASE_VERTICES])
            self.register_buffer(f"parents_{k}", parents, persistent=False)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        for k in range(self.levels):
            parents = getattr(self, f"parents_{k}")
            values = torch.cat([values, 0.5 * (values[:, parents[:, 0]] + values[:, parents[:, 1]])], dim=1)
        return values


class CavityAttachment(nn.Module):
    """Surface vertices (B, Vs, C) -> all vertices (B, V, C): appends the cavity vertices (the inside
    of the mouth, the eyeballs), each a fixed weighted sum of its opening's rim plus, for
    positions, a fixed offset in the face's own frame (``FaceTopology.attach_cavities``)."""

    rim: torch.Tensor  # buffer (R,): the openings' rim vertices
    rim_matrix: torch.Tensor  # buffer (K, R): each cavity vertex's weights on them
    offsets: torch.Tensor  # buffer (K, 3)
    shade: torch.Tensor  # buffer (K, 1)

    def __init__(self, topology: FaceTopology) -> None:
        super().__init__()
        rim, rim_matrix = topology.cavity_rim_matrix()
        self.register_buffer("rim", torch.as_tensor(rim), persistent=False)
        self.register_buffer("rim_matrix", torch.as_tensor(rim_matrix), persistent=False)
        self.register_buffer("offsets", torch.as_tensor(topology.cavity_offsets), persistent=False)
        self.register_buffer("shade", torch.as_tensor(topology.cavity_shade)[:, None], persistent=False)

    def _rim_sums(self, values: torch.Tensor) -> torch.Tensor:
        """(B, Vs, C) -> (B, K, C): each cavity vertex's weighted sum of its rim (as (B, C, R) @ (R, K):
        one product over the whole batch in ONNX Runtime, where (K, R) @ (B, R, C) is one per row)."""
        return (values[:, self.rim].transpose(1, 2) @ self.rim_matrix.T).transpose(1, 2)

    def follow(self, surface: torch.Tensor) -> torch.Tensor:
        """(B, Vs, C) per-vertex displacements -> (B, V, C): each cavity vertex moves with its rim."""
        return torch.cat([surface, self._rim_sums(surface)], dim=1)

    def attach(self, neutral: torch.Tensor, expressive: torch.Tensor,
               albedo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The neutral and expressive surfaces (B, Vs, 3), metres in the face's frame, and the
        surface albedo (B, Vs, 3) -> the same three on all vertices (B, V, 3): a cavity vertex's
        position is its rim's weighted sum plus its fixed offset, its albedo its rim's colour
        shaded darker inward. One product with the rim matrix serves all three (stacked on the
        batch axis: one wide operation instead of three in the exported graph)."""
        neutral_rims, expressive_rims, albedo_rims = self._rim_sums(torch.cat([neutral, expressive, albedo])).chunk(3)
        return (torch.cat([neutral, neutral_rims + self.offsets], dim=1),
                torch.cat([expressive, expressive_rims + self.offsets], dim=1),
                torch.cat([albedo, albedo_rims * self.shade], dim=1))


class VertexDecoder(nn.Module):
    """MLP from a code (B, D) to per-vertex values on the coarse level (B, Vc, C), which the
    upsampler carries to the surface (:meth:`model.nn.face_model.FaceReconstructionModel.decode`
    upsamples all decoders' values together).

    The last layer starts at zero, so an untrained decoder outputs zeros (the template).
    """

    def __init__(self, in_dim: int, hidden: int, upsampler: SubdivisionUpsampler, channels: int = 3) -> None:
        super().__init__()
        self.upsampler = upsampler
        self.channels = channels
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, upsampler.coarse_vertices * channels),
        )
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def restart(self, output_std: float = 1e-3) -> None:
        """Fresh hidden layers and small random output weights (std ``output_std``), the output bias
        kept: the decoder outputs about what its bias says for every code, as before if it had
        collapsed to that, but with live ReLUs and a little dependence on the code, so training
        can grow it (exactly zero weights would be a saddle for terms that compare two outputs)."""
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        for layer in list(self.mlp)[:-1]:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        nn.init.normal_(last.weight, std=output_std)

    def coarse(self, code: torch.Tensor) -> torch.Tensor:
        """(B, D) -> the values on the coarse level (B, Vc, C), before upsampling."""
        return self.mlp(code).view(code.shape[0], self.upsampler.coarse_vertices, self.channels)


class IdentityDecoder(nn.Module):
    """Identity features (B, Di) -> neutral 3D face (B, V, 3) = template + learned offsets, metres
    (the offsets on the coarse level here, upsampled by the model's decode)."""

    template: torch.Tensor  # buffer (V, 3)

    def __init__(self, identity_dim: int, hidden: int, template: torch.Tensor, upsampler: SubdivisionUpsampler,
                 offset_scale: float) -> None:
        super().__init__()
        self.register_buffer("template", template, persistent=False)
        self.offsets = VertexDecoder(identity_dim, hidden, upsampler)
        self.offset_scale = offset_scale

    def coarse_offsets(self, identity: torch.Tensor) -> torch.Tensor:
        """(B, Di) -> the offsets from the template on the coarse level (B, Vc, 3), metres."""
        return self.offset_scale * self.offsets.coarse(identity)


class ExpressionDecoder(nn.Module):
    """Expression features (B, De) **and** the identity shape (its offsets from the template) ->
    the expression offsets that give the intermediate shape (upsampled by the model's decode).

    The identity shape enters through a learned linear summary of its base vertices, so the
    same expression code can move different faces differently.
    """

    def __init__(self, expression_dim: int, shape_code_dim: int, hidden: int, upsampler: SubdivisionUpsampler,
                 offset_scale: float) -> None:
        super().__init__()
        self.shape_encoder = nn.Linear(NUM_BASE_VERTICES * 3, shape_code_dim)
        self.offsets = VertexDecoder(expression_dim + shape_code_dim, hidden, upsampler)
        self.offset_scale = offset_scale

    def coarse_offsets(self, expression: torch.Tensor, identity_offsets: torch.Tensor) -> torch.Tensor:
        """Expression features (B, De) and the identity's offsets from the template (B, >=468, 3),
        metres -> the expression offsets on the coarse level (B, Vc, 3), metres."""
        base = identity_offsets[:, :NUM_BASE_VERTICES]
        shape_code = self.shape_encoder(base.flatten(1) / self.offset_scale)
        return self.offset_scale * self.offsets.coarse(torch.cat([expression, shape_code], dim=1))
