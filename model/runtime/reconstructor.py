"""Face reconstruction with the exported ONNX model (ONNX Runtime only, no torch): crops in,
:class:`FaceResult` in photo coordinates out."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

from model.conventions import Box, MeshSpace, ndc_depth_to_pixels
from model.onnx_contract import (
    GIVEN_CODE_INPUTS,
    GIVEN_WEIGHTS,
    INPUT_NAME,
    OUTPUT_NAMES,
    REEXPORT_COMMANDS,
    ModelMetadata,
)
from model.runtime.codes import FaceCodes, GivenCodes
from model.runtime.crop import DEFAULT_MARGIN, CropTransform, crop_face
from model.runtime.image_io import photo_reduction
from model.runtime.mirror_average import average_with_mirror
from model.runtime.sessions import Provider, session_options
from model.topology import FaceTopology

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "weights" / "facerecon.onnx"
# ONNX Runtime warns at every load that the given-code inputs are initializers it will not fold:
# they are meant to be overridable (model.onnx_contract); the reconstruction session logs errors only.
SESSION_LOG_SEVERITY = 3


@dataclass
class FaceResult:
    """One reconstructed face. Photo pixels: x right, y down; V mesh vertices.

    Attributes:
        box: (x1, y1, x2, y2) face box in the photo that the crop was made from.
        crop: the crop's map back to photo pixels.
        neutral_vertices: (V, 3) metres, identity only (expression removed), frontal.
        expressive_vertices: (V, 3) metres, identity + expression, frontal (pose removed).
        image_points: (V, 3) photo pixels x, y and depth (larger nearer, pixel units).
        landmarks_2d: (68, 2) photo pixels.
        landmarks_3d: (68, 3) photo pixels x, y and depth.
        rotation: (3, 3); euler_degrees: (3,) yaw, pitch, roll; translation (3,) crop NDC;
        scale: NDC per metre; albedo: (V, 3) in [0, 1]; lighting: (9, 3) SH coefficients.
        codes: the codes the face was decoded with (the crop's own, or the blend with given codes).
    """

    box: Box
    crop: CropTransform
    neutral_vertices: np.ndarray
    expressive_vertices: np.ndarray
    image_points: np.ndarray
    landmarks_2d: np.ndarray
    landmarks_3d: np.ndarray
    rotation: np.ndarray
    euler_degrees: np.ndarray
    translation: np.ndarray
    scale: float
    albedo: np.ndarray
    lighting: np.ndarray
    codes: FaceCodes

    @property
    def metres_per_pixel(self) -> float:
        """Size of one photo pixel on the face, in metres."""
        return 2.0 / (self.scale * self.crop.side)

    def vertices(self, space: MeshSpace, image_size: tuple[int, int]) -> np.ndarray:
        """Mesh vertices (V, 3) in metres, glTF axes (+Y up, +Z toward the viewer).

        ``image``: posed as in the photo, origin at the photo's centre, so that an
        orthographic view down -Z lines up with the photo (``image_size`` is (W, H));
        ``canonical``: frontal, pose removed; ``neutral``: frontal, expression removed too.
        """
        space = MeshSpace(space)
        if space is MeshSpace.canonical:
            return self.expressive_vertices
        if space is MeshSpace.neutral:
            return self.neutral_vertices
        width, height = image_size
        scale = np.float32(self.metres_per_pixel) * np.array([1.0, -1.0, 1.0], dtype=np.float32)
        return (self.image_points - np.array([width / 2.0, height / 2.0, 0.0], dtype=np.float32)) * scale


class FaceReconstructor:
    """Loads the exported model once and reconstructs faces from photos.

    ``mirror_average``: every crop also goes through the network mirrored, and the two answers
    are averaged (see :mod:`model.runtime.mirror_average`): more accurate, twice the network's work.
    Crops decoded with given codes are not: codes have no known mirror image (their spaces are
    learned), so a mirrored crop could only be decoded with the unmirrored codes, which would
    mirror the given expression, say, onto the other side.

    ``threads``, ``spinning``: the CPU session's intra-op pool (:func:`model.runtime.sessions.session_options`).
    """

    def __init__(self, model_path: str | Path = DEFAULT_MODEL, *, topology: FaceTopology | None = None,
                 providers: Sequence[Provider] | None = None, threads: int | None = None,
                 spinning: bool = True, mirror_average: bool = False) -> None:
        self.mirror_average = mirror_average
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(
                f"no model at {model_path}: export one with `facerecon export --checkpoint CKPT --out {model_path}` "
                "(or `make model` for an untrained placeholder)"
            )
        options = session_options(threads, spinning=spinning)
        options.log_severity_level = SESSION_LOG_SEVERITY
        try:
            self.session = ort.InferenceSession(
                str(model_path), options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except (InvalidProtobuf, InvalidGraph, Fail) as err:
            raise ValueError(f"{model_path} is not a loadable ONNX model: {err}") from None
        self.metadata = ModelMetadata.from_properties(self.session.get_modelmeta().custom_metadata_map)
        self.topology = topology or FaceTopology.load()
        if self.metadata.topology_version != self.topology.version:
            raise ValueError(
                f"{model_path} was exported for topology {self.metadata.topology_version}, "
                f"but the installed topology is {self.topology.version}"
            )
        with model_path.open("rb") as model_file:
            digest = hashlib.file_digest(model_file, "sha256").hexdigest()[:12]
        # Names the exact weights: training steps, then the file's hash (calibration included).
        self.model_version = f"{self.metadata.training_steps}-steps-{digest}"
        names = tuple(o.name for o in self.session.get_outputs())
        optional = {i.name: i.shape for i in self.session.get_overridable_initializers()}
        if names != OUTPUT_NAMES or set(optional) != {*GIVEN_CODE_INPUTS, GIVEN_WEIGHTS}:
            raise ValueError(
                f"{model_path} (model format {self.metadata.format_version}) has the outputs {list(names)} and the "
                f"optional inputs {sorted(optional)}, not the facerecon contract's (format 2: the code outputs "
                f"{list(OUTPUT_NAMES[-4:])} and the given-code inputs): re-export it with this version of "
                f"facerecon: `{REEXPORT_COMMANDS[0]}`, or without its checkpoint `{REEXPORT_COMMANDS[1]}`")
        # (1, ...) zeros of each optional input: what a run that gives some codes feeds for the others
        self.input_defaults = {name: np.zeros([1, *shape[1:]], np.float32) for name, shape in optional.items()}

    @property
    def input_size(self) -> int:
        return self.metadata.input_size

    def run(self, crops: np.ndarray, given: GivenCodes | None = None) -> dict[str, np.ndarray]:
        """Raw network outputs (B, ...) for crops (B, S, S, 3) uint8 RGB, by output name, decoded
        from the crops' own codes or, where ``given`` has codes (N = 1 or B rows), from the blend."""
        batch = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        if not self.mirror_average:
            return self._run(batch, given)
        count = len(batch)
        if given is None:
            plain = np.arange(count)
            mirrored = batch[..., ::-1]
        else:  # only crops decoded from their own codes are mirrored (see the class)
            weights = np.broadcast_to(given.weight_matrix(), (count, len(GIVEN_CODE_INPUTS)))
            plain = np.flatnonzero(~weights.any(axis=1))
            mirrored = batch[plain][..., ::-1]
        both_given = None if given is None else GivenCodes.stack([(count, given), (len(plain), None)])
        out = self._run(np.concatenate([batch, mirrored]), both_given)
        first = {name: value[:count] for name, value in out.items()}
        if len(plain):
            averaged = average_with_mirror({name: value[plain] for name, value in first.items()},
                                           {name: value[count:] for name, value in out.items()},
                                           self.topology, self.input_size)
            for name, value in averaged.items():
                first[name][plain] = value
        return first

    def _run(self, batch: np.ndarray, given: GivenCodes | None) -> dict[str, np.ndarray]:
        """One session run on (B, 3, S, S) float32 input."""
        feeds = {INPUT_NAME: batch}
        if given is not None:
            feeds.update(given.feeds(self.input_defaults, len(batch)))
        return dict(zip(OUTPUT_NAMES, self.session.run(None, feeds)))

    def crop(self, image: np.ndarray, boxes: Sequence[Box], margin: float = DEFAULT_MARGIN
             ) -> tuple[np.ndarray, list[CropTransform]]:
        """Network input for each face box of image (H, W, 3) uint8: crops (N, S, S, 3) and their maps."""
        reduction = photo_reduction(image)  # a photo decoded reduced: box and maps stay in photo pixels
        pairs = [crop_face(image, box, self.input_size, margin, reduction=reduction) for box in boxes]
        return np.stack([crop for crop, _ in pairs]), [transform for _, transform in pairs]

    def results(self, boxes: Sequence[Box], crops: Sequence[CropTransform], out: dict[str, np.ndarray],
                given: GivenCodes | None = None) -> list[FaceResult]:
        """Network outputs (N, ...) for N crops (run with ``given``) -> one FaceResult each, in photo
        coordinates."""
        results = []
        for i, (box, crop) in enumerate(zip(boxes, crops)):
            depth = ndc_depth_to_pixels(out["posed_vertices"][i][:, 2:], self.input_size)
            crop_points = np.concatenate([out["vertices_2d"][i], depth], axis=1)
            results.append(
                FaceResult(
                    box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                    crop=crop,
                    neutral_vertices=out["neutral_vertices"][i],
                    expressive_vertices=out["expressive_vertices"][i],
                    image_points=crop.to_image(crop_points),
                    landmarks_2d=crop.to_image(out["landmarks_2d"][i]),
                    landmarks_3d=crop.to_image(out["landmarks_3d"][i]),
                    rotation=out["rotation"][i],
                    euler_degrees=out["euler_degrees"][i],
                    translation=out["translation"][i],
                    scale=float(out["scale"][i]),
                    albedo=out["albedo"][i],
                    lighting=out["lighting"][i],
                    codes=FaceCodes.from_outputs(out, i, given),
                )
            )
        return results

    def reconstruct(self, image: np.ndarray, boxes: Sequence[Box], margin: float = DEFAULT_MARGIN) -> list[FaceResult]:
        """Reconstruct each face box of image (H, W, 3) uint8 RGB in one batch."""
        if not boxes:
            return []
        crops, transforms = self.crop(image, boxes, margin)
        return self.results(boxes, transforms, self.run(crops))
