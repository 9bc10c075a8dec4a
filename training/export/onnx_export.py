"""Export a face model to one ONNX graph (encoders -> decoders -> pose -> projection).

Besides ``image`` the graph takes optional given codes (:data:`model.onnx_contract.GIVEN_CODE_INPUTS`
and :data:`~model.onnx_contract.GIVEN_WEIGHTS`): graph inputs that are also initializers (zeros,
one row), so a run that feeds the image alone decodes the image's own codes, and a run that feeds
them decodes the blend of the two (:meth:`model.nn.encoders.EncodedFace.blended`). ONNX Runtime
does not fold an initializer that is a graph input into a constant: it is overridable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from model.nn.encoders import EncodedFace
from model.nn.face_model import FaceReconstructionModel
from model.onnx_contract import (
    FORMAT_VERSION,
    GIVEN_CODE_INPUTS,
    GIVEN_WEIGHTS,
    INPUT_NAME,
    LANDMARK_OFFSETS,
    OUTPUT_NAMES,
    RECONSTRUCTION_OUTPUTS,
    ModelMetadata,
)
from training.export.onnx_graph import set_onnx_metadata, store_weights_as_float16

OPSET = 17
HALF_MIN_ELEMENTS = 1024  # smaller float tensors (biases, constants) stay float32
EXPORTED_OFFSETS = "model.landmark_offsets"  # the exporter names initializers by the wrapper's state-dict keys


class _ExportedGraph(nn.Module):
    """Encode the image, blend its codes with the given ones, decode: the outputs as a tuple in
    :data:`model.onnx_contract.OUTPUT_NAMES` order (the decoded outputs, then the image's codes)."""

    def __init__(self, model: FaceReconstructionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, identity: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor,
                albedo: torch.Tensor, lighting: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        encoded = self.model.encode(image)
        given = EncodedFace(identity, expression, pose, albedo, lighting)
        result = self.model.decode(encoded.blended(given, weights))
        decoded = tuple(getattr(result, name) for name in RECONSTRUCTION_OUTPUTS)
        return decoded + (encoded.identity, encoded.expression, encoded.pose, encoded.albedo)


def given_code_defaults(model: FaceReconstructionModel) -> dict[str, torch.Tensor]:
    """The optional inputs' defaults, by input name: each given code zeros (1, D), weights zeros (1, 5)."""
    encoder = model.config.encoder
    shapes = ((encoder.identity_dim,), (encoder.expression_dim,), (model.encoder.POSE_DIM,), (encoder.albedo_dim,),
              (9, 3))
    defaults = {name: torch.zeros(1, *shape) for name, shape in zip(GIVEN_CODE_INPUTS, shapes)}
    defaults[GIVEN_WEIGHTS] = torch.zeros(1, len(GIVEN_CODE_INPUTS))
    return defaults


def export_onnx(model: FaceReconstructionModel, out: str | Path, *, trained: bool, steps: int = 0,
                landmark_calibration: str = "none", half_weights: bool = False) -> ModelMetadata:
    """Write ``out`` (an .onnx file with the service's metadata embedded) and return the metadata.

    The model's landmark offsets become the graph's :data:`LANDMARK_OFFSETS` initializer;
    ``landmark_calibration`` says what they were fitted on (a checkpoint's ``landmark_calibration``).
    ``half_weights`` stores the weights as float16 (half the file), cast to float32 when the
    session loads: the computation stays float32.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = model.image_size
    dummy = torch.rand(2, 3, size, size)
    defaults = given_code_defaults(model)
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    dynamic.update({name: {0: f"{name}_rows"} for name in defaults})  # 1 (broadcast) or batch
    was_training = model.training
    # The exporter restores the wrapper's mode afterwards, so the wrapper must be in eval mode
    # too, or the caller's model would come back in training mode.
    wrapper = _ExportedGraph(model).eval()
    torch.onnx.export(
        wrapper,
        (dummy, *defaults.values()),
        str(out),
        input_names=[INPUT_NAME, *defaults],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes=dynamic,
        opset_version=OPSET,
        dynamo=False,
    )
    model.train(was_training)
    metadata = ModelMetadata(
        topology_version=model.topology_version,
        input_size=size,
        trained=trained,
        training_steps=steps,
        num_vertices=int(model.faces.max()) + 1,
        num_faces=int(model.faces.shape[0]),
        landmark_calibration=landmark_calibration,
        format_version=FORMAT_VERSION,
    )
    graph = onnx.load(str(out))
    name_landmark_offsets(graph)
    add_input_defaults(graph, {name: value.numpy() for name, value in defaults.items()})
    if half_weights:
        store_weights_as_float16(graph, min_elements=HALF_MIN_ELEMENTS, exact_only=False)
    set_onnx_metadata(graph, metadata.to_properties())
    onnx.save(graph, str(out))
    return metadata


def name_landmark_offsets(graph: onnx.ModelProto) -> None:
    """Rename the exporter's initializer of the model's landmark offsets (68, 3) to
    :data:`LANDMARK_OFFSETS`, so that a calibration can find and replace it."""
    found = [tensor for tensor in graph.graph.initializer if tensor.name == EXPORTED_OFFSETS]
    if len(found) != 1:
        raise RuntimeError(f"expected one {EXPORTED_OFFSETS!r} initializer in the exported graph, found {len(found)}")
    found[0].name = LANDMARK_OFFSETS
    for node in graph.graph.node:
        for k, name in enumerate(node.input):
            if name == EXPORTED_OFFSETS:
                node.input[k] = LANDMARK_OFFSETS


def add_input_defaults(graph: onnx.ModelProto, defaults: dict[str, np.ndarray]) -> None:
    """Give each named graph input an initializer of the same name (its default): an overridable
    initializer, which a run may feed or leave out."""
    inputs = {value.name for value in graph.graph.input}
    missing = sorted(set(defaults) - inputs)
    if missing:
        raise RuntimeError(f"the exported graph has no inputs {missing}: did the exporter drop unused ones?")
    graph.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in defaults.items())


def metadata_json(metadata: ModelMetadata) -> str:
    return json.dumps(metadata.to_properties(), indent=2)
