"""Carry an exported face model over to a new topology asset without retraining.

Only the surface's triangulation changes between topology versions that keep the 468 base
vertices (their template positions, order and mirror map): the encoders, the pose and every
base vertex's learned offset carry over exactly, so the 68 landmarks (base vertices plus their
calibrated offsets) and with them the landmark figures do not move. The decoders' last layers
predict one row per coarse-level vertex, and a coarse vertex is the midpoint of a base edge: each
new coarse vertex takes the mean of its two base vertices' rows, which is exactly the midpoint of
their outputs (the layer is linear), on the new template's smooth surface. (Copying the old rows
of edges both triangulations share was tried: those offsets were learned around the old, folded
triangulation and left pleats on the lower lip of a turned face.)

Weights are read back from the exported ONNX graph (the shipped file; int8 layers dequantized), with
each convolution's folded batch normalisation kept in the convolution and its BatchNorm set to the identity (running
mean 0, variance 1 - eps, scale 1, shift = the folded bias): the rebuilt model computes what the
graph does in evaluation mode. Its BatchNorm statistics are not the training ones, so a fine-tune
from the written checkpoint must re-measure them first.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from model.nn.encoders import EncoderConfig, Trunk
from model.nn.face_model import FaceReconstructionModel, ModelConfig
from model.onnx_contract import LANDMARK_OFFSETS, ModelMetadata
from model.topology import NUM_BASE_VERTICES, FaceTopology
from training.checkpoint import COLOUR_SUMMARY

WRAPPER_PREFIX = "model."  # the exporter names initializers by the wrapper's state-dict keys
TRANSPOSED, QUANTIZED = "_Transposed", "_quantized"  # the quantizer's names for a weight it rewrote
CONVOLUTIONS = ("Conv", "QLinearConv")  # float, and static int8 (training.export.quantize)
DECODER_LAST_LAYERS = ("identity_decoder.offsets.mlp.4", "expression_decoder.offsets.mlp.4", "albedo_decoder.mlp.4")


def onnx_weights(graph: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer of ``graph`` by the name the computation reads it under: a weight stored
    as float16 (:func:`training.export.onnx_graph.store_weights_as_float16`) is read through a
    Cast to float32, so it is returned as float32 under the Cast's output name; equal weights the
    exporter stored once are read through Identity nodes under their other names."""
    out = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.graph.initializer}
    for node in graph.graph.node:  # nodes are in topological order
        if node.op_type in ("Cast", "Identity") and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]].astype(np.float32)
    # a quantized graph (training.export.quantize) stores a fully connected layer's weight W as
    # W.T (NAME_Transposed), in int8 with a scale and zero point where quantized, a convolution's
    # kernel in int8 with a scale and zero point per output channel (axis 0): read them back
    for name in [n for n in out if n.endswith(QUANTIZED)]:
        stem = name.removesuffix(QUANTIZED)
        if f"{stem}_scale" not in out:  # a static convolution's int32 bias: see convolution_weights
            continue
        levels, scale, zero = out[name], out[f"{stem}_scale"], out[f"{stem}_zero_point"]
        axis = (-1,) + (1,) * (levels.ndim - 1) if np.ndim(scale) == 1 else ()
        out[stem] = (levels.astype(np.float32) - np.reshape(zero, axis).astype(np.float32)) * np.reshape(scale, axis)
    for name in [n for n in out if n.endswith(TRANSPOSED)]:
        out.setdefault(name.removesuffix(TRANSPOSED), np.ascontiguousarray(out[name].T))
    return out


