"""Training terms that give the identity branch the person and keep expression out of it.

The landmark and image losses alone let the expression branch explain everything (the identity
decoder collapsed to a constant). These terms use what the data knows about people (LFW's person
folders: several photos of one person) and what a neutral face is:

- **identity exchange** (as DECA's shape exchange): a photo rebuilt with the identity features of
  another photo of the same person must still fit its own landmarks;
- **identity consistency and separation** (as RingNet's ring loss): the neutral shapes of one
  person's photos lie closer together than a margin under their distance to another person's;
- **neutral prior**: the neutral face has closed lips (``closed_lip_gap_mm`` between the inner
  lips; the template, a mean over photos, has them slightly parted), the template's open eyes and
  its mouth width (relative to the eye corners), whatever the photo shows, so opening, blinking
  and smiling can only come from the expression branch;
- **rigid expression**: expression offsets on the forehead and nose (which an expression barely
  moves), and optionally less on the cheeks and jaw, cost extra, so the person's shape there must
  come from the identity branch;
- **folds** (optional): neighbouring triangles of the neutral and expressive faces (cavities
  included) that turn past a threshold cost, so closing the lips cannot cross them;
- **teacher** (optional): the identity features of the batch's photos are as similar to each
  other (cosine) as a face-recognition network's embeddings of the same photos
  (:mod:`training.data.identity_embeddings`; a relational distillation, no extra parameters);
- **shape teacher** (optional): the same relation on what the verification reads, the neutral
  shapes themselves: their pairwise distances (each shape centred and scaled to unit size) rise
  and fall with the recognition network's embedding distances (one minus their correlation over
  the batch's pairs; scale-free, so it orders people without inflating or shrinking the faces).

A batch's first ``2 * pairs`` samples are ``pairs`` same-person pairs, partners adjacent
(``training.data.identity_sampling``); ``person`` (B,) holds each sample's person id (-1 unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.nn.face_model import FaceReconstruction
from model.topology import NUM_BASE_VERTICES, REGION_NAMES, FaceTopology

# MediaPipe base-vertex pairs whose distance measures how far the lips part (inner upper / lower
# lip) and the eyes open (upper / lower lid), and the corners that measure the mouth's width and
# the eye-corner distance it is relative to.
LIP_GAPS = ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402))
EYE_GAPS = ((159, 145), (158, 153), (160, 144), (386, 374), (385, 380), (387, 373))
MOUTH_CORNERS = (61, 291)
EYE_CORNERS = (33, 263)
# The regions an expression barely moves: their expression offsets cost the full rigid-expression
# weight; the cheeks (smiles) and the jaw (an opening mouth) cost IdentityWeights.rigid_cheeks /
# rigid_jaw of it.
RIGID_REGIONS = ("forehead", "nose")


@dataclass(frozen=True)
class IdentityWeights:
    """Weights of the identity terms (0 switches a term off; all are off by default, as in the
    landmark-only recipes) and their settings."""

    exchange: float = 0.0  # landmark loss of the identity-exchanged rebuild (crop sides, as the landmark loss)
    consistency: float = 0.0  # same-person mean squared neutral vertex distance (cm^2)
    separation: float = 0.0  # hinge (cm): same-person distance + margin above the distance to another person
    margin_cm: float = 0.3
    neutral_prior: float = 0.0  # lip gaps, eye gaps (mm^2) and mouth width of the neutral face vs the template
    rigid_expression: float = 0.0  # mean squared expression offset (cm^2) on RIGID_REGIONS
    rigid_cheeks: float = 0.0  # the cheeks' share of the rigid-expression weight
    rigid_jaw: float = 0.0  # the chin and jaw's share
    closed_lip_gap_mm: float = 1.0  # the neutral face's inner-lip gap
    folds: float = 0.0  # neighbouring triangles of the neutral and expressive faces folded past fold_degrees
    fold_degrees: float = 60.0
    teacher: float = 0.0  # squared difference of identity-feature and teacher-embedding cosine similarities
    shape_teacher: float = 0.0  # 1 - correlation of neutral-shape and teacher-embedding pair distances


def face_measurements(vertices: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) metres -> (B, 12) lip gaps and eye gaps (mm, 5 + 6) and mouth width over the
    eye-corner distance (x 10, so a 10 % change weighs like a millimetre)."""
    def gap(pairs: tuple[tuple[int, int], ...]) -> torch.Tensor:
        a, b = zip(*pairs)
        return torch.linalg.vector_norm(vertices[:, list(a)] - vertices[:, list(b)], dim=-1) * 1000

    width = torch.linalg.vector_norm(vertices[:, MOUTH_CORNERS[0]] - vertices[:, MOUTH_CORNERS[1]], dim=-1)
    eyes = torch.linalg.vector_norm(vertices[:, EYE_CORNERS[0]] - vertices[:, EYE_CORNERS[1]], dim=-1)
    return torch.cat([gap(LIP_GAPS), gap(EYE_GAPS), (10 * width / eyes)[:, None]], dim=1)


