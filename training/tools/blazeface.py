"""MediaPipe's BlazeFace face detectors rebuilt in PyTorch from their TFLite graphs.

:class:`TFLiteNet` turns each operator of a :class:`training.tools.tflite_graph.TFLiteGraph` into a
torch module (4-D activations are held NCHW, TFLite's are NHWC; the ops translate). :class:`BlazeFace`
wraps it into the graph the service runs: uint8 letterboxed input -> scores, boxes and keypoints
decoded against the SSD anchors that MediaPipe configures for the model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.tools.tflite_graph import GraphOp, TFLiteGraph, read_tflite

Source = Literal["short", "full"]  # MediaPipe's short-range and full-range models
MEDIAPIPE_FACE_DETECTION = Path("mediapipe") / "modules" / "face_detection"

_SAME, _VALID = 0, 1  # tflite.Padding
_ACTIVATIONS = {0: nn.Identity, 1: nn.ReLU}  # tflite.ActivationFunctionType NONE, RELU
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


@dataclass(frozen=True)
class BlazeFaceSpec:
    """One MediaPipe face detection model and its anchor / decoding settings.

    The values are MediaPipe's (``face_detection_short_range.pbtxt`` / ``..._full_range.pbtxt``
    in the MediaPipe sources: SsdAnchorsCalculator and TensorsToDetectionsCalculator options).
    Anchors have a fixed size of 1 x 1 (``fixed_anchor_size``), so only their centres matter:
    consecutive layers with the same stride share one feature map, each layer adding
    ``aspect_ratios`` (1.0) plus one interpolated anchor per cell when
    ``interpolated_scale_aspect_ratio`` > 0. Raw regressor values are in input pixels
    (x_scale = y_scale = w_scale = h_scale = input size), ordered x, y, w, h, then six
    keypoints x, y; scores are sigmoid(clip(logit, +-100)).
    """

    name: str
    tflite_file: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    num_anchors: int
    anchor_offset: float = 0.5
    num_keypoints: int = 6
    score_clipping: float = 100.0
    min_score: float = 0.5  # MediaPipe's min_score_thresh (used by the parity check)

    def anchor_centres(self) -> np.ndarray:
        """(N, 2) anchor centres x, y in input pixels, in the order of the network's outputs."""
        centres = []
        layer = 0
        while layer < len(self.strides):
            stride = self.strides[layer]
            group = sum(1 for s in self.strides[layer:] if s == stride)
            per_cell = group * (1 + (self.interpolated_scale_aspect_ratio > 0))
            cells = math.ceil(self.input_size / stride)
            y, x = np.mgrid[0:cells, 0:cells]
            grid = (np.stack([x, y], axis=-1).reshape(-1, 2) + self.anchor_offset) / cells
            centres.append(np.repeat(grid, per_cell, axis=0))
            layer += group
        out = np.concatenate(centres) * self.input_size
        if len(out) != self.num_anchors:
            raise ValueError(f"{self.name}: {len(out)} anchors, expected {self.num_anchors}")
        return out.astype(np.float32)


SPECS: dict[str, BlazeFaceSpec] = {
    "short": BlazeFaceSpec(
        name="face_detection_short_range", tflite_file="face_detection_short_range.tflite", input_size=128,
        strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0, num_anchors=896, min_score=0.5,
    ),
    "full": BlazeFaceSpec(
        name="face_detection_full_range_sparse", tflite_file="face_detection_full_range_sparse.tflite",
        input_size=192, strides=(4,), interpolated_scale_aspect_ratio=0.0, num_anchors=2304, min_score=0.6,
    ),
}


