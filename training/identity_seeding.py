"""Seed the identity branch with the expression branch's shape (a fine-tune's starting point).

The landmark recipe trained a model whose identity branch collapsed to one face for everyone:
every difference between people went into the expression branch, which therefore holds each
photo's whole shape (1.3 mm spread between people, against 0.2 mm for the neutral faces of an
identity branch restarted and trained on top). Restarted, the identity branch has to learn the
person's shape from nothing while the expression branch already fits it, and the fine-tune's
terms move little of it over.

Seeding turns this around: the identity head and decoder are set to compute what the expression
head and decoder computed, so at the start the neutral face is the photo's shape (the canonical
face of before), and the expression branch is set to add next to nothing there. The
canonical face, and with it every landmark, stays what it was. The fine-tune then takes out of
the neutral face what is not the person's (the neutral prior closes the mouth; the identity
exchange and same-person consistency keep what a person's photos share) and the expression
branch learns to put the photo's expression back.

Only where expressions barely change the face: each coarse vertex hands the identity branch its
region's share (:data:`IDENTITY_SHARES`: the forehead, nose, cheeks and jaw all of it, the brows
half, the eyes and lips none), ramping over a few rings of the mesh inside the regions that
share. Elsewhere the expression branch keeps what it computed and the neutral face keeps the old
identity branch's (one face for everyone, lips closed by the earlier fine-tune): an open mouth
or a smile does not start out in the neutral face.

Exactly: with the old identity decoder's output replaced by its mean over ``images`` (its spread
is a fraction of a millimetre) and the shape code it fed the expression decoder by its mean, the
canonical face is the old one and the neutral face the old canonical face where the share is 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model.mesh.structure import mesh_structure
from model.nn.face_model import FaceReconstructionModel
from model.topology import NUM_BASE_VERTICES, REGION_NAMES, FaceTopology

SPARE_STD = 1e-3  # weights of the identity code's extra dimensions (the expression code has fewer)
# Share of each region's shape the identity branch takes over (unlisted regions: none).
IDENTITY_SHARES = {"forehead": 1.0, "nose": 1.0, "cheek_left": 1.0, "cheek_right": 1.0, "chin_jaw": 1.0,
                   "brow_left": 0.5, "brow_right": 0.5}
SHARE_SMOOTHING_RINGS = 4  # rings of the full mesh the shares ramp over (no seam between regions)


def identity_shares(topology: FaceTopology, coarse_vertices: int) -> torch.Tensor:
    """(Vc,) float32 in [0, 1]: each coarse vertex's share for the identity branch."""
    names = [REGION_NAMES[r] for r in topology.regions]
    share = np.array([IDENTITY_SHARES.get(name, 0.0) for name in names], np.float32)
    structure = mesh_structure(topology.faces, topology.num_vertices)
    # eroded, then averaged over as many rings: a smooth ramp inside the regions that share, none
    # reaching into those that do not
    for _ in range(SHARE_SMOOTHING_RINGS):
        share = structure.neighbour_min(share)
    for _ in range(SHARE_SMOOTHING_RINGS):
        share = structure.neighbour_mean(share)
    return torch.as_tensor(share[:coarse_vertices])


def _linear(layer: nn.Module) -> nn.Linear:
    assert isinstance(layer, nn.Linear)
    return layer


@torch.no_grad()
def seed_identity_from_expression(model: FaceReconstructionModel, topology: FaceTopology, images: torch.Tensor,
                                  generator: torch.Generator | None = None) -> None:
    """Hand the identity branch the expression branch's shape of the photo, region by region (see
    the module's docstring). ``topology``: the model's. images (N, 3, S, S) in [0, 1], training
    photos: the old identity decoder's output and shape code are averaged over them."""
    was_training = model.training
    model.eval()
    codes = model.encode(images)
    identity_mlp = model.identity_decoder.offsets.mlp
    expression_decoder = model.expression_decoder
    identity_coarse = identity_mlp(codes.identity).mean(dim=0)  # (Vc * 3,)
    base = model.identity_decoder.coarse_offsets(codes.identity)[:, :NUM_BASE_VERTICES]
    shape_code = expression_decoder.shape_encoder(base.flatten(1) / expression_decoder.offset_scale).mean(dim=0)

    expression_dim = codes.expression.shape[1]
    identity_dim = codes.identity.shape[1]
    if identity_dim < expression_dim:
        raise ValueError(f"identity code ({identity_dim}) shorter than the expression code ({expression_dim})")

    # encoder heads: the identity code's first dimensions are the expression code
    source_first, source_last = _linear(model.encoder.expression_head[0]), _linear(model.encoder.expression_head[-1])
    target_first, target_last = _linear(model.encoder.identity_head[0]), _linear(model.encoder.identity_head[-1])
    target_first.weight.copy_(source_first.weight)
    target_first.bias.copy_(source_first.bias)
    target_last.weight.normal_(0.0, SPARE_STD, generator=generator)
    target_last.bias.zero_()
    target_last.weight[:expression_dim] = source_last.weight
    target_last.bias[:expression_dim] = source_last.bias

    # decoders: the expression decoder's first layer read the expression code and the shape code
    # (now constant: its mean folds into the bias), its output is scaled to the identity decoder's
    source, target = expression_decoder.offsets.mlp, identity_mlp
    first, into = _linear(source[0]), _linear(target[0])
    into.weight.normal_(0.0, SPARE_STD, generator=generator)
    into.weight[:, :expression_dim] = first.weight[:, :expression_dim]
    into.bias.copy_(first.bias + first.weight[:, expression_dim:] @ shape_code)
    _linear(target[2]).weight.copy_(_linear(source[2]).weight)
    _linear(target[2]).bias.copy_(_linear(source[2]).bias)
    # each coarse vertex's rows (x, y, z) split between the two branches by its share
    share = identity_shares(topology, model.identity_decoder.offsets.upsampler.coarse_vertices)
    rows = share.to(first.weight.device).repeat_interleave(3)[:, None]
    ratio = expression_decoder.offset_scale / model.identity_decoder.offset_scale
    last, out = _linear(source[-1]), _linear(target[-1])
    out.weight.copy_(last.weight * ratio * rows)
    out.bias.copy_(last.bias * ratio * rows[:, 0] + identity_coarse)
    spare = torch.empty_like(last.weight).normal_(0.0, SPARE_STD, generator=generator)
    last.weight.copy_(last.weight * (1.0 - rows) + spare * rows)
    last.bias.mul_(1.0 - rows[:, 0])
    # the expression decoder's view of the identity shape (its shape code) is held at the old mean,
    # so that its own share stays what it computed; training can open it again
    first.bias.add_(first.weight[:, expression_dim:] @ shape_code)
    first.weight[:, expression_dim:] = 0.0
    model.train(was_training)
