"""The contract between the exporter (torch) and the runtime (ONNX Runtime): the graph's input and
output names and the metadata an exported model carries. Torch-free."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

INPUT_NAME = "image"
# The decoded outputs, in order (B is the batch of crops, V mesh vertices, S the crop side):
RECONSTRUCTION_OUTPUTS = (
    "neutral_vertices",  # (B, V, 3) metres, identity only, frontal
    "expressive_vertices",  # (B, V, 3) metres, identity + expression, frontal
    "posed_vertices",  # (B, V, 3) crop NDC
    "vertices_2d",  # (B, V, 2) crop pixels
    "landmarks_2d",  # (B, 68, 2) crop pixels
    "landmarks_3d",  # (B, 68, 3) crop pixels x, y and depth (larger nearer)
    "rotation",  # (B, 3, 3)
    "euler_degrees",  # (B, 3) yaw, pitch, roll
    "translation",  # (B, 3) crop NDC
    "scale",  # (B,) NDC per metre
    "albedo",  # (B, V, 3) in [0, 1]
    "lighting",  # (B, 9, 3) spherical-harmonics coefficients: the lighting code (blended, see below)
)
# The encoder's codes of each crop (model.nn.encoders.EncodedFace), before any blending with given
# codes: model-specific learned spaces, not a standard basis.
CODE_OUTPUTS = (
    "identity_code",  # (B, Di) Di = 128 in the shipped model
    "expression_code",  # (B, De) De = 64
    "pose_code",  # (B, 10) 6D rotation, translation (3) crop NDC, log scale
    "albedo_code",  # (B, Da) Da = 64
)
# The graph's outputs, in order (format_version "2" on; format "1" had RECONSTRUCTION_OUTPUTS only).
OUTPUT_NAMES = RECONSTRUCTION_OUTPUTS + CODE_OUTPUTS

# Optional inputs: graph inputs with an initializer default (overridable initializers, IR >= 4),
# so that a run feeding ``image`` alone decodes the encoder's own codes. Each given code is (N, D)
# with N = 1 (broadcast over the batch) or N = B; the defaults are zeros with N = 1. Per code,
# the decoders read ``encoded + w * (given - encoded)`` with w the code's column of GIVEN_WEIGHTS
# (0: the image's code, 1: the given code).
GIVEN_CODE_INPUTS = (
    "given_identity_code",  # (N, Di)
    "given_expression_code",  # (N, De)
    "given_pose_code",  # (N, 10)
    "given_albedo_code",  # (N, Da)
    "given_lighting",  # (N, 9, 3)
)
GIVEN_WEIGHTS = "given_weights"  # (N, 5) one weight per code, in GIVEN_CODE_INPUTS order; default zeros
# "1": RECONSTRUCTION_OUTPUTS only; "2": also CODE_OUTPUTS and the GIVEN_CODE_INPUTS
FORMAT_VERSION = "2"
# How a model of an older format is brought to this one: from its training checkpoint, or from the
# file itself (its weights read back; --old-topology is the topology asset it was made for).
REEXPORT_COMMANDS = ("facerecon export --checkpoint CKPT --out NEW.onnx",
                     "facerecon transfer-topology --model OLD.onnx --old-topology model/assets/face_topology.npz "
                     "--out NEW.onnx")

# (68, 3) initializer: each landmark's offset from its vertex, metres in the face frame
# (`facerecon calibrate-landmarks` rewrites it).
LANDMARK_OFFSETS = "landmark_offsets"


# How ModelMetadata.from_properties reads a property's text back, by the field's annotation (a
# string: annotations are postponed); str for the others.
_PARSERS: dict[str, Callable[[str], object]] = {"bool": lambda raw: raw == "True", "int": int, "float": float}


@dataclass(frozen=True)
class ModelMetadata:
    """What a consumer of the ONNX graph needs besides the graph.

    The input is ``image`` (B, 3, input_size, input_size) float32 RGB in [0, 1] (the graph
    normalises it); the crop is made by :mod:`model.runtime.crop`.
    """

    topology_version: str
    input_size: int
    trained: bool
    training_steps: int
    num_vertices: int
    num_faces: int
    # what the landmark offsets were fitted on (training.export.landmark_calibration)
    landmark_calibration: str = "none"
    # how the weights are stored beyond float32 (training.export.quantize); "none": float
    quantization: str = "none"
    # the different-person distance of several-photo fusion (model.runtime.identity_fusion), written
    # by `facerecon calibrate-identity`; 0.0: not calibrated (fusion then keeps every photo with a face)
    identity_threshold: float = 0.0
    input_range: str = "rgb float32 in [0, 1], NCHW"
    format_version: str = "1"  # files from before the field are format 1; exports write FORMAT_VERSION

    def to_properties(self) -> dict[str, str]:
        return {f"facerecon.{k}": str(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_properties(cls, props: dict[str, str]) -> ModelMetadata:
        """Fields with a default may be missing (exports from before the field existed)."""
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = props.get(f"facerecon.{field.name}")
            if raw is None:
                if field.default is not dataclasses.MISSING:
                    continue
                raise ValueError(f"model metadata lacks facerecon.{field.name}: not a facerecon export")
            values[field.name] = _PARSERS.get(str(field.type), str)(raw)
        return cls(**values)  # type: ignore[arg-type]