def convolution_weights(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A convolution node's float kernel (O, I, kH, kW) and bias (O,): a ``Conv``'s as stored, a
    static int8 ``QLinearConv``'s (:mod:`training.export.quantize`) dequantized: kernel =
    (levels - zero point) x scale (one per output channel), bias = its int32 levels x input scale x
    kernel scale."""
    if node.op_type == "Conv":
        return weights[node.input[1]], weights[node.input[2]]
    x_scale, w_scale, bias = (weights[node.input[k]] for k in (1, 4, 8))
    kernel = weights[node.input[3].removesuffix(QUANTIZED)]  # dequantized by onnx_weights
    return kernel.astype(np.float32), (bias.astype(np.float64) * x_scale * w_scale).astype(np.float32)


def colour_grid_of(weights: dict[str, np.ndarray]) -> int:
    """The encoder's colour grid G (``EncoderConfig.colour_grid``) of a graph's weights
    (:func:`onnx_weights`): 0 without a colour summary, else from its first layer's 3 G^2 inputs."""
    first = weights.get(f"{WRAPPER_PREFIX}{COLOUR_SUMMARY}mlp.2.weight")  # (hidden, 3 G^2)
    return 0 if first is None else round(math.sqrt(first.shape[1] / 3))


def identity_trunk_blocks_of(graph: onnx.ModelProto) -> int:
    """The identity head's own trunk blocks (``EncoderConfig.identity_trunk_blocks``) of an exported
    graph: its convolutions beyond the shared trunk's, three to a block (the BatchNorms are folded)."""
    shared = sum(isinstance(m, nn.Conv2d) for m in Trunk(EncoderConfig()).modules())
    return (sum(node.op_type in CONVOLUTIONS for node in graph.graph.node) - shared) // 3


def model_from_onnx(path: Path | onnx.ModelProto, topology: FaceTopology,
                    config: ModelConfig | None = None) -> FaceReconstructionModel:
    """Rebuild the PyTorch model of an exported graph (a path or the loaded graph) on ``topology``
    (the one it was exported for)."""
    graph = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path))
    source = "the graph" if isinstance(path, onnx.ModelProto) else str(path)
    weights = onnx_weights(graph)
    model = FaceReconstructionModel(topology, config or ModelConfig()).eval()
    state = model.state_dict()
    loaded = {}
    for key in state:
        if WRAPPER_PREFIX + key in weights:
            loaded[key] = torch.from_numpy(np.array(weights[WRAPPER_PREFIX + key]))
    # the identity trunk tail's convolutions run interleaved with the shared trunk's last block in
    # the graph; the model lists its modules after the shared trunk's
    convolutions = sorted((node for node in graph.graph.node if node.op_type in CONVOLUTIONS),
                          key=lambda node: "/identity_trunk/" in node.name)
    modules = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    pairs = [(c, b) for c, b in zip(modules[:-1], modules[1:])
             if isinstance(c, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)]
    if len(pairs) != len(convolutions):
        raise ValueError(f"{source}: {len(convolutions)} convolutions, the model has {len(pairs)}")
    names = {id(m): n for n, m in model.named_modules()}
    for node, (conv, norm) in zip(convolutions, pairs):
        kernel, bias = convolution_weights(node, weights)
        if tuple(kernel.shape) != tuple(conv.weight.shape):
            raise ValueError(f"{source}: convolution {node.name} is {kernel.shape}, "
                             f"expected {tuple(conv.weight.shape)}")
        conv_name, norm_name = names[id(conv)], names[id(norm)]
        loaded[f"{conv_name}.weight"] = torch.as_tensor(np.array(kernel))
        loaded[f"{norm_name}.weight"] = torch.ones_like(norm.weight)
        loaded[f"{norm_name}.bias"] = torch.as_tensor(np.array(bias))
        loaded[f"{norm_name}.running_mean"] = torch.zeros(norm.num_features)
        loaded[f"{norm_name}.running_var"] = torch.full((norm.num_features,), 1.0 - norm.eps)
        loaded[f"{norm_name}.num_batches_tracked"] = torch.tensor(0)
    loaded["landmark_offsets"] = torch.as_tensor(np.array(weights[LANDMARK_OFFSETS]))
    missing = sorted(set(state) - set(loaded))
    if missing:
        raise ValueError(f"{source}: no weights for {missing}")
    model.load_state_dict(loaded)
    return model


def coarse_row_map(topology: FaceTopology, coarse_level: int) -> list[tuple[int, ...]]:
    """For each coarse-level vertex of ``topology``, the base vertices whose decoder rows it takes:
    a base vertex its own, a midpoint the mean of its edge's two."""
    if coarse_level != 1:
        raise ValueError("topology transfer supports decoders on subdivision level 1 (ModelConfig.coarse_level)")
    rows: list[tuple[int, ...]] = [(v,) for v in range(NUM_BASE_VERTICES)]
    rows += [(a, b) for a, b in topology.edge_parents[: topology.level_sizes[1] - NUM_BASE_VERTICES].tolist()]
    return rows


def transfer_decoders(source: FaceReconstructionModel, target: FaceReconstructionModel,
                      rows: list[tuple[int, ...]]) -> None:
    """Copy every weight of ``source`` into ``target`` (built on the new topology), remapping the
    decoders' last layers row by row (``rows`` from :func:`coarse_row_map`)."""
    state = source.state_dict()
    out = {}
    for key, value in state.items():
        layer = key.rsplit(".", 1)[0]
        if layer in DECODER_LAST_LAYERS:
            per_vertex = value.view(-1, 3, *value.shape[1:])
            value = torch.stack([per_vertex[list(r)].mean(dim=0) for r in rows]).reshape(-1, *value.shape[1:])
        out[key] = value
    target.load_state_dict(out)


def transfer_topology(model_path: Path, old_topology: FaceTopology, new_topology: FaceTopology) -> tuple[
        FaceReconstructionModel, ModelMetadata]:
    """The model of ``model_path`` (exported for ``old_topology``) rebuilt on ``new_topology``."""
    for name in ("vertices", "mirror", "landmarks68"):
        old_base = getattr(old_topology, name)[:NUM_BASE_VERTICES]
        new_base = getattr(new_topology, name)[:NUM_BASE_VERTICES]
        if old_base.shape != new_base.shape or not np.allclose(old_base, new_base, atol=1e-7):
            raise ValueError(f"the two topologies differ in their base vertices' {name}: retrain instead")
    graph = onnx.load(str(model_path))
    props = {p.key: p.value for p in graph.metadata_props}
    metadata = ModelMetadata.from_properties(props)
    if metadata.topology_version != old_topology.version:
        raise ValueError(f"{model_path} was exported for topology {metadata.topology_version}, "
                         f"not {old_topology.version}")
    # the shipped architecture (exports record only the input size, checked below), with the colour
    # summary and the identity trunk tail the graph has
    config = ModelConfig(encoder=EncoderConfig(colour_grid=colour_grid_of(onnx_weights(graph)),
                                               identity_trunk_blocks=identity_trunk_blocks_of(graph)))
    if metadata.input_size != config.encoder.image_size:
        raise ValueError(f"{model_path} takes {metadata.input_size}-pixel crops, "
                         f"the model config {config.encoder.image_size}")
    original = model_from_onnx(graph, old_topology, config)
    if new_topology.version == old_topology.version:  # the same asset: the graph as this code writes it
        return original, metadata
    target = FaceReconstructionModel(new_topology, config).eval()
    transfer_decoders(original, target, coarse_row_map(new_topology, config.coarse_level))
    return target, metadata
