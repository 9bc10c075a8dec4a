"""Read a TensorFlow Lite flatbuffer into plain Python: tensors, constants and operators.

Uses the ``tflite`` package (generated flatbuffer accessors, no TensorFlow). Constant weights
are resolved to float32 numpy arrays: float16 buffers are widened, and the ``DENSIFY`` and
``DEQUANTIZE`` operators that only unpack constants (sparse or float16 storage) are folded
away, so the remaining operators are the network's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# tflite.TensorType values -> numpy dtypes (the types these models use).
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
# tflite.SparseIndexVector union members -> index dtypes.
_INDEX_VECTORS = {1: ("Int32Vector", np.int32), 2: ("Uint16Vector", np.uint16), 3: ("Uint8Vector", np.uint8)}
_FOLDED = ("DEQUANTIZE", "DENSIFY")


@dataclass(frozen=True)
class GraphTensor:
    index: int
    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class GraphOp:
    """One operator: ``kind`` is the TFLite builtin name (``CONV_2D``...), ``options`` its fields."""

    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, int] = field(default_factory=dict)  # the fields read are integers, enums and flags


@dataclass
class TFLiteGraph:
    """The first subgraph of a model: tensors by index, constants (float32 or int32) and ops in order."""

    tensors: dict[int, GraphTensor]
    constants: dict[int, np.ndarray]
    ops: list[GraphOp]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _options(op, kind: str) -> dict[str, int]:
    """The builtin options table of ``op`` as a dict of its scalar fields."""
    import tflite

    table_class = {
        "CONV_2D": tflite.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
        "ADD": tflite.AddOptions,
        "MAX_POOL_2D": tflite.Pool2DOptions,
        "RESIZE_BILINEAR": tflite.ResizeBilinearOptions,
        "DEPTH_TO_SPACE": tflite.DepthToSpaceOptions,
        "CONCATENATION": tflite.ConcatenationOptions,
    }.get(kind)
    raw = op.BuiltinOptions()
    if table_class is None or raw is None:
        return {}
    table = table_class()
    table.Init(raw.Bytes, raw.Pos)
    fields = {
        "CONV_2D": ("Padding", "StrideH", "StrideW", "DilationHFactor", "DilationWFactor", "FusedActivationFunction"),
        "DEPTHWISE_CONV_2D": ("Padding", "StrideH", "StrideW", "DepthMultiplier", "DilationHFactor",
                              "DilationWFactor", "FusedActivationFunction"),
        "ADD": ("FusedActivationFunction",),
        "MAX_POOL_2D": ("Padding", "StrideH", "StrideW", "FilterHeight", "FilterWidth", "FusedActivationFunction"),
        "RESIZE_BILINEAR": ("AlignCorners", "HalfPixelCenters"),
        "DEPTH_TO_SPACE": ("BlockSize",),
        "CONCATENATION": ("Axis", "FusedActivationFunction"),
    }[kind]
    return {name: getattr(table, name)() for name in fields}


def _index_vector(metadata, which: str) -> np.ndarray:
    """The segments or indices array of a sparse dimension's metadata."""
    import tflite

    kind = metadata.ArraySegmentsType() if which == "segments" else metadata.ArrayIndicesType()
    if kind not in _INDEX_VECTORS:
        raise ValueError(f"unsupported sparse index vector type {kind}")
    class_name, dtype = _INDEX_VECTORS[kind]
    raw = metadata.ArraySegments() if which == "segments" else metadata.ArrayIndices()
    vector = getattr(tflite, class_name)()
    vector.Init(raw.Bytes, raw.Pos)
    return vector.ValuesAsNumpy().astype(np.int64) if vector.ValuesLength() else np.zeros(0, np.int64)


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity) -> np.ndarray:
    """Expand TFLite sparse storage (dense and CSR dimensions, no block map) to a dense array.

    Walks the dimensions in traversal order: a dense dimension of size n maps a parent position
    p to children p * n + i; a CSR dimension maps p to the stored positions
    segments[p] .. segments[p + 1] - 1 with coordinates indices[...]. Leaves index ``values``.
    """
    if not sparsity.BlockMapIsNone() and sparsity.BlockMapLength():
        raise ValueError("block-sparse tensors are not supported")
    order = sparsity.TraversalOrderAsNumpy()
    levels: list[tuple[str, int, np.ndarray | None, np.ndarray | None]] = []
    for level in range(sparsity.DimMetadataLength()):
        meta = sparsity.DimMetadata(level)
        if meta.Format() == 0:  # DENSE
            levels.append(("dense", meta.DenseSize(), None, None))
        else:
            levels.append(("csr", 0, _index_vector(meta, "segments"), _index_vector(meta, "indices")))
    out = np.zeros(shape, dtype=values.dtype)
    coords = [0] * len(shape)

    def walk(level: int, position: int) -> None:
        if level == len(levels):
            out[tuple(coords)] = values[position]
            return
        kind, size, segments, indices = levels[level]
        if kind == "dense":
            for i in range(size):
                coords[order[level]] = i
                walk(level + 1, position * size + i)
        else:
            assert segments is not None and indices is not None  # a CSR level has both
            for stored in range(segments[position], segments[position + 1]):
                coords[order[level]] = int(indices[stored])
                walk(level + 1, stored)

    walk(0, 0)
    return out


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse ``path``; constants come out as float32 (weights) or int32 (shapes, paddings)."""
    import tflite
    from tflite.utils import opcode2name

    model = tflite.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f"{path}: expected one subgraph, found {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    tensors: dict[int, GraphTensor] = {}
    constants: dict[int, np.ndarray] = {}
    sparse: dict[int, object] = {}
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        shape = tuple(int(v) for v in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        tensors[i] = GraphTensor(i, tensor.Name().decode(), shape)
        buffer = model.Buffers(tensor.Buffer())
        if buffer.DataLength():
            if tensor.Type() not in _DTYPES:
                raise ValueError(f"{path}: tensor {tensors[i].name} has unsupported type {tensor.Type()}")
            data = buffer.DataAsNumpy().tobytes()
            values = np.frombuffer(data, dtype=_DTYPES[tensor.Type()])
            if tensor.Sparsity() is not None:
                sparse[i] = tensor.Sparsity()
                constants[i] = values
            else:
                constants[i] = values.reshape(shape)
    ops: list[GraphOp] = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        inputs = tuple(int(v) for v in op.InputsAsNumpy())
        outputs = tuple(int(v) for v in op.OutputsAsNumpy())
        if kind in _FOLDED:
            (source,), (target,) = inputs, outputs
            if source not in constants:
                raise ValueError(f"{path}: {kind} of a non-constant tensor is not supported")
            value = constants[source]
            if kind == "DENSIFY":
                value = densify(value, tensors[source].shape, sparse[source])
            constants[target] = value
            continue
        ops.append(GraphOp(kind, inputs, outputs, _options(op, kind)))
    constants = {
        i: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v.astype(np.int32)
        for i, v in constants.items()
    }
    return TFLiteGraph(
        tensors=tensors,
        constants=constants,
        ops=ops,
        inputs=tuple(int(v) for v in graph.InputsAsNumpy()),
        outputs=tuple(int(v) for v in graph.OutputsAsNumpy()),
    )
