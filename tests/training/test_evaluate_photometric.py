"""The per-region photometric evaluation measures how far the rendered face's colours are from the photo's."""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")

from model.topology import REGION_NAMES  # noqa: E402
from service.cli import main  # noqa: E402
from training.checkpoint import save_checkpoint  # noqa: E402
from training.config import AugmentConfig  # noqa: E402
from training.data.dataset import PreparedFaces  # noqa: E402
from training.evaluate_photometric import evaluate_photometric  # noqa: E402
from training.losses import FaceLoss, LossWeights  # noqa: E402


def test_a_black_face_scores_the_photos_own_colour_and_the_mean_is_the_region_image_loss(face_model, topology,
                                                                                         synthetic_data):
    metrics = evaluate_photometric(face_model, synthetic_data, topology)
    assert metrics["crops"] == 4  # the synthetic folder's validation split
    assert set(metrics["by_region"]) == set(REGION_NAMES)
    # The mean is the training loss's region term (unweighted) on the same crops.
    crops = PreparedFaces(synthetic_data, "val", topology, AugmentConfig(output_size=face_model.image_size))
    batch = {k: torch.stack([crops[i][k] for i in range(len(crops))]) for k in ("image", "photo_mask")}
    with torch.no_grad():
        loss = FaceLoss(topology, LossWeights(), face_model.image_size).region_image_loss(
            face_model(batch["image"]), batch["image"], batch["photo_mask"])
    assert metrics["mean"] == pytest.approx(float(loss), abs=1e-4)

    # With a black albedo every region's error becomes the photo's own brightness there (the
    # synthetic faces' colours are 0.3-0.9 per channel under shading), well above the grey face's.
    black = copy.deepcopy(face_model)
    with torch.no_grad():
        black.albedo_decoder.mlp[-1].bias.fill_(-30.0)
    dark = evaluate_photometric(black, synthetic_data, topology)
    assert dark["mean"] > metrics["mean"] + 0.1
    for name, error in dark["by_region"].items():
        if dark["regions_present"][name]:
            assert 0.2 < error < 3**0.5, name


def test_the_command_prints_one_json_line(face_model, synthetic_data, tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, face_model, steps=0)
    assert main(["evaluate-photometric", "--checkpoint", str(checkpoint), "--data", str(synthetic_data),
                 "--samples", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["crops"] == 2 and printed["checkpoint"] == str(checkpoint)
    assert main(["evaluate-photometric", "--checkpoint", str(tmp_path / "missing.pt")]) != 0
    assert "checkpoint not found" in capsys.readouterr().err
