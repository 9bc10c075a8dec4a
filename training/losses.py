"""Training losses: landmark loss, per-region image loss and regularisers (weighted sum)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.nn.face_model import FaceReconstruction
from model.nn.geometry import ndc_to_screen, vertex_normals
from model.nn.renderer import render
from model.nn.shading import shade
from model.topology import NUM_BASE_VERTICES, REGION_NAMES, FaceTopology


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms of the total loss (0 switches a term off)."""

    landmarks: float = 1.0
    region_image: float = 0.5
    identity_offsets: float = 0.02
    expression_offsets: float = 0.02
    smoothness: float = 50.0
    symmetry: float = 5.0
    albedo_smoothness: float = 1.0
    # Albedo x light is ambiguous (a dark face under bright light renders as a light face under dim
    # light; a tint may sit in either): this pulls each SH light toward white (its three colour
    # channels equal) with a unit ambient term, so skin colour and brightness go into the albedo.
    white_light: float = 0.0
    # Extra weight of landmark groups (multiplies the base weight of 1).
    eyes: float = 3.0
    brows: float = 2.0
    lips: float = 3.0
    face_oval: float = 2.0


def landmark_weights(weights: LossWeights) -> np.ndarray:
    """(468,) per-landmark weights, normalised to mean 1."""
    from mediapipe.python.solutions import face_mesh_connections as contours

    def points(*sets: frozenset) -> list[int]:
        return sorted({v for edges in sets for edge in edges for v in edge})

    w = np.ones(NUM_BASE_VERTICES, dtype=np.float32)
    w[points(contours.FACEMESH_LEFT_EYE, contours.FACEMESH_RIGHT_EYE)] = weights.eyes
    w[points(contours.FACEMESH_LEFT_EYEBROW, contours.FACEMESH_RIGHT_EYEBROW)] = weights.brows
    w[points(contours.FACEMESH_LIPS)] = weights.lips
    w[points(contours.FACEMESH_FACE_OVAL)] = weights.face_oval
    return w / w.mean()


def uniform_laplacian(faces: np.ndarray, num_vertices: int) -> torch.Tensor:
    """Sparse (V, V) matrix L with (L v)_i = v_i - mean of v_i's neighbours."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(np.concatenate([edges, edges[:, ::-1]]), axis=1), axis=0)
    edges = np.concatenate([edges, edges[:, ::-1]])
    degree = np.bincount(edges[:, 0], minlength=num_vertices).astype(np.float32)
    rows = np.concatenate([np.arange(num_vertices), edges[:, 0]])
    cols = np.concatenate([np.arange(num_vertices), edges[:, 1]])
    values = np.concatenate([np.ones(num_vertices, np.float32), -1.0 / degree[edges[:, 0]]])
    indices = torch.as_tensor(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(indices, torch.as_tensor(values), (num_vertices, num_vertices),
                                   check_invariants=True).coalesce()


def _apply(matrix: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Sparse (V, V) times batched (B, V, C) -> (B, V, C)."""
    batch, vertices, channels = values.shape
    flat = values.permute(1, 0, 2).reshape(vertices, batch * channels)
    return torch.sparse.mm(matrix, flat).reshape(vertices, batch, channels).permute(1, 0, 2)


