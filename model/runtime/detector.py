"""Face detection with MediaPipe's BlazeFace converted to ONNX (ONNX Runtime only, no torch).

The ONNX graph holds one or more BlazeFace networks ("branches": the short-range model, good
for faces that fill much of the photo, and the full-range model, good for small faces). Each
branch runs in a session of its own, cut from the graph when the detector loads (the file is not
changed; ONNX Runtime would otherwise run every branch of the graph whatever outputs are asked
for), so a photo pays only for the branches it needs. For each branch the photo is letterboxed
into the network's square input (box-filtered by an integer factor, then scaled to fit with
bilinear filtering, centred, black border); the graph returns every anchor's score, box and
keypoints decoded in input pixels (see :mod:`training.tools.blazeface`). This module keeps the
confident ones, merges overlapping candidates by score-weighted averaging (MediaPipe's weighted
non-max suppression), maps them back to photo pixels, turns BlazeFace's box into the face box the
reconstruction crop expects (:class:`BoxCalibration`), and pools the branches: where several found
the same face (calibrated boxes overlapping by IoU > the NMS threshold) the best-scoring detection
stays.

Which branches run (:meth:`FaceDetector.detect`): every one for ``faces=all`` (a big face in front
says nothing about small ones behind it). For the largest face the first branch (short-range, 128
pixels: 1.6 ms on this repository's 2-core CPU against 6.5 ms for the full-range one) runs alone,
and the others only when it is not sure: it found nothing, its largest face is small (the
calibrated box's side, sqrt(width * height), under ``small_face`` = 0.15 of the photo's longer side,
19 of its 128 input pixels) or scores under ``sure_score`` = 0.7. Measured on the AFLW2000-3D dev
slice (``benchmarks/bench_detector.py``): the full-range branch ran for 4 of the 123 photos, and for
121, 76 and 7 of them pasted into a 640x480 canvas at 10%, 15% and 20% of its width; the largest
face was found as often as with both branches on every photo except one photo at 10% (85 of 123
instead of 86). With ``small_face`` = 0.2 none is lost, but the full-range branch runs for 122
and 92 of the faces at 15% and 20%.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from model.conventions import FaceSelection
from model.runtime.detector_kernels import block_mean, weighted_suppression
from model.runtime.image_io import DecodedImage, make_preview
from model.runtime.sessions import Provider, session_options

DEFAULT_DETECTOR = Path(__file__).resolve().parents[1] / "weights" / "face_detector.onnx"
METADATA_PREFIX = "facedetector."
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion", "left_ear_tragion")
SMALL_FACE = 0.15  # a face whose calibrated box side is under this fraction of the photo's longer side is small
SURE_SCORE = 0.7  # the short-range branch is sure of a face scoring at least this


def input_name(branch: str) -> str:
    return f"image_{branch}"


def output_names(branch: str) -> tuple[str, str, str]:
    return f"scores_{branch}", f"boxes_{branch}", f"keypoints_{branch}"


@dataclass(frozen=True)
class BoxCalibration:
    """BlazeFace's box -> an estimate of the bounds of the 68 iBUG points (the training crop's box).

    With the detector box's centre (cx, cy) and side s = sqrt(w * h), the 68-point box has centre
    (cx + centre_x * s, cy + centre_y * s), width ``width`` * s and height ``height`` * s.
    Fitted on training photos labelled with MediaPipe FaceMesh (:mod:`training.tools.detector_calibration`).
    """

    centre_x: float = 0.0
    centre_y: float = 0.0
    width: float = 1.0
    height: float = 1.0

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) detector boxes x1, y1, x2, y2 -> (N, 4) calibrated boxes."""
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        side = np.sqrt(np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 0.0), axis=1))[:, None]
        centre = centre + side * np.array([self.centre_x, self.centre_y])
        half = side * np.array([self.width, self.height]) / 2
        return np.concatenate([centre - half, centre + half], axis=1)


@dataclass(frozen=True)
class DetectorBranch:
    """One network of the graph: input ``image_<name>`` (B, S, S, 3) uint8 RGB, the photo
    letterboxed into S x S; outputs ``scores_<name>`` (B, N) in [0, 1], ``boxes_<name>``
    (B, N, 4) x1, y1, x2, y2 and ``keypoints_<name>`` (B, N, 6, 2) x, y in input pixels, one per
    anchor, decoded and not yet suppressed."""

    name: str
    input_size: int
    num_anchors: int
    source_model: str
    anchors: str
    calibration: BoxCalibration


