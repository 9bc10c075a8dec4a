"""Edits of exported ONNX graphs shared by the face model's and the detector's exporters: weights
stored as float16, metadata properties. torch-free (onnx only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


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


def set_onnx_metadata(graph: onnx.ModelProto, properties: dict[str, str]) -> None:
    """Check ``graph`` and replace its metadata_props with ``properties``."""
    onnx.checker.check_model(graph)
    del graph.metadata_props[:]
    for key, value in properties.items():
        graph.metadata_props.add(key=key, value=value)


def write_onnx_metadata(path: Path, properties: dict[str, str]) -> None:
    """Check the ONNX file at ``path`` and replace its metadata_props with ``properties``."""
    graph = onnx.load(str(path))
    set_onnx_metadata(graph, properties)
    onnx.save(graph, str(path))