def _interior_edge_faces(faces: np.ndarray) -> np.ndarray:
    """(E, 2) the two triangles on each interior edge of ``faces`` (F, 3)."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    owner = np.repeat(np.arange(len(faces)), 3)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edges, owner = edges[order], owner[order]
    shared = (edges[1:] == edges[:-1]).all(axis=1)
    return np.stack([owner[:-1][shared], owner[1:][shared]], axis=1)


class IdentityLoss(torch.nn.Module):
    """The identity terms of a batch; ``forward`` returns each weighted term."""

    template_measurements: torch.Tensor  # (12,) what the neutral face measures
    rigid: torch.Tensor  # (Vs,) each surface vertex's share of the rigid-expression weight
    mesh_faces: torch.Tensor  # (F, 3)
    edge_faces: torch.Tensor  # (E, 2) the two triangles on each interior edge

    def __init__(self, topology: FaceTopology, weights: IdentityWeights) -> None:
        super().__init__()
        self.weights = weights
        template = torch.as_tensor(topology.vertices, dtype=torch.float32)[None]
        target = face_measurements(template)[0]
        target[: len(LIP_GAPS)] = weights.closed_lip_gap_mm
        self.register_buffer("template_measurements", target)
        names = np.array(REGION_NAMES)[topology.regions[: topology.num_surface_vertices]]
        share = {**dict.fromkeys(RIGID_REGIONS, 1.0), "cheek_left": weights.rigid_cheeks,
                 "cheek_right": weights.rigid_cheeks, "chin_jaw": weights.rigid_jaw}
        self.register_buffer("rigid", torch.as_tensor([share.get(n, 0.0) for n in names], dtype=torch.float32))
        # Every triangle, the cavities' too: they follow the lips' and lids' rims, so an untidy rim
        # folds them even where the surface itself does not.
        self.register_buffer("mesh_faces", torch.as_tensor(topology.faces))
        self.register_buffer("edge_faces", torch.as_tensor(_interior_edge_faces(topology.faces)))
        self.fold_cos = float(np.cos(np.radians(weights.fold_degrees)))

    def fold_penalty(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) -> mean over the mesh's interior edges of how far past ``fold_degrees`` the
        two triangles' normals turn (1 - cos, above the threshold's)."""
        corners = vertices[:, self.mesh_faces]  # (B, F, 3, 3)
        normals = torch.nn.functional.normalize(
            torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1), dim=-1)
        cos = (normals[:, self.edge_faces[:, 0]] * normals[:, self.edge_faces[:, 1]]).sum(dim=-1)
        return torch.relu(self.fold_cos - cos).mean()

    def rigid_expression(self, result: FaceReconstruction) -> torch.Tensor:
        """Mean squared expression offset (cm^2) over the rigid regions' vertices, the cheeks and jaw
        weighed by their shares."""
        per_vertex = (100 * result.expression_offsets).square().sum(dim=-1)  # (B, Vs)
        return (per_vertex * self.rigid).sum(dim=1).mean() / (self.rigid > 0).sum()

    def neutral_prior(self, result: FaceReconstruction) -> torch.Tensor:
        return (face_measurements(result.neutral_vertices) - self.template_measurements).square().mean()

    @staticmethod
    def teacher_loss(identity: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor | None:
        """identity (B, Di) features, embedding (B, E) teacher embeddings (zeros where none) ->
        mean squared difference of their pairwise cosine similarities over the photos with one."""
        known = embedding.abs().sum(dim=1) > 0
        if known.sum() < 2:
            return None
        features = torch.nn.functional.normalize(identity[known], dim=1)
        targets = torch.nn.functional.normalize(embedding[known], dim=1)
        off_diagonal = ~torch.eye(len(features), dtype=torch.bool, device=features.device)
        return ((features @ features.T - targets @ targets.T)[off_diagonal]).square().mean()

    @staticmethod
    def shape_teacher_loss(shapes: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor | None:
        """shapes (B, V, 3) neutral vertices, embedding (B, E) teacher embeddings (zeros where none) ->
        1 - Pearson correlation, over the pairs of photos with an embedding, of the shapes' distance
        (mean vertex distance once each is centred and scaled to unit RMS radius) and the embeddings'
        Euclidean distance; None with fewer than three such photos."""
        known = embedding.abs().sum(dim=1) > 0
        if known.sum() < 3:
            return None
        centred = shapes[known] - shapes[known].mean(dim=1, keepdim=True)
        unit = centred / centred.square().sum(dim=-1).mean(dim=1).sqrt()[:, None, None]
        first, second = torch.triu_indices(len(unit), len(unit), offset=1, device=unit.device)
        shape_distance = (unit[first] - unit[second]).square().sum(dim=-1).add(1e-12).sqrt().mean(dim=1)
        targets = embedding[known]
        teacher_distance = torch.linalg.vector_norm(targets[first] - targets[second], dim=-1)
        a, b = shape_distance - shape_distance.mean(), teacher_distance - teacher_distance.mean()
        return 1 - (a * b).sum() / (a.norm() * b.norm() + 1e-12)

    def forward(self, result: FaceReconstruction, person: torch.Tensor, pairs: int,
                exchanged_landmark_loss: torch.Tensor | None, identity: torch.Tensor | None = None,
                embedding: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``exchanged_landmark_loss``: the landmark loss of the pairs rebuilt with their partner's
        identity (None when the batch has no pairs); ``identity`` (B, Di) the identity features and
        ``embedding`` (B, E) the teacher's embeddings, for the teacher term."""
        w = self.weights
        terms = {}
        if w.teacher and identity is not None and embedding is not None:
            teacher = self.teacher_loss(identity, embedding)
            if teacher is not None:
                terms["identity_teacher"] = w.teacher * teacher
        if w.shape_teacher and embedding is not None:
            shape_teacher = self.shape_teacher_loss(result.neutral_vertices[:, :NUM_BASE_VERTICES], embedding)
            if shape_teacher is not None:
                terms["identity_shape_teacher"] = w.shape_teacher * shape_teacher
        if w.neutral_prior:
            terms["neutral_prior"] = w.neutral_prior * self.neutral_prior(result)
        if w.rigid_expression:
            terms["rigid_expression"] = w.rigid_expression * self.rigid_expression(result)
        if w.folds:
            terms["folds"] = w.folds * (self.fold_penalty(result.neutral_vertices)
                                        + self.fold_penalty(result.expressive_vertices))
        if pairs == 0:
            return terms
        if exchanged_landmark_loss is not None and w.exchange:
            terms["identity_exchange"] = w.exchange * exchanged_landmark_loss
        # Neutral shapes of the pairs' photos in cm, base vertices (centred: position is the pose's).
        shapes = result.neutral_vertices[: 2 * pairs, :NUM_BASE_VERTICES] * 100
        shapes = shapes - shapes.mean(dim=1, keepdim=True)
        first, second = shapes[0::2], shapes[1::2]
        same = (first - second).square().sum(dim=-1).mean(dim=-1)  # (P,) mean squared vertex distance
        terms["identity_consistency"] = w.consistency * same.mean()
        if pairs > 1:
            # Each pair's first photo against the next pair's second photo: another person.
            other = torch.roll(second, shifts=1, dims=0)
            different_person = person[0 : 2 * pairs : 2] != torch.roll(person[1 : 2 * pairs : 2], 1)
            different = (first - other).square().sum(dim=-1).mean(dim=-1)
            hinge = torch.relu((same + 1e-6).sqrt() - (different + 1e-6).sqrt() + w.margin_cm)
            terms["identity_separation"] = w.separation * (hinge * different_person).mean()
        return terms