@dataclass(frozen=True)
class DetectorMetadata:
    """What the ONNX detector carries besides the graph, as ``facedetector.*`` metadata_props."""

    branches: tuple[DetectorBranch, ...]
    source_licence: str
    decoding: str
    keypoints: str = ",".join(KEYPOINT_NAMES)
    letterbox: str = "scale to fit S x S keeping aspect (bilinear), centred, zero border"
    merge: str = "weighted NMS per branch, then across branches the best-scoring of overlapping faces"
    format_version: str = "1"

    def to_properties(self) -> dict[str, str]:
        props = {METADATA_PREFIX + "branches": ",".join(b.name for b in self.branches)}
        for key, value in dataclasses.asdict(self).items():
            if key != "branches":
                props[METADATA_PREFIX + key] = str(value)
        for branch in self.branches:
            prefix = f"{METADATA_PREFIX}{branch.name}."
            for key, value in dataclasses.asdict(branch).items():
                if key not in ("name", "calibration"):
                    props[prefix + key] = str(value)
            for key, value in dataclasses.asdict(branch.calibration).items():
                props[f"{prefix}calibration.{key}"] = repr(float(value))
        return props

    @classmethod
    def from_properties(cls, props: dict[str, str]) -> DetectorMetadata:
        def get(key: str) -> str:
            raw = props.get(METADATA_PREFIX + key)
            if raw is None:
                raise ValueError(f"detector metadata lacks {METADATA_PREFIX}{key}: not a facerecon face detector")
            return raw

        branches = []
        for name in get("branches").split(","):
            calibration = BoxCalibration(**{f.name: float(get(f"{name}.calibration.{f.name}"))
                                            for f in dataclasses.fields(BoxCalibration)})
            branches.append(DetectorBranch(
                name=name, input_size=int(get(f"{name}.input_size")), num_anchors=int(get(f"{name}.num_anchors")),
                source_model=get(f"{name}.source_model"), anchors=get(f"{name}.anchors"), calibration=calibration,
            ))
        values = {f.name: get(f.name) for f in dataclasses.fields(cls) if f.name != "branches"}
        return cls(branches=tuple(branches), **values)


@dataclass(frozen=True)
class Detection:
    """One face in photo pixels.

    box: x1, y1, x2, y2, an estimate of the bounds of the face's 68 iBUG landmarks (the box
    :func:`model.runtime.crop.crop_face` expects); score: detector confidence in [0, 1];
    keypoints: (6, 2) x, y of the eyes, nose tip, mouth centre and ear tragions
    (``KEYPOINT_NAMES``; right / left as the subject sees them).
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray


@dataclass(frozen=True)
class Letterbox:
    """Photo pixel = (input pixel - offset) / scale, per axis."""

    offset_x: float
    offset_y: float
    scale_x: float
    scale_y: float

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) input pixels x, y -> photo pixels."""
        return (points - np.array([self.offset_x, self.offset_y])) / np.array([self.scale_x, self.scale_y])


@dataclass(frozen=True)
class DetectorInput:
    """A photo as the letterboxing reads it: ``image`` (H, W, 3) uint8 RGB, C-contiguous and read-only,
    is the photo box-filtered by ``factor`` (1: the photo itself); ``width`` and ``height`` are the photo's."""

    image: np.ndarray
    factor: int
    width: int
    height: int


