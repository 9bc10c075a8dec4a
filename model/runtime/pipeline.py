"""Photo -> reconstructed faces: decode, detect (or take the given box), crop, run the network,
and optionally a second pass re-cropped around the first pass's landmarks.

This is the one place the sequence is written. :meth:`FacePipeline.steps` is a generator that
yields each batch of crops for the network and receives the network's outputs, so a caller
decides how the network runs: :meth:`FacePipeline.reconstruct` runs it in the calling thread
(the CLI, evaluation); the service sends the crops of concurrent requests through one
micro-batched network call (:mod:`service.engine`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np

from model.conventions import Box, FaceSelection, box_area, points_box
from model.runtime.crop import CropTransform
from model.runtime.detector import Detection, FaceDetector
from model.runtime.image_io import ImageHeader, load_rgb, read_header
from model.runtime.reconstructor import FaceReconstructor, FaceResult

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
MIN_BOX_SIDE = 8.0  # pixels: a given face box is at least this wide and high ...
MAX_BOX_ASPECT = 4.0  # ... at most this many times as wide as high (or high as wide) ...
BOX_REACH = 1.0  # ... and lies within the photo widened by this many photo widths (heights) on each side

NetworkOutputs = dict[str, np.ndarray]
# Yields crops (N, S, S, 3) uint8, receives the network's outputs for them, returns the answer.
PipelineSteps = Generator[np.ndarray, NetworkOutputs, "ImageReconstruction"]


class NoFaceFound(Exception):
    """The detector found no face in the image."""


class InvalidBox(ValueError):
    """A face box given by the caller does not fit the image (see :meth:`FacePipeline.check_box`)."""


@dataclass
class ReconstructedFace:
    """One face of an image: where it was found and what the network made of it."""

    box: Box
    score: float | None  # detection score; None when the caller gave the box
    result: FaceResult


@dataclass
class ImageReconstruction:
    image: np.ndarray  # (H, W, 3) uint8 RGB, upright
    faces: list[ReconstructedFace]
    faces_dropped: int = 0  # faces detected beyond max_faces (faces=all), not reconstructed

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.shape[1], self.image.shape[0]


class FacePipeline:
    """The detector and the reconstruction network, and how a photo goes through them."""

    def __init__(self, reconstructor: FaceReconstructor, detector: FaceDetector, *, max_faces: int = 16,
                 max_pixels: int | None = None, refine: bool = False) -> None:
        """``refine``: reconstruct detected faces twice, the second time cropped around the first
        pass's 68 landmarks (the detector's box only approximates the box the network was trained
        on; measured on the AFLW2000-3D dev slice: bin mean 6.63 -> 6.42, frontal 3.98 -> 3.75,
        for about 5 ms more per photo on a 2-core CPU)."""
        self.reconstructor, self.detector = reconstructor, detector
        self.max_faces, self.max_pixels, self.refine = max_faces, max_pixels, refine

    def decode(self, data: bytes) -> np.ndarray:
        """JPEG / PNG / WebP bytes -> (H, W, 3) uint8 RGB; raises model.runtime.image_io's errors.

        Decoded once: the answer (a :class:`model.runtime.image_io.DecodedImage`) carries, for a
        photo of at least 4 x 192 pixels, the detector's reduced copy made from the decoder's own
        image, so detection never copies or scales the full-resolution array; crops are cut from
        the full resolution."""
        if self.max_pixels is None:
            return load_rgb(data, formats=ACCEPTED_FORMATS, preview_side=self.detector.largest_input)
        return load_rgb(data, formats=ACCEPTED_FORMATS, max_pixels=self.max_pixels,
                        preview_side=self.detector.largest_input)

    def header(self, data: bytes) -> ImageHeader:
        """Format, size and mode from the bytes' header, nothing decoded; raises decode's errors
        that the header shows (not an accepted format, over the pixel limit)."""
        if self.max_pixels is None:
            return read_header(data, formats=ACCEPTED_FORMATS)
        return read_header(data, formats=ACCEPTED_FORMATS, max_pixels=self.max_pixels)

    def find_faces(self, image: np.ndarray, faces: FaceSelection = FaceSelection.largest) -> list[Detection]:
        """The largest detected face, or every one (best score first, at most max_faces).

        For the largest face the detector runs its short-range network alone unless that is not
        sure of it (:meth:`model.runtime.detector.FaceDetector.detect`); for every face, all of
        its networks."""
        return self.detect_faces(image, faces)[0]

    def detect_faces(self, image: np.ndarray, faces: FaceSelection = FaceSelection.largest
                     ) -> tuple[list[Detection], int]:
        """:meth:`find_faces`, and how many detected faces max_faces left out."""
        detections = self.detector.detect(image, faces)
        if not detections:
            raise NoFaceFound("no face was detected in the image")
        if FaceSelection(faces) is FaceSelection.largest:
            return [max(detections, key=lambda d: box_area(d.box))], 0
        return detections[: self.max_faces], max(0, len(detections) - self.max_faces)

    @staticmethod
    def check_box(image: np.ndarray, box: Box) -> None:
        """A face box given by the caller, in pixels of the upright image: four finite numbers,
        at least MIN_BOX_SIDE wide and high, at most MAX_BOX_ASPECT times as wide as high or as
        high as wide, overlapping the image and within it widened by BOX_REACH times its width
        (height) on each side. (The crop is a square 1.3 times the box's longer side, so this
        bounds its side to 1.3 * 3 * the image's longer side and its work to the photo's.)"""
        height, width = image.shape[:2]
        x1, y1, x2, y2 = box
        shown = ",".join(f"{v:g}" for v in box)
        if not all(math.isfinite(v) for v in box) or not (x2 > x1 and y2 > y1):
            raise InvalidBox(f"box {shown}: need four finite numbers with x1 < x2 and y1 < y2")
        box_width, box_height = x2 - x1, y2 - y1
        if min(box_width, box_height) < MIN_BOX_SIDE:
            raise InvalidBox(f"box {shown} is {box_width:g} x {box_height:g} pixels: "
                             f"it must be at least {MIN_BOX_SIDE:g} pixels wide and high")
        if max(box_width, box_height) > MAX_BOX_ASPECT * min(box_width, box_height):
            raise InvalidBox(f"box {shown} is {box_width:g} x {box_height:g} pixels: a face box is at most "
                             f"{MAX_BOX_ASPECT:g} times as wide as high or as high as wide")
        if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            raise InvalidBox(f"box {shown} lies outside the {width}x{height} image")
        reach_x, reach_y = BOX_REACH * width, BOX_REACH * height
        if x1 < -reach_x or y1 < -reach_y or x2 > width + reach_x or y2 > height + reach_y:
            raise InvalidBox(f"box {shown} reaches too far beyond the {width}x{height} image: x must lie in "
                             f"[{-reach_x:g}, {width + reach_x:g}] and y in [{-reach_y:g}, {height + reach_y:g}]")

    def locate(self, image: np.ndarray, faces: FaceSelection, box: Box | None
               ) -> tuple[list[Box], list[float | None], int]:
        """Face boxes and detection scores: ``box`` as given (checked), else the detector's; and
        how many detected faces max_faces left out."""
        if box is not None:
            self.check_box(image, box)
            return [box], [None], 0
        detections, dropped = self.detect_faces(image, faces)
        return [d.box for d in detections], [d.score for d in detections], dropped

    def refined_boxes(self, transforms: Sequence[CropTransform], outputs: NetworkOutputs) -> list[Box]:
        """Second-pass boxes: the box of each first-pass face's 68 landmark vertices (hidden ones
        included, without the landmarks' calibrated offsets), photo pixels: the box the network's
        training crops were centred on."""
        landmark_vertices = self.reconstructor.topology.landmarks68
        return [points_box(transform.to_image(vertices[landmark_vertices]))
                for transform, vertices in zip(transforms, outputs["vertices_2d"])]

    def steps(self, image: np.ndarray, faces: FaceSelection = FaceSelection.largest, box: Box | None = None,
              on_detection: Callable[[float], None] | None = None) -> PipelineSteps:
        """The sequence for one decoded image (H, W, 3) uint8: yields crops, receives outputs.

        Detected faces go through a second pass when ``refine``; a given ``box`` never does.
        ``on_detection`` receives the detector's time in seconds.
        """
        started = time.perf_counter()
        boxes, scores, dropped = self.locate(image, faces, box)
        if box is None and on_detection is not None:
            on_detection(time.perf_counter() - started)
        crops, transforms = self.reconstructor.crop(image, boxes)
        outputs = yield crops
        if box is None and self.refine:
            boxes = self.refined_boxes(transforms, outputs)
            crops, transforms = self.reconstructor.crop(image, boxes)
            outputs = yield crops
        results = self.reconstructor.results(boxes, transforms, outputs)
        return ImageReconstruction(image, [ReconstructedFace(b, s, r) for b, s, r in zip(boxes, scores, results)],
                                   dropped)

    def reconstruct(self, image: np.ndarray, faces: FaceSelection = FaceSelection.largest,
                    box: Box | None = None) -> ImageReconstruction:
        """Every step in this thread, the faces of one image in one network batch per pass."""
        steps = self.steps(image, faces, box)
        crops = next(steps)
        try:
            while True:
                crops = steps.send(self.reconstructor.run(crops))
        except StopIteration as done:
            return done.value
