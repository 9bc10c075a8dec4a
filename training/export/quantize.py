"""Weight-only int8 quantization of an exported face model (ONNX Runtime's dynamic quantization).

The fully connected layers (the encoder's heads and projection, the shape, expression and albedo
decoders) store their weights as int8 with one float scale per tensor; ONNX Runtime quantizes
their inputs on the fly (``DynamicQuantizeLinear`` + ``MatMulInteger``) and its CPU kernels run
them in integer arithmetic. Convolutions stay float: on a CPU without VNNI, static int8
convolutions measured no faster than float ones once their activations are quantized. The pose
head stays float too: quantized, it moved the 60-90 degree bin's NME by 0.07 on the AFLW2000-3D
development slice, where everything else together moves it by under 0.01.

The float weights left over are stored as float16 (:func:`store_weights_as_float16`), so the file
is about half the float export's size; the computation outside the int8 layers stays float32.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from model.onnx_contract import ModelMetadata
from training.export.onnx_export import HALF_MIN_ELEMENTS
from training.export.onnx_graph import set_onnx_metadata, store_weights_as_float16

# node-name prefixes kept in float (exports before format 2 ran the model's forward: /model/ scope)
FLOAT_LAYERS = ("/encoder/pose_head/", "/model/encoder/pose_head/")
QUANTIZATION = "int8 weights (dynamic) in the fully connected layers but the pose head"


def widen_float16_weights(graph: onnx.ModelProto) -> None:
    """Undo :func:`store_weights_as_float16`: each float16 initializer read through a Cast to
    float32 becomes a float32 initializer under the Cast's output name (the quantizer needs the
    weights as initializers of the layers that read them)."""
    initializers = {init.name: init for init in graph.graph.initializer}
    kept = []
    for node in graph.graph.node:
        source = initializers.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        if source is not None and source.data_type == TensorProto.FLOAT16:
            values = numpy_helper.to_array(source).astype(np.float32)
            graph.graph.initializer.remove(source)
            graph.graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
            del initializers[source.name]
            continue
        kept.append(node)
    del graph.graph.node[:]
    graph.graph.node.extend(kept)


def fully_connected_layers(graph: onnx.ModelProto) -> list[str]:
    """Names of the Gemm and MatMul nodes whose second input is a weight (an initializer)."""
    weights = {init.name for init in graph.graph.initializer}
    return [node.name for node in graph.graph.node
            if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights]


def quantize_model(source: Path, out: Path) -> ModelMetadata:
    """Write ``out``: the model of ``source`` (a float export) with int8 fully connected layers
    but those under :data:`FLOAT_LAYERS`. Returns its metadata (``quantization`` set)."""
    graph = onnx.load(str(source))
    metadata = ModelMetadata.from_properties({p.key: p.value for p in graph.metadata_props})
    if metadata.quantization != "none":
        raise ValueError(f"{source} is already quantized ({metadata.quantization})")
    widen_float16_weights(graph)
    layers = fully_connected_layers(graph)
    chosen = [name for name in layers if not name.startswith(FLOAT_LAYERS)]
    # The quantizer rewrites a Gemm as a MatMul (named NAME_MatMul) plus an Add before it selects nodes.
    names = chosen + [f"{name}_MatMul" for name in chosen]
    with tempfile.TemporaryDirectory() as scratch:
        widened, quantized = Path(scratch) / "float.onnx", Path(scratch) / "int8.onnx"
        onnx.save(graph, str(widened))
        quantize_dynamic(widened, quantized, op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=names,
                         weight_type=QuantType.QInt8, per_channel=False)
        result = onnx.load(str(quantized))
    integer = sum(node.op_type == "MatMulInteger" for node in result.graph.node)
    if integer != len(chosen):
        raise ValueError(f"{source}: {integer} of the {len(chosen)} chosen layers were quantized")
    store_weights_as_float16(result, min_elements=HALF_MIN_ELEMENTS, exact_only=False)
    metadata = dataclasses.replace(metadata, quantization=QUANTIZATION)
    set_onnx_metadata(result, metadata.to_properties())
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(result, str(out))
    return metadata
