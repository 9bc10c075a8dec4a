"""Convert MediaPipe's BlazeFace (TFLite, in the mediapipe wheel) into the service's ONNX face detector.

``facerecon build-detector [--source short|full|both] [--out model/weights/face_detector.onnx]
[--calibrate DIR ...]`` rebuilds each network in PyTorch from its .tflite graph
(:mod:`training.tools.blazeface`), checks it against MediaPipe's own FaceDetection solution on the
same input, bakes the anchor decoding into the graph and exports all chosen networks as one
ONNX graph (opset 17; the explicit zero paddings folded into the convolutions that read them,
:func:`training.export.onnx_graph.fold_pads_into_convs`; weights stored as float16, which is
exactly what the .tflite files hold, and widened by a Cast that ONNX Runtime folds at load;
activations held with their channels zero-extended to multiples of :data:`CHANNEL_BLOCK`, which
leaves the outputs as they were and lets ONNX Runtime keep its blocked layout,
:meth:`training.tools.blazeface.TFLiteNet.pad_channels`).
The ``facedetector.*`` metadata records input sizes, anchors and decoding conventions, the source
models and their licence, and the box calibration of each network
(:mod:`training.tools.detector_calibration`). Without ``--calibrate`` the calibration is the one
fitted when the shipped detector was built.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import torch
from torch import nn

from model.runtime.detector import (
    BoxCalibration,
    DetectorBranch,
    DetectorMetadata,
    FaceDetector,
    input_name,
    letterbox,
    output_names,
    weighted_nms,
)
from training.export.onnx_graph import (
    fold_pads_into_convs,
    set_onnx_metadata,
    store_weights_as_float16,
    write_onnx_metadata,
)
from training.tools.blazeface import BlazeFace, Source
from training.tools.detector_calibration import FITTED_CALIBRATIONS, CalibrationFit, fit_calibration

log = logging.getLogger(__name__)

Choice = Literal["short", "full", "both"]
BRANCHES: dict[str, tuple[Source, ...]] = {"short": ("short",), "full": ("full",), "both": ("short", "full")}
OPSET = 17
SOURCE_LICENCE = "Apache-2.0 (MediaPipe face detection models, Google LLC)"
DECODING = ("baked into the graph: box centre = raw[0:2] + anchor centre, box size = raw[2:4] (MediaPipe's "
            "x/y/w/h scale = input size, so raw values are input pixels); keypoint k = raw[4+2k:6+2k] + anchor "
            "centre; score = sigmoid(clip(logit, -100, 100))")
CHANNEL_BLOCK = 16  # ONNX Runtime's NCHWc block with AVX-512 (8 with AVX2 divides it): BlazeFace.net.pad_channels
VERIFY_PIXELS = 0.05  # largest box / keypoint difference to MediaPipe allowed, in input pixels
VERIFY_SCORE = 1e-3


@dataclass(frozen=True)
class Verification:
    """How far a rebuilt network lands from MediaPipe's FaceDetection on the same inputs."""

    source: str
    images: int
    faces: int
    max_pixel_difference: float
    max_score_difference: float


class DetectorGraph(nn.Module):
    """The exported graph: one letterboxed input per network -> (scores, boxes, keypoints) per network.

    forward: images (B, S_i, S_i, 3) uint8, one per network in order -> their outputs, flattened.
    """

    def __init__(self, networks: list[BlazeFace]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)

    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for network, image in zip(self.networks, images) for t in network(image))


def branch_metadata(model: BlazeFace, source: Source, calibration: BoxCalibration) -> DetectorBranch:
    spec = model.spec
    return DetectorBranch(
        name=source,
        input_size=spec.input_size,
        num_anchors=spec.num_anchors,
        source_model=(f"{spec.tflite_file} from mediapipe==0.10.14 (mediapipe/modules/face_detection); "
                      f"channels zero-extended to multiples of {CHANNEL_BLOCK}"),
        anchors=(f"SSD anchors of fixed size 1x1, strides {list(spec.strides)}, offset {spec.anchor_offset}, "
                 f"interpolated_scale_aspect_ratio {spec.interpolated_scale_aspect_ratio}; "
                 "order: feature map, row, column, anchor"),
        calibration=calibration,
    )


