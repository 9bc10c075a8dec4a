"""Training checkpoints: model weights with the configuration that built them.

A checkpoint is a dict: ``model_config`` (:class:`model.nn.face_model.ModelConfig` as a dict),
``topology_version``, ``state_dict`` (which holds the landmark offsets, (68, 3) metres),
``landmark_calibration`` (what the offsets were fitted on, ``"none"`` if nothing), ``steps`` and
whatever else the trainer adds (optimiser state, the run's config).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.nn.face_model import FaceReconstructionModel, ModelConfig
from model.topology import FaceTopology
from training.config import from_dict

COLOUR_SUMMARY = "encoder.colour_summary."  # state-dict prefix of model.nn.encoders.ColourSummary
IDENTITY_TRUNK = "encoder.identity_trunk."  # state-dict prefix of the identity head's model.nn.encoders.TrunkTail


def save_checkpoint(path: str | Path, model: FaceReconstructionModel, *, steps: int,
                    landmark_calibration: str = "none", extra: dict[str, Any] | None = None) -> None:
    """Write weights, model config, topology version, landmark calibration and the number of training steps."""
    torch.save(
        {
            "model_config": dataclasses.asdict(model.config),
            "topology_version": model.topology_version,
            "state_dict": model.state_dict(),
            "landmark_calibration": landmark_calibration,
            "steps": steps,
            **(extra or {}),
        },
        path,
    )


def load_model_state(model: FaceReconstructionModel, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's weights into ``model``. Checkpoints written before the landmark offsets
    were saved lack them: they load with zero offsets (landmarks on their vertices). A model with an
    encoder colour summary (``EncoderConfig.colour_grid``) that the checkpoint lacks keeps its own,
    freshly initialised one (which adds nothing until it trains). A model with an identity trunk tail
    (``EncoderConfig.identity_trunk_blocks``) that the checkpoint lacks gets it seeded from the
    checkpoint's shared trunk: it answers exactly as before until it trains."""
    seed_tail = model.encoder.identity_trunk is not None and not any(n.startswith(IDENTITY_TRUNK) for n in state_dict)
    fresh = {name: value for name, value in model.state_dict().items()
             if name.startswith(COLOUR_SUMMARY) or (seed_tail and name.startswith(IDENTITY_TRUNK))}
    model.load_state_dict({"landmark_offsets": torch.zeros_like(model.landmark_offsets), **fresh, **state_dict})
    if seed_tail:
        assert model.encoder.identity_trunk is not None
        model.encoder.identity_trunk.seed_from(model.encoder.trunk)


def load_checkpoint(path: str | Path, topology: FaceTopology) -> tuple[FaceReconstructionModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint; refuses a checkpoint made for another topology."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data["topology_version"] != topology.version:
        raise ValueError(
            f"{path} was trained on topology {data['topology_version']}, "
            f"but the loaded topology is {topology.version}"
        )
    model = FaceReconstructionModel(topology, from_dict(ModelConfig, data["model_config"], "model_config"))
    load_model_state(model, data["state_dict"])
    return model, data


def store_landmark_calibration(path: str | Path, offsets: np.ndarray, source: str, *, topology_version: str,
                               steps: int) -> None:
    """Write landmark offsets (68, 3) metres, fitted on ``source``, into the checkpoint at ``path``, so
    that a later export carries them. The checkpoint must be the one the calibrated model was exported
    from: its ``topology_version`` and training ``steps`` are checked."""
    path = Path(path)
    data = torch.load(path, map_location="cpu", weights_only=True)
    if (data["topology_version"], int(data["steps"])) != (topology_version, steps):
        raise ValueError(
            f"{path} holds {data['steps']} training steps on topology {data['topology_version']}, but the calibrated "
            f"model was exported after {steps} steps on topology {topology_version}: not its checkpoint"
        )
    data["state_dict"]["landmark_offsets"] = torch.as_tensor(offsets, dtype=torch.float32)
    data["landmark_calibration"] = source
    partial = path.with_name(path.name + ".partial")
    torch.save(data, partial)
    partial.replace(path)
