"""Edits of exported ONNX graphs shared by the face model's and the detector's exporters: weights
stored as float16, zero padding folded into the convolutions, metadata properties. torch-free
(onnx, and ONNX Runtime to evaluate constant subgraphs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from model.onnx_contract import ModelMetadata


def store_weights_as_float16(graph: onnx.ModelProto, *, min_elements: int, exact_only: bool) -> None:
    """Store float32 initializers of at least ``min_elements`` values as float16, each read through
    a Cast back to float32 under its old name (ONNX Runtime folds the casts at load). With
    ``exact_only`` only those that float16 holds exactly (a lossless file). Initializers that are
    graph inputs (overridable defaults) keep their type: a caller feeds them as float32."""
    casts = []
    inputs = {value.name for value in graph.graph.input}
    for init in graph.graph.initializer:
        if init.data_type != TensorProto.FLOAT or init.name in inputs:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if values.size < min_elements or (exact_only and not np.array_equal(half.astype(np.float32), values)):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, f"{name}.float16"))
        casts.append(helper.make_node("Cast", [init.name], [name], to=TensorProto.FLOAT, name=f"{name}.widen"))
    nodes = casts + list(graph.graph.node)
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)


def fold_pads_into_convs(graph: onnx.ModelProto) -> int:
    """Fold every zero ``Pad`` of the spatial axes alone whose one reader is a ``Conv`` into that
    Conv's own ``pads``, then drop the nodes nothing reads any more; returns how many were folded.

    The exporter writes an explicit Pad for padding that PyTorch's Conv2d cannot hold (TensorFlow's
    asymmetric SAME padding, a separate PAD op), its amounts computed by a chain of operations, and
    ONNX Runtime neither folds nor fuses it there: each one costs a copy and two layout reorders
    around its convolution. A Conv's pads are zeros too, so the outputs are exactly the same.
    """
    pads = [node for node in graph.graph.node if node.op_type == "Pad"]
    values = _constant_values(graph, sorted({name for node in pads for name in node.input[1:] if name}))
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    graph_outputs = {value.name for value in graph.graph.output}
    folded = 0
    for node in pads:
        amounts = values.get(node.input[1])
        fill = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        users = readers.get(node.output[0], [])
        if (amounts is None or fill is None or mode != b"constant" or fill.size != 1 or float(fill.item()) != 0.0
                or amounts.shape != (8,) or amounts[[0, 1, 4, 5]].any() or (amounts < 0).any()
                or len(users) != 1 or users[0].op_type != "Conv" or node.output[0] in graph_outputs):
            continue
        conv = users[0]
        attributes = {a.name: a for a in conv.attribute}
        if "auto_pad" in attributes and attributes["auto_pad"].s not in (b"", b"NOTSET"):
            continue
        before = list(attributes["pads"].ints) if "pads" in attributes else [0, 0, 0, 0]
        after = [before[0] + int(amounts[2]), before[1] + int(amounts[3]), before[2] + int(amounts[6]),
                 before[3] + int(amounts[7])]
        if "pads" in attributes:
            conv.attribute.remove(attributes["pads"])
        conv.attribute.append(helper.make_attribute("pads", after))
        conv.input[0] = node.input[0]
        folded += 1
    _drop_unread_nodes(graph)
    return folded


def _constant_values(graph: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    """The values of the tensors ``names`` that do not depend on the graph's inputs (they come out
    the same for two different batch sizes), computed by ONNX Runtime; the others are left out."""
    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(graph)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    runs = []
    for batch in (1, 2):
        feeds = {}
        for value in session.get_inputs():
            shape = [batch if not isinstance(d, int) else d for d in value.shape]
            dtype = np.uint8 if value.type == "tensor(uint8)" else np.float32
            feeds[value.name] = np.zeros(shape, dtype)
        runs.append(session.run(names, feeds))
    return {name: a for name, a, b in zip(names, *runs) if a.shape == b.shape and np.array_equal(a, b)}


def _drop_unread_nodes(graph: onnx.ModelProto) -> None:
    """Remove nodes none of whose outputs is read (by a node or as a graph output), repeatedly."""
    while True:
        read = {name for node in graph.graph.node for name in node.input} | {v.name for v in graph.graph.output}
        kept = [node for node in graph.graph.node if any(name in read for name in node.output)]
        if len(kept) == len(graph.graph.node):
            return
        del graph.graph.node[:]
        graph.graph.node.extend(kept)


def set_onnx_metadata(graph: onnx.ModelProto, properties: dict[str, str]) -> None:
    """Check ``graph`` and replace its metadata_props with ``properties``."""
    onnx.checker.check_model(graph)
    del graph.metadata_props[:]
    for key, value in properties.items():
        graph.metadata_props.add(key=key, value=value)


def replace_model_metadata(graph: onnx.ModelProto, **changes: Any) -> None:
    """Set fields of the facerecon metadata (:class:`model.onnx_contract.ModelMetadata`) that
    ``graph`` carries, keeping the others."""
    metadata = ModelMetadata.from_properties({p.key: p.value for p in graph.metadata_props})
    set_onnx_metadata(graph, dataclasses.replace(metadata, **changes).to_properties())


def write_onnx_metadata(path: Path, properties: dict[str, str]) -> None:
    """Check the ONNX file at ``path`` and replace its metadata_props with ``properties``."""
    graph = onnx.load(str(path))
    set_onnx_metadata(graph, properties)
    onnx.save(graph, str(path))