class FaceLoss(torch.nn.Module):
    """Total training loss of a batch; ``forward`` returns the total and each weighted term."""

    # buffers
    landmark_w: torch.Tensor  # (468,)
    faces: torch.Tensor  # (F, 3)
    regions: torch.Tensor  # (V,)
    mirror: torch.Tensor  # (V,)
    laplacian: torch.Tensor  # sparse (V, V)

    def __init__(self, topology: FaceTopology, weights: LossWeights, image_size: int) -> None:
        super().__init__()
        self.weights = weights
        self.image_size = image_size
        self.register_buffer("landmark_w", torch.as_tensor(landmark_weights(weights)))
        self.register_buffer("faces", torch.as_tensor(topology.faces))
        self.register_buffer("regions", torch.as_tensor(topology.regions))
        self.register_buffer("mirror", torch.as_tensor(topology.mirror))
        self.register_buffer("laplacian", uniform_laplacian(topology.surface_faces, topology.num_surface_vertices))
        self.num_regions = len(REGION_NAMES)

    def landmark_loss(self, result: FaceReconstruction, target: torch.Tensor) -> torch.Tensor:
        """Weighted mean distance of the 468 projected base vertices to the labels, in crop sides."""
        predicted = result.vertices_2d[:, :NUM_BASE_VERTICES]
        distance = torch.linalg.vector_norm(predicted - target, dim=-1) / self.image_size
        return (distance * self.landmark_w).mean()

    def region_image_loss(self, result: FaceReconstruction, image: torch.Tensor,
                          photo_mask: torch.Tensor) -> torch.Tensor:
        """Rendered face (albedo x SH shading) against the photo, region by region.

        Each region's robust (Charbonnier) error is averaged over its own covered, unoccluded
        pixels, so small regions such as the eyes count as much as the cheeks; the loss is the
        mean over the regions present in each image.
        """
        per_region, present = self.region_image_errors(result, image, photo_mask)
        return (per_region.sum(dim=1) / present.sum(dim=1).clamp(min=1)).mean()

    def region_image_errors(self, result: FaceReconstruction, image: torch.Tensor,
                            photo_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each region's mean colour error (RGB distance, channels in [0, 1]) between the rendered
        face and the photo: (B, R) errors, 0 where the region is absent, and (B, R) bool present
        (at least 4 covered, unoccluded pixels); R = len(REGION_NAMES)."""
        normals = vertex_normals(result.posed_vertices, self.faces)
        colours = shade(result.albedo, normals, result.lighting)
        size = self.image_size
        out = render(ndc_to_screen(result.posed_vertices, size), self.faces, colours, self.regions, size, size)
        error = torch.sqrt((out.image - image).square().sum(dim=1) + 1e-6)  # (B, H, W)
        use = (out.region_map >= 0) & (photo_mask > 0.5)
        labels = torch.where(use, out.region_map, torch.full_like(out.region_map, self.num_regions))
        batch = image.shape[0]
        flat = (labels + torch.arange(batch, device=labels.device)[:, None, None] * (self.num_regions + 1)).flatten()
        sums = torch.zeros(batch * (self.num_regions + 1), device=image.device).index_add(0, flat, error.flatten())
        counts = torch.zeros_like(sums).index_add(0, flat, torch.ones_like(error.flatten()))
        sums = sums.view(batch, -1)[:, : self.num_regions]
        counts = counts.view(batch, -1)[:, : self.num_regions]
        present = counts >= 4
        return torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums)), present

    def forward(self, result: FaceReconstruction,
                batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights
        flip = torch.tensor([-1.0, 1.0, 1.0], device=result.neutral_vertices.device)
        smoothness = sum(
            (100 * _apply(self.laplacian, offsets)).square().mean()
            for offsets in (result.identity_offsets, result.expression_offsets)
        )
        assert isinstance(smoothness, torch.Tensor)  # a sum of two tensors, never the empty sum's 0
        terms: dict[str, torch.Tensor] = {
            "landmarks": w.landmarks * self.landmark_loss(result, batch["landmarks"]),
            # Offsets in centimetres so the weights are O(1).
            "identity_offsets": w.identity_offsets * (100 * result.identity_offsets).square().mean(),
            "expression_offsets": w.expression_offsets * (100 * result.expression_offsets).square().mean(),
            "smoothness": w.smoothness * smoothness,
            "symmetry": w.symmetry * (100 * (result.neutral_vertices - result.neutral_vertices[:, self.mirror] * flip))
            .square().mean(),
            "albedo_smoothness": w.albedo_smoothness
            * _apply(self.laplacian, result.albedo[:, : self.laplacian.shape[0]]).square().mean() * 100,
        }
        if w.white_light > 0:
            lighting = result.lighting  # (B, 9, 3)
            tint = (lighting - lighting.mean(dim=-1, keepdim=True)).square().mean()
            terms["white_light"] = w.white_light * (tint + (lighting[:, 0].mean(dim=-1) - 1.0).square().mean())
        if w.region_image > 0:
            terms["region_image"] = w.region_image * self.region_image_loss(result, batch["image"], batch["photo_mask"])
        total = sum(terms.values())
        assert isinstance(total, torch.Tensor)  # terms is never empty
        return total, {name: float(value.detach()) for name, value in terms.items()}
