"""Training checkpoints: model weights with the configuration that built them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from model.nn.encoders import EncoderConfig
from model.nn.face_model import FaceReconstructionModel, ModelConfig
from model.topology import FaceTopology


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    encoder = EncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["encoder"].items()})
    return ModelConfig(**{**data, "encoder": encoder})


def save_checkpoint(path: str | Path, model: FaceReconstructionModel, *, steps: int, extra: dict[str, Any] | None = None) -> None:
    """Write weights, model config, topology version and the number of training steps."""
    torch.save(
        {
            "model_config": dataclasses.asdict(model.config),
            "topology_version": model.topology_version,
            "state_dict": model.state_dict(),
            "steps": steps,
            **(extra or {}),
        },
        path,
    )


def load_checkpoint(path: str | Path, topology: FaceTopology) -> tuple[FaceReconstructionModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint; refuses a checkpoint made for another topology."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data["topology_version"] != topology.version:
        raise ValueError(
            f"{path} was trained on topology {data['topology_version']}, "
            f"but the loaded topology is {topology.version}"
        )
    model = FaceReconstructionModel(topology, model_config_from_dict(data["model_config"]))
    model.load_state_dict(data["state_dict"])
    return model, data
