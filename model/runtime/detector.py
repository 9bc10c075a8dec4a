"""Face detection with MediaPipe's BlazeFace converted to ONNX (ONNX Runtime only, no torch).

The ONNX graph holds one or more BlazeFace networks ("branches": the short-range model, good
for faces that fill much of the photo, and the full-range model, good for small faces). For
each branch the photo is letterboxed into the network's square input (scaled to fit, centred,
black border); the graph returns every anchor's score, box and keypoints decoded in input
pixels (see :mod:`training.tools.blazeface`). This module keeps the confident ones, merges
overlapping candidates by score-weighted averaging (MediaPipe's weighted non-max suppression),
maps them back to photo pixels, turns BlazeFace's box into the face box the reconstruction crop
expects (:class:`BoxCalibration`), and pools the branches: where several found the same face
(calibrated boxes overlapping by IoU > the NMS threshold) the best-scoring detection stays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from model.runtime.reconstructor import Provider, session_options

DEFAULT_DETECTOR = Path(__file__).resolve().parents[1] / "weights" / "face_detector.onnx"
METADATA_PREFIX = "facedetector."
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion", "left_ear_tragion")


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


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """image (H, W, 3) uint8 -> (size, size, 3) uint8 with the photo scaled to fit and centred."""
    height, width = image.shape[:2]
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = np.asarray(
        Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
    )
    return canvas, Letterbox(left, top, new_w / width, new_h / height)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of box (4,) with boxes (N, 4), all x1, y1, x2, y2 -> (N,)."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, iou_threshold: float,
                 max_faces: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's weighted non-max suppression.

    scores (N,), boxes (N, 4), keypoints (N, K, 2) -> up to ``max_faces`` (score, box (4,),
    keypoints (K, 2)), best first. The best remaining candidate takes every remaining candidate
    that overlaps it by IoU > ``iou_threshold`` (itself included); the merged box and keypoints
    are their score-weighted means, the score stays the best one's.
    """
    remaining = np.argsort(-scores, kind="stable")
    out: list[tuple[float, np.ndarray, np.ndarray]] = []
    while remaining.size and len(out) < max_faces:
        top = remaining[0]
        overlapping = box_iou(boxes[top], boxes[remaining]) > iou_threshold
        group = remaining[overlapping]
        weights = scores[group] / scores[group].sum()
        out.append((float(scores[top]), weights @ boxes[group], np.tensordot(weights, keypoints[group], axes=1)))
        remaining = remaining[~overlapping]
    return out


class FaceDetector:
    """Loads the ONNX face detector once and finds faces in photos of any size."""

    def __init__(self, model_path: str | Path = DEFAULT_DETECTOR, *, providers: Sequence[Provider] | None = None,
                 threads: int = 1, score_threshold: float = 0.5, iou_threshold: float = 0.3,
                 max_faces: int = 20) -> None:
        """``threads``: ONNX Runtime intra-op threads. One by default: the networks are so small
        that a second thread costs more in synchronisation than it saves (measured: 6.7 ms per
        photo on 1 thread, slower on 2 of this 2-core machine); run photos in parallel instead."""
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"no face detector at {model_path}: build it with `facerecon build-detector`")
        self.session = ort.InferenceSession(
            str(model_path), session_options(threads), providers=list(providers or ["CPUExecutionProvider"])
        )
        self.metadata = DetectorMetadata.from_properties(self.session.get_modelmeta().custom_metadata_map)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_faces = max_faces

    def detect_per_branch(self, image: np.ndarray) -> list[list[Detection]]:
        """Detections of each branch (metadata order) in image (H, W, 3) uint8 RGB, calibrated,
        best score first."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        inputs: dict[str, np.ndarray] = {}
        transforms: list[Letterbox] = []
        names: list[str] = []
        for branch in self.metadata.branches:
            square, transform = letterbox(image, branch.input_size)
            inputs[input_name(branch.name)] = square[None]
            transforms.append(transform)
            names.extend(output_names(branch.name))
        outputs = dict(zip(names, self.session.run(names, inputs)))
        found: list[list[Detection]] = []
        for branch, transform in zip(self.metadata.branches, transforms):
            scores, boxes, keypoints = (outputs[name][0] for name in output_names(branch.name))
            keep = scores >= self.score_threshold
            merged = weighted_nms(scores[keep], boxes[keep], keypoints[keep], self.iou_threshold, self.max_faces)
            if not merged:
                found.append([])
                continue
            photo_boxes = transform.to_photo(np.stack([box for _, box, _ in merged]).reshape(-1, 2, 2)).reshape(-1, 4)
            found.append([
                Detection(box=tuple(float(v) for v in box), score=score,  # type: ignore[arg-type]
                          keypoints=transform.to_photo(points).astype(np.float32))
                for (score, _, points), box in zip(merged, branch.calibration.apply(photo_boxes))
            ])
        return found

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in image (H, W, 3) uint8 RGB, best score first; boxes and keypoints in photo pixels.

        The branches' detections are pooled and a face found by several keeps the best-scoring one.
        """
        pooled = sorted((d for found in self.detect_per_branch(image) for d in found), key=lambda d: -d.score)
        kept: list[Detection] = []
        for detection in pooled:
            boxes = np.array([d.box for d in kept]).reshape(-1, 4)
            if len(kept) < self.max_faces and not (box_iou(np.array(detection.box), boxes) > self.iou_threshold).any():
                kept.append(detection)
        return kept