def mediapipe_model_path(spec: BlazeFaceSpec) -> Path:
    """The .tflite file inside the installed mediapipe wheel."""
    import mediapipe

    path = Path(mediapipe.__file__).resolve().parent.parent / MEDIAPIPE_FACE_DETECTION / spec.tflite_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: install mediapipe==0.10.14 (facerecon[train])")
    return path


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) along one axis (the extra pixel goes after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Conv(nn.Module):
    """CONV_2D / DEPTHWISE_CONV_2D with TFLite's padding and fused activation."""

    def __init__(self, op: GraphOp, graph: TFLiteGraph) -> None:
        super().__init__()
        o = op.options
        kernel = graph.constants[op.inputs[1]]
        bias = graph.constants[op.inputs[2]]
        if op.kind == "CONV_2D":
            weight, groups = kernel.transpose(0, 3, 1, 2), 1  # (O, kh, kw, I) -> (O, I, kh, kw)
        else:
            if o["DepthMultiplier"] != 1:
                raise ValueError("depthwise convolutions with a multiplier are not supported")
            weight, groups = kernel.transpose(3, 0, 1, 2), kernel.shape[3]  # (1, kh, kw, C) -> (C, 1, kh, kw)
        out_ch, _, kh, kw = weight.shape
        in_h, in_w = graph.tensors[op.inputs[0]].shape[1:3]
        if o["Padding"] == _SAME:
            (top, bottom), (left, right) = (_same_padding(in_h, kh, o["StrideH"], o["DilationHFactor"]),
                                            _same_padding(in_w, kw, o["StrideW"], o["DilationWFactor"]))
        else:
            top = bottom = left = right = 0
        self.pad = (left, right, top, bottom) if (left, top) != (right, bottom) else None
        self.conv = nn.Conv2d(weight.shape[1] * groups, out_ch, (kh, kw), stride=(o["StrideH"], o["StrideW"]),
                              padding=0 if self.pad else (top, left), groups=groups,
                              dilation=(o["DilationHFactor"], o["DilationWFactor"]))
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            assert self.conv.bias is not None  # nn.Conv2d has a bias by default
            self.conv.bias.copy_(torch.from_numpy(bias))
        self.activation = _ACTIVATIONS[o["FusedActivationFunction"]]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.activation(self.conv(x))


class _Add(nn.Module):
    def __init__(self, op: GraphOp) -> None:
        super().__init__()
        self.activation = _ACTIVATIONS[op.options["FusedActivationFunction"]]()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.activation(a + b)


class _Pad(nn.Module):
    """PAD with constant zeros; TFLite's paddings (4, 2) are NHWC."""

    def __init__(self, op: GraphOp, graph: TFLiteGraph) -> None:
        super().__init__()
        (n0, n1), (h0, h1), (w0, w1), (c0, c1) = graph.constants[op.inputs[1]].tolist()
        pad: tuple[int, ...] = (w0, w1, h0, h1, c0, c1, n0, n1)
        while len(pad) > 2 and pad[-2:] == (0, 0):
            pad = pad[:-2]
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pad) if any(self.pad) else x


