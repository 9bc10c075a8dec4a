"""int8 quantization of an exported face model.

The fully connected layers (the encoder's heads and projection, the shape, expression and albedo
decoders) store their weights as int8 with one float scale per tensor; ONNX Runtime quantizes
their inputs on the fly (``DynamicQuantizeLinear`` + ``MatMulInteger``) and its CPU kernels run
them in integer arithmetic. The pose head stays float: quantized, it moved the 60-90 degree bin's
NME by 0.07 on the AFLW2000-3D development slice, where everything else together moves it by
under 0.01.

With calibration crops (:func:`calibration_crops`, training crops as the trainer augments them),
the convolutional trunk (the shared trunk and the identity head's own tail: every convolution, its
ReLU6 and the residual additions) is quantized statically as well: int8 kernels with a scale per
output channel and uint8 activations whose ranges are measured on the crops
(:data:`CALIBRATION_PERCENTILE`), as ``QLinearConv`` and ``QLinearAdd`` (each ReLU6 becomes the
clipping of its convolution's output range), so the whole trunk runs in integer arithmetic,
quantized once at its input. On a CPU with VNNI (AVX-512 VNNI, AVX-VNNI) ONNX Runtime's int8
convolutions are much faster than float ones (README, Benchmarks); on one without, an earlier
measurement found them no faster. Without calibration crops the trunk stays float.

The float weights left over are stored as float16 (:func:`store_weights_as_float16`), so the file
is about half the float export's size; the computation outside the int8 layers stays float32.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from model.onnx_contract import INPUT_NAME, ModelMetadata
from training.export.onnx_export import HALF_MIN_ELEMENTS
from training.export.onnx_graph import set_onnx_metadata, store_weights_as_float16

# node-name prefixes kept in float (exports before format 2 ran the model's forward: /model/ scope)
FLOAT_LAYERS = ("/encoder/pose_head/", "/model/encoder/pose_head/")
QUANTIZATION = "int8 weights (dynamic) in the fully connected layers but the pose head"
TRUNK_OPS = ("Conv", "Clip", "Add")  # the convolutional trunk's operators, quantized statically
STATIC_TRUNK = "int8 convolutional trunk (static, {crops} calibration crops); "
CALIBRATION_CROPS = 256
# Each activation's range: this percentile of its values on the crops (the rarest outliers clipped).
# On the AFLW2000-3D development slice it kept the ground-truth-box bins within 0.02 of the float
# trunk's (2.984 / 5.210 / 5.610 against 2.977 / 5.225 / 5.605); the full range (min-max) moved
# the 60-90 degree bin by 0.02-0.04 (256 to 1,024 crops).
CALIBRATION_PERCENTILE = 99.999


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


def trunk_nodes(graph: onnx.ModelProto) -> list[str]:
    """Names of the convolutional trunk's nodes, found by what they read (the exporter's names
    depend on the model's configuration): every convolution, and the clips (ReLU6) and additions
    (residual connections) that read a convolution's output."""
    producer = {output: node.op_type for node in graph.graph.node for output in node.output}
    return [node.name for node in graph.graph.node
            if node.op_type == "Conv" or (node.op_type in TRUNK_OPS
                                          and any(producer.get(name) == "Conv" for name in node.input))]


def calibration_crops(data: Path, count: int = CALIBRATION_CROPS, seed: int = 0) -> np.ndarray:
    """(N, 3, S, S) float32 network inputs in [0, 1]: ``count`` samples of the training split of a
    prepared data folder (``facerecon prepare``), evenly spaced through it, each augmented as the
    trainer augments (scale, shift, rotation, mirroring, colour, blur, occluders) with draws from
    ``seed``: what the network saw in training, the same crops every time. FileNotFoundError without
    shards, ValueError without training samples."""
    from model.topology import FaceTopology
    from training.data.augment import AugmentConfig
    from training.data.dataset import PreparedFaces

    faces = PreparedFaces(data, "train", FaceTopology.load(), AugmentConfig(), seed=seed)
    if len(faces) == 0:
        raise ValueError(f"no training samples in {data}")
    picks = np.unique(np.linspace(0, len(faces) - 1, min(count, len(faces))).round().astype(int))
    with torch.random.fork_rng():  # the augmentation's draws come from torch's generator
        torch.manual_seed(seed)
        return np.stack([faces[int(i)]["image"].numpy() for i in picks]).astype(np.float32)


class _Crops(CalibrationDataReader):
    """Feeds calibration crops (N, 3, S, S) to the calibrator one at a time."""

    def __init__(self, crops: np.ndarray) -> None:
        self.rows = iter(crops)

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self.rows, None)
        return None if row is None else {INPUT_NAME: row[None]}


def quantize_model(source: Path, out: Path, calibration: np.ndarray | None = None) -> ModelMetadata:
    """Write ``out``: the model of ``source`` (a float export) with int8 fully connected layers
    but those under :data:`FLOAT_LAYERS`, and with ``calibration`` crops (N, 3, S, S)
    (:func:`calibration_crops`) a static int8 convolutional trunk. Returns its metadata
    (``quantization`` set)."""
    graph = onnx.load(str(source))
    metadata = ModelMetadata.from_properties({p.key: p.value for p in graph.metadata_props})
    if metadata.quantization != "none":
        raise ValueError(f"{source} is already quantized ({metadata.quantization})")
    widen_float16_weights(graph)
    layers = fully_connected_layers(graph)
    chosen = [name for name in layers if not name.startswith(FLOAT_LAYERS)]
    trunk = trunk_nodes(graph) if calibration is not None else []
    if calibration is not None and not trunk:  # (an empty selection would quantize every node of the types)
        raise ValueError(f"{source} has no convolutions to quantize")
    # The quantizer rewrites a Gemm as a MatMul (named NAME_MatMul) plus an Add before it selects nodes.
    names = chosen + [f"{name}_MatMul" for name in chosen]
    with tempfile.TemporaryDirectory() as scratch:
        widened, quantized = Path(scratch) / "float.onnx", Path(scratch) / "int8.onnx"
        onnx.save(graph, str(widened))
        if calibration is not None:
            static = Path(scratch) / "trunk.onnx"
            quantize_static(widened, static, _Crops(calibration), quant_format=QuantFormat.QOperator,
                            op_types_to_quantize=list(TRUNK_OPS), nodes_to_quantize=trunk, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE})
            widened = static
        quantize_dynamic(widened, quantized, op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=names,
                         weight_type=QuantType.QInt8, per_channel=False)
        result = onnx.load(str(quantized))
    integer = sum(node.op_type == "MatMulInteger" for node in result.graph.node)
    if integer != len(chosen):
        raise ValueError(f"{source}: {integer} of the {len(chosen)} chosen layers were quantized")
    convolutions = sum(node.op_type == "Conv" for node in graph.graph.node if node.name in trunk)
    if sum(node.op_type == "QLinearConv" for node in result.graph.node) != convolutions:
        raise ValueError(f"{source}: not every one of the trunk's {convolutions} convolutions was quantized")
    store_weights_as_float16(result, min_elements=HALF_MIN_ELEMENTS, exact_only=False)
    static_part = STATIC_TRUNK.format(crops=len(calibration)) if calibration is not None else ""
    metadata = dataclasses.replace(metadata, quantization=static_part + QUANTIZATION)
    set_onnx_metadata(result, metadata.to_properties())
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(result, str(out))
    return metadata