def export_detector(models: dict[Source, BlazeFace], out: str | Path,
                    calibrations: dict[Source, BoxCalibration]) -> DetectorMetadata:
    """Write ``out`` (.onnx with the metadata) and return the metadata."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(models)
    dummies = tuple(torch.zeros(1, m.spec.input_size, m.spec.input_size, 3, dtype=torch.uint8) for m in models.values())
    inputs = [input_name(n) for n in names]
    outputs = [o for n in names for o in output_names(n)]
    torch.onnx.export(
        DetectorGraph(list(models.values())).eval(),
        dummies,
        str(out),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
        opset_version=OPSET,
        dynamo=False,
    )
    metadata = DetectorMetadata(
        branches=tuple(branch_metadata(m, n, calibrations[n]) for n, m in models.items()),
        source_licence=SOURCE_LICENCE,
        decoding=DECODING,
    )
    graph = onnx.load(str(out))
    log.info("folded %d zero paddings into their convolutions", fold_pads_into_convs(graph))
    store_weights_as_float16(graph, min_elements=16, exact_only=True)
    set_onnx_metadata(graph, metadata.to_properties())
    onnx.save(graph, str(out))
    return metadata


def verification_images() -> list[np.ndarray]:
    """Photos for the MediaPipe check: matplotlib's Grace Hopper portrait (matplotlib comes with
    mediapipe), as is, mirrored, and shrunk twice into a grey canvas."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photo = np.asarray(Image.open(path).convert("RGB"))
    images = [photo, photo[:, ::-1].copy()]
    for fraction in (0.5, 0.3):
        canvas = np.full((photo.shape[0], photo.shape[1] * 2, 3), 128, np.uint8)
        small = np.asarray(Image.fromarray(photo).resize((round(photo.shape[1] * fraction),
                                                          round(photo.shape[0] * fraction))))
        canvas[40 : 40 + small.shape[0], 60 : 60 + small.shape[1]] = small
        images.append(canvas)
    return images


def verify_against_mediapipe(model: BlazeFace, source: Source, images: list[np.ndarray]) -> Verification:
    """Run MediaPipe's FaceDetection and the rebuilt model on the same S x S letterboxed inputs
    (so MediaPipe's own resampling is the identity) and compare the detections after weighted NMS.

    MediaPipe 0.10.14 keeps its graphs' own score thresholds (``min_detection_confidence`` does not
    reach them), so the rebuilt model is thresholded at the spec's ``min_score`` too.
    """
    from mediapipe.python.solutions.face_detection import FaceDetection

    size, score_threshold = model.spec.input_size, model.spec.min_score
    pixel_diff, score_diff, faces = 0.0, 0.0, 0
    with FaceDetection(min_detection_confidence=score_threshold, model_selection=int(source == "full")) as mp:
        for image in images:
            square, _ = letterbox(image, size)
            result = mp.process(square)
            expected = []
            for det in result.detections or []:
                box = det.location_data.relative_bounding_box
                relative = [(p.x, p.y) for p in det.location_data.relative_keypoints]
                expected.append((det.score[0], np.array([box.xmin, box.ymin, box.xmin + box.width,
                                                         box.ymin + box.height]) * size, np.array(relative) * size))
            with torch.no_grad():
                outputs = model(torch.from_numpy(square[None]))
            scores, boxes, keypoints = (t[0].numpy().astype(np.float64) for t in outputs)
            keep = scores >= score_threshold
            ours = weighted_nms(scores[keep], boxes[keep], keypoints[keep], 0.3, 100)
            if len(ours) != len(expected):
                raise RuntimeError(f"MediaPipe found {len(expected)} faces, the rebuilt {source} model {len(ours)}")
            for (score, box, points), (mp_score, mp_box, mp_points) in zip(ours, sorted(expected, key=lambda d: -d[0])):
                pixel_diff = max(pixel_diff, float(np.abs(box - mp_box).max()), float(np.abs(points - mp_points).max()))
                score_diff = max(score_diff, abs(score - mp_score))
                faces += 1
    return Verification(source, len(images), faces, pixel_diff, score_diff)


def build_detector(choice: Choice, out: str | Path, calibration_dirs: list[Path] | None = None,
                   calibration_photos: int = 1500, seed: int = 0
                   ) -> tuple[DetectorMetadata, list[Verification], dict[str, CalibrationFit]]:
    """Convert, verify and export the chosen networks; fit their box calibration on
    ``calibration_dirs`` (training photos) when given, else use :data:`FITTED_CALIBRATIONS`."""
    models: dict[Source, BlazeFace] = {}
    verifications = []
    images = verification_images()
    for source in BRANCHES[choice]:
        models[source] = BlazeFace.from_mediapipe(source).eval()
        models[source].net.pad_channels(CHANNEL_BLOCK)
        check = verify_against_mediapipe(models[source], source, images)
        log.info("MediaPipe check: %s", check)
        if check.faces == 0 or check.max_pixel_difference > VERIFY_PIXELS or check.max_score_difference > VERIFY_SCORE:
            raise RuntimeError(f"the rebuilt {source}-range detector does not match MediaPipe: {check}")
        verifications.append(check)
    if not calibration_dirs:
        return export_detector(models, out, FITTED_CALIBRATIONS), verifications, {}
    metadata = export_detector(models, out, {source: BoxCalibration() for source in models})
    fits = fit_calibration(FaceDetector(out), calibration_dirs, calibration_photos, seed)
    metadata = replace(metadata, branches=tuple(replace(b, calibration=fits[b.name].calibration)
                                                for b in metadata.branches))
    write_onnx_metadata(Path(out), metadata.to_properties())
    return metadata, verifications, fits


def metadata_json(metadata: DetectorMetadata) -> str:
    return json.dumps(metadata.to_properties(), indent=2)