class _MaxPool(nn.Module):
    def __init__(self, op: GraphOp, graph: TFLiteGraph) -> None:
        super().__init__()
        o = op.options
        in_h, in_w = graph.tensors[op.inputs[0]].shape[1:3]
        kernel, stride = (o["FilterHeight"], o["FilterWidth"]), (o["StrideH"], o["StrideW"])
        if o["Padding"] == _SAME and (_same_padding(in_h, kernel[0], stride[0]) != (0, 0)
                                      or _same_padding(in_w, kernel[1], stride[1]) != (0, 0)):
            raise ValueError("padded max pooling is not supported")
        self.pool = nn.MaxPool2d(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


class _ResizeBilinear(nn.Module):
    def __init__(self, op: GraphOp, graph: TFLiteGraph) -> None:
        super().__init__()
        if op.options["AlignCorners"] or not op.options["HalfPixelCenters"]:
            raise ValueError("only half-pixel-centre bilinear resizing is supported")
        self.size = tuple(graph.tensors[op.outputs[0]].shape[1:3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


class _DepthToSpace(nn.Module):
    """TensorFlow's depth-to-space (DCR order): channel (i * b + j) * C + c -> pixel offset (i, j)."""

    def __init__(self, op: GraphOp) -> None:
        super().__init__()
        self.block = op.options["BlockSize"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        n, c, h, w = x.shape
        x = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return x.reshape(n, c // (b * b), h * b, w * b)


class _Reshape(nn.Module):
    """RESHAPE in TFLite's element order (NHWC for 4-D inputs); the output is (B, ...) with rank < 4."""

    def __init__(self, op: GraphOp, graph: TFLiteGraph) -> None:
        super().__init__()
        self.shape = graph.tensors[op.outputs[0]].shape[1:]
        if len(self.shape) + 1 == 4:
            raise ValueError("reshapes to 4-D tensors are not supported")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        return x.reshape(-1, *self.shape)


class _Concat(nn.Module):
    def __init__(self, op: GraphOp, graph: TFLiteGraph) -> None:
        super().__init__()
        axis = op.options["Axis"]
        rank = len(graph.tensors[op.outputs[0]].shape)
        self.axis = _NHWC_TO_NCHW_AXIS[axis % 4] if rank == 4 else axis
        self.activation = _ACTIVATIONS[op.options["FusedActivationFunction"]]()

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.activation(torch.cat(xs, dim=self.axis))


def _layer(op: GraphOp, graph: TFLiteGraph) -> nn.Module:
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _Conv(op, graph)
    if op.kind == "ADD":
        return _Add(op)
    if op.kind == "RELU":
        return nn.ReLU()
    if op.kind == "PAD":
        return _Pad(op, graph)
    if op.kind == "MAX_POOL_2D":
        return _MaxPool(op, graph)
    if op.kind == "RESIZE_BILINEAR":
        return _ResizeBilinear(op, graph)
    if op.kind == "DEPTH_TO_SPACE":
        return _DepthToSpace(op)
    if op.kind == "RESHAPE":
        return _Reshape(op, graph)
    if op.kind == "CONCATENATION":
        return _Concat(op, graph)
    raise ValueError(f"TFLite operator {op.kind} is not supported")


def _zero_extended(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    """``conv`` reading ``in_channels`` and writing ``out_channels`` (at least its own): the
    added inputs are ignored (zero weights) and the added outputs are zero (zero weights and
    biases). A depthwise convolution grows its groups with its channels."""
    depthwise = conv.groups > 1
    if depthwise and in_channels != out_channels:
        raise ValueError("a depthwise convolution keeps its channel count")
    if conv.bias is None:
        raise ValueError("the TFLite convolutions all have a bias")
    per_group = 1 if depthwise else in_channels
    weight = conv.weight.new_zeros((out_channels, per_group, *conv.weight.shape[2:]))
    weight[: conv.out_channels, : conv.weight.shape[1]] = conv.weight.detach()
    bias = conv.bias.new_zeros(out_channels)
    bias[: conv.out_channels] = conv.bias.detach()
    grown = copy.deepcopy(conv)
    grown.in_channels, grown.out_channels = in_channels, out_channels
    grown.groups = out_channels if depthwise else 1
    grown.weight, grown.bias = nn.Parameter(weight), nn.Parameter(bias)
    return grown


class TFLiteNet(nn.Module):
    """The operators of a TFLite graph as torch layers, run in the graph's order.

    forward: (B, 3, H, W) float32 (the graph's input, NCHW) -> the graph's outputs in order
    (as TFLite lays them out: for these detectors (B, N, 16) regressors and (B, N, 1) logits).
    """

    def __init__(self, graph: TFLiteGraph) -> None:
        super().__init__()
        (self.input_index,) = graph.inputs
        self.output_indices = graph.outputs
        self.layers = nn.ModuleList(_layer(op, graph) for op in graph.ops)
        # Only operands produced by other ops are runtime values: constants (weights, paddings,
        # shapes) live inside the layers.
        produced = {self.input_index} | {op.outputs[0] for op in graph.ops}
        self.wiring = [(tuple(i for i in op.inputs if i in produced), op.outputs[0]) for op in graph.ops]
        # Channels of each 4-D value as the graph holds it (its true count; see pad_channels).
        self.channels = {i: graph.tensors[i].shape[3] for i in produced if len(graph.tensors[i].shape) == 4}

    def pad_channels(self, block: int) -> int:
        """Hold each 4-D value whose readers all keep channels apart (convolutions, additions,
        activations, pooling, resizing, paddings) with its channels zero-extended to a multiple of
        ``block``; returns how many values grew.

        Every convolution gets zero weights for the added input channels and zero weights and
        biases for the added output channels, so the added channels stay zero through ReLU, Add,
        max pooling and resizing and the outputs are unchanged. A residual channel PAD then often
        disappears (42 -> 48 channels are both held as 48), and ONNX Runtime's blocked (NCHWc)
        convolution layout, which wants multiples of its block (16 with AVX-512), runs the whole
        chain without reordering or splitting it around each odd-sized convolution and PAD.
        Values read by a reshape, concatenation or depth-to-space keep their true channels.
        """
        preserving = (_Conv, _Add, nn.ReLU, _Pad, _MaxPool, _ResizeBilinear)
        readers: dict[int, list[nn.Module]] = {}
        for layer, (inputs, _) in zip(self.layers, self.wiring):
            for i in inputs:
                readers.setdefault(i, []).append(layer)
        # Values that keep their true channels: those read by a reshape, concatenation or
        # depth-to-space, and (walking back) the inputs of whatever passes channels through to them.
        fixed = {i for i, layers in readers.items() if not all(isinstance(r, preserving) for r in layers)}
        for layer, (inputs, output) in reversed(list(zip(self.layers, self.wiring))):
            if output in fixed and not (isinstance(layer, _Conv) and layer.conv.groups == 1):
                fixed.update(i for i in inputs if i in self.channels)
        held = {self.input_index: self.channels[self.input_index]}
        grown = 0
        for layer, (inputs, output) in zip(self.layers, self.wiring):
            if output not in self.channels:
                continue
            true = self.channels[output]
            wanted = true if output in fixed else -(-true // block) * block
            if isinstance(layer, _Conv):
                held[output] = held[inputs[0]] if layer.conv.groups > 1 else wanted
                layer.conv = _zero_extended(layer.conv, held[inputs[0]], held[output])
            elif isinstance(layer, _Pad) and len(layer.pad) == 6:  # a channel (residual) padding
                if layer.pad[4] != 0:
                    raise ValueError("channel paddings before the first channel are not supported")
                held[output] = max(wanted, held[inputs[0]])
                layer.pad = (*layer.pad[:5], held[output] - held[inputs[0]])
            elif not isinstance(layer, preserving):  # it reads true channels (they are fixed)
                held[output] = true
            else:
                held_in = {held[i] for i in inputs if i in self.channels}
                if len(held_in) != 1:
                    raise ValueError(f"{type(layer).__name__} reads values held with {sorted(held_in)} channels")
                held[output] = held_in.pop()
            if output in fixed and held[output] != true:
                raise ValueError(f"{type(layer).__name__} gives {held[output]} channels where {true} are wanted")
            grown += held[output] != true
        return grown

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = {self.input_index: x}
        for layer, (inputs, output) in zip(self.layers, self.wiring):
            values[output] = layer(*(values[i] for i in inputs))
        return tuple(values[i] for i in self.output_indices)


class BlazeFace(nn.Module):
    """The exported detector graph: letterboxed photo -> decoded candidate faces.

    forward: image (B, S, S, 3) uint8 RGB -> scores (B, N) in [0, 1], boxes (B, N, 4) x1, y1,
    x2, y2 and keypoints (B, N, K, 2) x, y, both in input pixels. No thresholding or
    suppression: that is :mod:`model.runtime.detector`'s job.
    """

    anchors: torch.Tensor  # buffer (N, 2)

    def __init__(self, spec: BlazeFaceSpec, graph: TFLiteGraph) -> None:
        super().__init__()
        self.spec = spec
        self.net = TFLiteNet(graph)
        input_shape = graph.tensors[graph.inputs[0]].shape
        if input_shape != (1, spec.input_size, spec.input_size, 3):
            raise ValueError(f"{spec.name}: graph input {input_shape} does not match the spec")
        # Regressors are the output with 4 + 2K values per anchor, logits the one with 1.
        widths = [graph.tensors[i].shape[-1] for i in graph.outputs]
        self.regressor_slot = widths.index(4 + 2 * spec.num_keypoints)
        self.score_slot = widths.index(1)
        self.register_buffer("anchors", torch.from_numpy(spec.anchor_centres()))

    @classmethod
    def from_mediapipe(cls, source: Source) -> BlazeFace:
        spec = SPECS[source]
        return cls(spec, read_tflite(mediapipe_model_path(spec)))

    def raw(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B, S, S, 3) uint8 -> the TFLite model's regressors (B, N, 16), logits (B, N, 1)."""
        x = image.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        outputs = self.net(x)
        return outputs[self.regressor_slot], outputs[self.score_slot]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        regressors, logits = self.raw(image)
        limit = self.spec.score_clipping
        scores = torch.sigmoid(logits[..., 0].clamp(-limit, limit))
        centre = regressors[..., 0:2] + self.anchors
        half = regressors[..., 2:4] / 2
        boxes = torch.cat([centre - half, centre + half], dim=-1)
        points = regressors[..., 4:].reshape(*regressors.shape[:2], self.spec.num_keypoints, 2)
        keypoints = points + self.anchors[:, None]
        return scores, boxes, keypoints
