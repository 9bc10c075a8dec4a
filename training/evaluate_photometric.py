"""Photometric evaluation (issue 14 item 3): how well does the rendered face (albedo x SH shading on
the reconstructed shape) match the photo, region by region, on held-out faces?

``facerecon evaluate-photometric --checkpoint C [--data DIR] [--samples N]`` renders each
validation crop of a prepared data folder (the subject-disjoint split: held-out people, no
augmentation) with the checkpoint's shape, albedo and lighting, and prints one JSON line:

- ``by_region``: each of :data:`model.topology.REGION_NAMES`' mean colour error (RGB distance,
  channels in [0, 1]) over the crops that show it (at least 4 covered pixels where the real,
  unoccluded photo is), each crop's region error being the mean over the region's own pixels;
- ``mean``: the mean of the crops' region means (the region image loss without its weight);
- ``crops`` and ``regions_present`` (crops per region).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from model.nn.face_model import FaceReconstructionModel
from model.topology import REGION_NAMES, FaceTopology
from training.config import AugmentConfig
from training.data.dataset import PreparedFaces
from training.losses import FaceLoss, LossWeights


def evaluate_photometric(model: FaceReconstructionModel, data: Path, topology: FaceTopology, *,
                         samples: int | None = None, batch_size: int = 32) -> dict[str, object]:
    """Per-region photometric error of ``model`` on the validation split of ``data``."""
    dataset = PreparedFaces(data, "val", topology, AugmentConfig(output_size=model.image_size), limit=samples)
    if len(dataset) == 0:
        raise ValueError(f"{data} has no validation crops")
    loss = FaceLoss(topology, LossWeights(), model.image_size)
    model.eval()
    sums = torch.zeros(len(REGION_NAMES), dtype=torch.float64)
    counts = torch.zeros(len(REGION_NAMES), dtype=torch.int64)
    crop_means = []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
            errors, present = loss.region_image_errors(model(batch["image"]), batch["image"], batch["photo_mask"])
            sums += errors.sum(dim=0).double()
            counts += present.sum(dim=0)
            crop_means.append(errors.sum(dim=1) / present.sum(dim=1).clamp(min=1))
    by_region = {name: round(float(sums[i] / counts[i]), 5) if counts[i] else None
                 for i, name in enumerate(REGION_NAMES)}
    return {"crops": len(dataset), "mean": round(float(torch.cat(crop_means).mean()), 5), "by_region": by_region,
            "regions_present": {name: int(counts[i]) for i, name in enumerate(REGION_NAMES)}}
