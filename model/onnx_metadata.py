"""Metadata that an exported ONNX model carries for the service and the CLI."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

INPUT_NAME = "image"


@dataclass(frozen=True)
class ModelMetadata:
    """What a consumer of the ONNX graph needs besides the graph.

    The input is ``image`` (B, 3, input_size, input_size) float32 RGB in [0, 1] (the graph
    normalises it); the crop is made by :mod:`model.crop`.
    """

    topology_version: str
    input_size: int
    trained: bool
    training_steps: int
    num_vertices: int
    num_faces: int
    landmark_calibration: str = "none"  # what the landmark offsets were fitted on (training.landmark_calibration)
    input_range: str = "rgb float32 in [0, 1], NCHW"
    format_version: str = "1"

    def to_properties(self) -> dict[str, str]:
        return {f"facerecon.{k}": str(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_properties(cls, props: dict[str, str]) -> "ModelMetadata":
        """Fields with a default may be missing (exports from before the field existed)."""
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = props.get(f"facerecon.{field.name}")
            if raw is None:
                if field.default is not dataclasses.MISSING:
                    continue
                raise ValueError(f"model metadata lacks facerecon.{field.name}: not a facerecon export")
            values[field.name] = raw == "True" if field.type == "bool" else int(raw) if field.type == "int" else raw
        return cls(**values)  # type: ignore[arg-type]
