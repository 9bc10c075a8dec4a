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
        """(B, Vs, C) -> (B, K, C): each cavity vertex's weighted sum of its rim."""
        return torch.matmul(self.rim_matrix, values[:, self.rim])

    def follow(self, surface: torch.Tensor) -> torch.Tensor:
        """(B, Vs, C) per-vertex displacements -> (B, V, C): each cavity vertex moves with its rim."""
        return torch.cat([surface, self._rim_sums(surface)], dim=1)

    def positions(self, surface: torch.Tensor) -> torch.Tensor:
        """(B, Vs, 3) metres in the face's frame -> (B, V, 3)."""
        return torch.cat([surface, self._rim_sums(surface) + self.offsets], dim=1)

    def albedo(self, surface: torch.Tensor) -> torch.Tensor:
        """(B, Vs, 3) albedo -> (B, V, 3): a cavity takes its rim's colour, shaded darker inward."""
        return torch.cat([surface, self._rim_sums(surface) * self.shade], dim=1)


class VertexDecoder(nn.Module):
    """MLP from a code (B, D) to per-vertex values on the coarse level, upsampled to (B, V, C).

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

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        coarse = self.mlp(code).view(code.shape[0], self.upsampler.coarse_vertices, self.channels)
        return self.upsampler(coarse)


class IdentityDecoder(nn.Module):
    """Identity features (B, Di) -> neutral 3D face (B, V, 3) = template + learned offsets, metres."""

    template: torch.Tensor  # buffer (V, 3)

    def __init__(self, identity_dim: int, hidden: int, template: torch.Tensor, upsampler: SubdivisionUpsampler,
                 offset_scale: float) -> None:
        super().__init__()
        self.register_buffer("template", template, persistent=False)
        self.offsets = VertexDecoder(identity_dim, hidden, upsampler)
        self.offset_scale = offset_scale

    def forward(self, identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the neutral shape (B, V, 3) and the offsets from the template (B, V, 3)."""
        offsets = self.offset_scale * self.offsets(identity)
        return self.template + offsets, offsets


class ExpressionDecoder(nn.Module):
    """Expression features (B, De) **and** the identity shape (B, V, 3) -> intermediate shape.

    The identity shape enters through a learned linear summary of its base vertices, so the
    same expression code can move different faces differently.
    """

    template_base: torch.Tensor  # buffer (468, 3)

    def __init__(self, expression_dim: int, shape_code_dim: int, hidden: int, template: torch.Tensor,
                 upsampler: SubdivisionUpsampler, offset_scale: float) -> None:
        super().__init__()
        self.register_buffer("template_base", template[:NUM_BASE_VERTICES], persistent=False)
        self.shape_encoder = nn.Linear(NUM_BASE_VERTICES * 3, shape_code_dim)
        self.offsets = VertexDecoder(expression_dim + shape_code_dim, hidden, upsampler)
        self.offset_scale = offset_scale

    def forward(self, expression: torch.Tensor, identity_shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the intermediate (expressive) shape (B, V, 3) and the expression offsets (B, V, 3)."""
        base = identity_shape[:, :NUM_BASE_VERTICES] - self.template_base
        shape_code = self.shape_encoder(base.flatten(1) / self.offset_scale)
        offsets = self.offset_scale * self.offsets(torch.cat([expression, shape_code], dim=1))
        return identity_shape + offsets, offsets
