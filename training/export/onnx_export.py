"""Export a face model to one ONNX graph (encoders -> decoders -> pose -> projection)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from torch import nn

from model.nn.face_model import FaceReconstructionModel
from model.onnx_contract import INPUT_NAME, LANDMARK_OFFSETS, OUTPUT_NAMES, ModelMetadata
from training.export.onnx_graph import set_onnx_metadata, store_weights_as_float16

OPSET = 17
HALF_MIN_ELEMENTS = 1024  # smaller float tensors (biases, constants) stay float32
EXPORTED_OFFSETS = "model.landmark_offsets"  # the exporter names initializers by the wrapper's state-dict keys


class _TupleOutputs(nn.Module):
    """Returns the inference outputs as a tuple in :attr:`model.onnx_contract.OUTPUT_NAMES` order."""

    def __init__(self, model: FaceReconstructionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.model(image)
        return tuple(getattr(result, name) for name in OUTPUT_NAMES)


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
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    was_training = model.training
    # The exporter restores the wrapper's mode afterwards, so the wrapper must be in eval mode
    # too, or the caller's model would come back in training mode.
    wrapper = _TupleOutputs(model).eval()
    torch.onnx.export(
        wrapper,
        (dummy,),
        str(out),
        input_names=[INPUT_NAME],
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
    )
    graph = onnx.load(str(out))
    name_landmark_offsets(graph)
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


def metadata_json(metadata: ModelMetadata) -> str:
    return json.dumps(metadata.to_properties(), indent=2)