def detector_input(image: np.ndarray, preview_side: int | None = None) -> DetectorInput:
    """image (H, W, 3) uint8 RGB -> what the letterboxing reads: the decoded photo's preview when the
    image is a :class:`model.runtime.image_io.DecodedImage` decoded for a detector; else the same
    preview made here (:func:`model.runtime.image_io.make_preview` for ``preview_side``; without
    it, the array itself), so that a photo gives the same detections whether it comes as bytes or
    as an array."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    preview = image.preview if isinstance(image, DecodedImage) else None
    if preview is None:
        preview = make_preview(np.asarray(image), preview_side)
    return DetectorInput(preview.image, preview.factor, width, height)


def letterbox_input(source: DetectorInput, size: int) -> tuple[np.ndarray, Letterbox]:
    """source -> a batch of one (1, size, size, 3) uint8 with the photo scaled to fit and centred.

    The scaling is a box filter by the largest integer factor that leaves the longer side at least
    ``size`` (:func:`model.runtime.detector_kernels.block_mean`: each pixel the mean of a block,
    compiled, read straight from the array) and Pillow's bilinear filter from there, on that far
    smaller image: for a 640x480 photo and the short-range branch (a factor of 5 and no bilinear
    step) 0.13 ms, where handing the photo to Pillow and its reduce took 0.47."""
    base = source.image
    height, width = base.shape[:2]
    reduce = max(1, max(width, height) // size)
    reduced = block_mean(base, reduce) if reduce > 1 else base
    height, width = reduced.shape[:2]
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        reduced = np.asarray(Image.fromarray(reduced).resize((new_w, new_h), Image.Resampling.BILINEAR))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.zeros((1, size, size, 3), dtype=np.uint8)
    canvas[0, top : top + new_h, left : left + new_w] = reduced
    factor = reduce * source.factor  # photo pixels per pixel of ``reduced`` before the bilinear step
    return canvas, Letterbox(left, top, new_w / (width * factor), new_h / (height * factor))


def letterbox(image: np.ndarray, size: int, preview_side: int | None = None) -> tuple[np.ndarray, Letterbox]:
    """image (H, W, 3) uint8 -> (size, size, 3) uint8 with the photo scaled to fit and centred
    (:func:`detector_input`, :func:`letterbox_input`)."""
    canvas, transform = letterbox_input(detector_input(image, preview_side), size)
    return canvas[0], transform


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of box (4,) with boxes (N, 4), all x1, y1, x2, y2 -> (N,)."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, iou_threshold: float,
                 max_faces: int, score_threshold: float = -np.inf) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's weighted non-max suppression of the candidates scoring at least ``score_threshold``
    (:func:`model.runtime.detector_kernels.weighted_suppression`).

    scores (N,), boxes (N, 4), keypoints (N, K, 2) -> up to ``max_faces`` (score, box (4,),
    keypoints (K, 2)), best first. The best remaining candidate takes every remaining candidate
    that overlaps it by IoU > ``iou_threshold`` (itself included); the merged box and keypoints
    are their score-weighted means, the score stays the best one's.
    """
    scores, keypoints = np.ascontiguousarray(scores), np.ascontiguousarray(keypoints)
    shape = keypoints.shape[1:]
    candidates = np.flatnonzero(scores >= score_threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")].astype(np.int64)  # ties in anchor order
    kept_scores, kept_boxes, kept_points = weighted_suppression(
        scores, np.ascontiguousarray(boxes), keypoints.reshape(len(keypoints), math.prod(shape)), order,
        iou_threshold, max_faces)
    return [(float(score), box, points.reshape(shape))
            for score, box, points in zip(kept_scores, kept_boxes, kept_points)]


# Serialized ONNX (protobuf wire format), read without the onnx package (not a serving dependency):
# the field numbers of onnx.proto that cutting a branch out of the graph touches.
_MODEL_GRAPH, _MODEL_METADATA = 7, 14  # ModelProto.graph, ModelProto.metadata_props
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO = 11, 12, 13
_NODE_INPUT, _NODE_OUTPUT, _NODE_ATTRIBUTE = 1, 2, 5
_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS = 6, 11  # subgraphs (If, Loop, Scan): their outer-scope inputs are implicit
_TENSOR_NAME, _VALUE_INFO_NAME, _SPARSE_VALUES = 8, 1, 1


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(data: bytes) -> list[tuple[int, int, int, int]]:
    """The fields of one serialized protobuf message, in order: (field number, start of the field,
    start of its value, end). A length-delimited value (message, string, bytes) is data[value:end]."""
    fields = []
    pos = 0
    try:
        while pos < len(data):
            start = pos
            tag, pos = _varint(data, pos)
            wire_type = tag & 7
            value = pos
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 2:
                length, value = _varint(data, pos)
                pos = value + length
            elif wire_type == 5:
                pos += 4
            else:
                raise ValueError(f"protobuf wire type {wire_type}")
            fields.append((tag >> 3, start, value, pos))
    except IndexError:
        raise ValueError("truncated protobuf message") from None
    if pos != len(data):
        raise ValueError("truncated protobuf message")
    return fields


def _strings(data: bytes, number: int) -> list[str]:
    """Every value of the string field ``number`` of a serialized message."""
    return [data[value:end].decode() for field, _, value, end in _fields(data) if field == number]


def _message(data: bytes, number: int) -> bytes:
    """The first value of the message field ``number`` of a serialized message (empty when absent)."""
    return next((data[value:end] for field, _, value, end in _fields(data) if field == number), b"")


def onnx_metadata(model: bytes) -> dict[str, str]:
    """A serialized ONNX model's metadata_props, key -> value."""
    entries = [model[value:end] for field, _, value, end in _fields(model) if field == _MODEL_METADATA]
    return {"".join(_strings(entry, 1)): "".join(_strings(entry, 2)) for entry in entries}


def branch_model(model: bytes, outputs: Collection[str]) -> bytes:
    """A serialized ONNX model cut down to what computes ``outputs``: its nodes, initializers,
    inputs and value infos; outputs, opsets, metadata and everything else as they were.

    The nodes are walked once backwards from ``outputs`` (an ONNX graph lists its nodes in
    topological order). Graphs with subgraphs (If, Loop, Scan), whose inner nodes may read outer
    values without naming them as inputs, are refused (ValueError), as is anything not ONNX.
    """
    try:
        ((_, graph_start, graph_value, graph_end),) = [f for f in _fields(model) if f[0] == _MODEL_GRAPH]
    except ValueError:
        raise ValueError("not an ONNX model with one graph") from None
    graph = model[graph_value:graph_end]
    parts = _fields(graph)
    needed = set(outputs)
    kept_nodes: set[int] = set()
    for index in reversed(range(len(parts))):
        number, _, value, end = parts[index]
        if number != _GRAPH_NODE:
            continue
        node = graph[value:end]
        if any(field == _NODE_ATTRIBUTE and any(f[0] in (_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS)
                                                for f in _fields(node[v:e])) for field, _, v, e in _fields(node)):
            raise ValueError("the graph has subgraphs (If, Loop, Scan): not cut into branches")
        if needed.intersection(_strings(node, _NODE_OUTPUT)):
            kept_nodes.add(index)
            needed.update(name for name in _strings(node, _NODE_INPUT) if name)
    names = {_GRAPH_INITIALIZER: _TENSOR_NAME, _GRAPH_INPUT: _VALUE_INFO_NAME, _GRAPH_OUTPUT: _VALUE_INFO_NAME,
             _GRAPH_VALUE_INFO: _VALUE_INFO_NAME}
    kept: list[bytes] = []
    found_outputs: set[str] = set()
    for index, (number, start, value, end) in enumerate(parts):
        if number == _GRAPH_NODE:
            keep = index in kept_nodes
        elif number == _GRAPH_SPARSE_INITIALIZER:
            keep = "".join(_strings(_message(graph[value:end], _SPARSE_VALUES), _TENSOR_NAME)) in needed
        elif number in names:
            name = "".join(_strings(graph[value:end], names[number]))
            keep = name in outputs if number == _GRAPH_OUTPUT else name in needed
            if keep and number == _GRAPH_OUTPUT:
                found_outputs.add(name)
        else:
            keep = True
        if keep:
            kept.append(graph[start:end])
    if missing := set(outputs) - found_outputs:
        raise ValueError(f"the graph has no outputs {sorted(missing)}")
    cut = b"".join(kept)
    return (model[:graph_start] + _varint_bytes(_MODEL_GRAPH << 3 | 2) + _varint_bytes(len(cut)) + cut
            + model[graph_end:])


class FaceDetector:
    """Loads the ONNX face detector once and finds faces in photos of any size."""

    def __init__(self, model_path: str | Path = DEFAULT_DETECTOR, *, providers: Sequence[Provider] | None = None,
                 threads: int = 1, spinning: bool = True, score_threshold: float = 0.5, iou_threshold: float = 0.3,
                 max_faces: int = 20, small_face: float = SMALL_FACE, sure_score: float = SURE_SCORE) -> None:
        """``threads``: ONNX Runtime intra-op threads of each branch's session. One by default: the
        networks are so small that a second thread saves little (measured on this repository's
        2-core CPU: short-range 1.6 ms on 1 thread and 1.5 on 2, full-range 6.5 and 5.8); run
        photos in parallel instead. ``spinning``: see :func:`model.runtime.sessions.session_options`.

        ``small_face``, ``sure_score``: when the short-range branch's answer is enough for the
        largest face (:meth:`detect`)."""
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"no face detector at {model_path}: build it with `facerecon build-detector`")
        model = model_path.read_bytes()
        self.metadata = DetectorMetadata.from_properties(onnx_metadata(model))
        options = session_options(threads, spinning=spinning)
        self.sessions = {
            branch.name: ort.InferenceSession(branch_model(model, output_names(branch.name)), options,
                                              providers=list(providers or ["CPUExecutionProvider"]))
            for branch in self.metadata.branches
        }
        self.session = self.sessions[self.metadata.branches[0].name]  # every branch's session has its providers
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_faces = max_faces
        self.small_face = small_face
        self.sure_score = sure_score

    @property
    def largest_input(self) -> int:
        """The side of the largest network input, pixels (what a decoder's preview is made for)."""
        return max(branch.input_size for branch in self.metadata.branches)

    def prepare(self, image: np.ndarray) -> DetectorInput:
        """image (H, W, 3) uint8 RGB -> what the letterboxing of every branch reads (:func:`detector_input`)."""
        return detector_input(image, self.largest_input)

    def run_branch(self, branch: DetectorBranch, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One letterboxed photo (1, S, S, 3) uint8 through one branch's network -> its raw scores (N,),
        boxes (N, 4) and keypoints (N, K, 2) in input pixels."""
        scores, boxes, keypoints = self.sessions[branch.name].run(list(output_names(branch.name)),
                                                                  {input_name(branch.name): batch})
        return scores[0], boxes[0], keypoints[0]

    def branch_detections(self, branch: DetectorBranch, outputs: tuple[np.ndarray, np.ndarray, np.ndarray],
                          transform: Letterbox) -> list[Detection]:
        """A branch's raw outputs -> its faces in photo pixels, calibrated, best score first."""
        scores, boxes, keypoints = outputs
        merged = weighted_nms(scores, boxes, keypoints, self.iou_threshold, self.max_faces, self.score_threshold)
        if not merged:
            return []
        photo_boxes = transform.to_photo(np.stack([box for _, box, _ in merged]).reshape(-1, 2, 2)).reshape(-1, 4)
        return [
            Detection(box=tuple(float(v) for v in box), score=score,  # type: ignore[arg-type]
                      keypoints=transform.to_photo(points).astype(np.float32))
            for (score, _, points), box in zip(merged, branch.calibration.apply(photo_boxes))
        ]

    def detect_branch(self, source: DetectorInput, branch: DetectorBranch) -> list[Detection]:
        """One branch's faces in a photo (:func:`detector_input`): letterbox, network, suppression."""
        batch, transform = letterbox_input(source, branch.input_size)
        return self.branch_detections(branch, self.run_branch(branch, batch), transform)

    def detect_per_branch(self, image: np.ndarray) -> list[list[Detection]]:
        """Detections of each branch (metadata order) in image (H, W, 3) uint8 RGB, calibrated,
        best score first; every branch runs."""
        source = self.prepare(image)
        return [self.detect_branch(source, branch) for branch in self.metadata.branches]

    def short_range_suffices(self, found: Sequence[Detection], source: DetectorInput) -> bool:
        """Whether the first branch's faces are enough to answer the largest face: its largest face
        is at least ``small_face`` of the photo's longer side (the side of the calibrated box,
        sqrt(width * height)) and scores at least ``sure_score``."""
        if not found:
            return False
        largest = max(found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        x1, y1, x2, y2 = largest.box
        side = float(np.sqrt(max(x2 - x1, 0.0) * max(y2 - y1, 0.0)))
        return largest.score >= self.sure_score and side >= self.small_face * max(source.width, source.height)

    def pool(self, found: Sequence[Sequence[Detection]]) -> list[Detection]:
        """Several branches' detections -> one list, best score first: a face found by several
        (calibrated boxes overlapping by IoU > iou_threshold) keeps the best-scoring one."""
        pooled = sorted((d for detections in found for d in detections), key=lambda d: -d.score)
        kept: list[Detection] = []
        boxes = np.empty((0, 4))
        for detection in pooled:
            if len(kept) == self.max_faces:
                break
            box = np.array(detection.box)
            if not (box_iou(box, boxes) > self.iou_threshold).any():
                kept.append(detection)
                boxes = np.vstack([boxes, box])
        return kept

    def detect(self, image: np.ndarray, faces: FaceSelection | str = FaceSelection.all) -> list[Detection]:
        """Faces in image (H, W, 3) uint8 RGB, best score first; boxes and keypoints in photo pixels.

        ``faces="all"`` (the default): every branch runs. ``faces="largest"``: the first branch
        (short-range) runs, and the others only when it does not suffice (:meth:`short_range_suffices`):
        the answer then holds the faces of the branches that ran, the largest among them. A face found
        by several branches keeps the best-scoring detection (:meth:`pool`). An image decoded by
        :func:`model.runtime.image_io.load_rgb` with a preview is letterboxed from the preview.
        """
        every = FaceSelection(faces) is FaceSelection.all
        source = self.prepare(image)
        first, *others = self.metadata.branches
        found = [self.detect_branch(source, first)]
        if others and (every or not self.short_range_suffices(found[0], source)):
            found += [self.detect_branch(source, branch) for branch in others]
        return self.pool(found)
