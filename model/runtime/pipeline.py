"""Photo -> reconstructed faces: decode, detect (or take the given box), crop, run the network,
and optionally a second pass re-cropped around the first pass's landmarks; and the sequences
built on the face's codes: expression transfer (:meth:`FacePipeline.transfer_steps`) and one face
from several photos of a person (:meth:`FacePipeline.person_steps`).

This is the one place the sequences are written. Each ``*_steps`` method is a generator that
yields a :class:`NetworkRequest` (crops, and codes to decode them with) for each network run and
receives the network's outputs, so a caller decides how the network runs: :func:`run_steps` runs
it in the calling thread (the CLI, evaluation: :meth:`FacePipeline.reconstruct`,
:meth:`~FacePipeline.transfer`, :meth:`~FacePipeline.reconstruct_person`); the service sends the
requests of concurrent requests through one micro-batched network call (:mod:`service.engine`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from model.conventions import Box, FaceSelection, box_area, points_box
from model.runtime.codes import GivenCodes
from model.runtime.crop import CropTransform, square_box
from model.runtime.detector import Detection, FaceDetector
from model.runtime.identity_fusion import consensus, fuse_identity, view_weight
from model.runtime.image_io import REDUCTIONS, ImageHeader, load_rgb, photo_size, read_header
from model.runtime.reconstructor import FaceReconstructor, FaceResult

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
MIN_BOX_SIDE = 8.0  # pixels: a given face box is at least this wide and high ...
MAX_BOX_ASPECT = 4.0  # ... at most this many times as wide as high (or high as wide) ...
BOX_REACH = 1.0  # ... and lies within the photo widened by this many photo widths (heights) on each side
# A photo decoded reduced for a given box keeps the face's crop square at least this share of the
# network's input across (the crop then enlarges it a little; training blurs a fifth of its crops
# more than that): on the AFLW2000-3D dev slice with its 68-point boxes (all 123 decoded at half)
# NME per yaw bin 2.954 / 5.164 / 5.398 against 2.967 / 5.221 / 5.457 decoded whole; the held-out
# LFW people's photos enlarged 1.8 times (232 of 237 decoded at half), neutral AUC 0.812 against 0.813.
MIN_DECODED_RESOLUTION = 0.75
# A JPEG is decoded reduced (by 2, 4 or 8) while its longer side keeps at least this many pixels. The
# detector finds faces from about a tenth of the longer side (69 % of them at a tenth, 94 % at 0.15:
# benchmarks/bench_detector.py) and looks at a preview of 384-767 pixels anyway, so every face it
# can find keeps its crop at least 4/5 of the network's input across (1.3 x 1024 / 10 = 133 pixels)
# and a hundred pixels for its colours. A 4032x3024 phone photo is decoded at half: 49 against 93 ms
# for a GLB coloured from the photo, landmarks 0.1 % of the face box apart. The AFLW2000-3D dev
# photos enlarged 5 times (2250 pixels, decoded at half): 123 of 123 faces found either way, mean
# IoU with the 68-point box 0.817 against 0.816, mean NME 4.326 against 4.323 decoded whole.
MIN_DECODED_SIDE = 1024

T = TypeVar("T")
NetworkOutputs = dict[str, np.ndarray]


@dataclass
class NetworkRequest:
    """One network run a pipeline asks for: crops (N, S, S, 3) uint8 and the codes to decode them
    with (None: each crop's own; see :meth:`model.runtime.reconstructor.FaceReconstructor.run`)."""

    crops: np.ndarray
    given: GivenCodes | None = None

    @classmethod
    def concatenate(cls, requests: Sequence[NetworkRequest]) -> NetworkRequest:
        """One run for the crops of several requests, in order: the outputs' rows split back by
        each request's crop count; crops without given codes are decoded from their own."""
        return cls(np.concatenate([r.crops for r in requests]),
                   GivenCodes.stack([(len(r.crops), r.given) for r in requests]))


# Yields network requests, receives the network's outputs (N, ...) for each, returns the answer.
Steps = Generator[NetworkRequest, NetworkOutputs, T]
PipelineSteps = Steps["ImageReconstruction"]
PersonSteps = Steps["PersonReconstruction"]
ExpressionKind = Literal["image", "code"]
PoseSource = Literal["identity", "expression"]


class NoFaceFound(Exception):
    """The detector found no face in the image."""


class InvalidBox(ValueError):
    """A face box given by the caller does not fit the image (see :meth:`FacePipeline.check_box`)."""


@dataclass
class ExpressionSource:
    """Where a transferred face's expression and pose came from (:meth:`FacePipeline.transfer_steps`)."""

    kind: ExpressionKind  # "image": the expression image's face; "code": an expression code given
    pose_from: PoseSource  # "identity": the identity image's pose; "expression": the expression face's rotation
    box: Box | None = None  # the expression image's face box (kind "image")
    score: float | None = None  # its detection score (None when given or kind "code")


@dataclass
class ReconstructedFace:
    """One face of an image: where it was found and what the network made of it."""

    box: Box
    score: float | None  # detection score; None when the caller gave the box
    result: FaceResult
    expression_source: ExpressionSource | None = None  # set on a transfer's face


@dataclass
class ImageReconstruction:
    image: np.ndarray  # (H, W, 3) uint8 RGB, upright: the photo, or the photo decoded reduced (DecodedImage.reduction)
    faces: list[ReconstructedFace]
    faces_dropped: int = 0  # faces detected beyond max_faces (faces=all), not reconstructed

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the photo in its pixels (those of ``image`` unless decoded reduced)."""
        return photo_size(self.image)


PhotoRejection = Literal["no_face", "different_person"]


@dataclass
class PersonPhoto:
    """One photo of a person reconstruction (:meth:`FacePipeline.person_steps`).

    ``reconstruction``: accepted, its largest face decoded with the person's fused identity (its
    own expression, pose, albedo and lighting); rejected as another person, its face as it is on
    its own; no face, no faces. ``weight``: its share of the fused identity (the accepted photos'
    sum to 1; 0 when rejected); ``view_weight``: how well it saw the face
    (:func:`model.runtime.identity_fusion.view_weight`, 0 without a face); ``distance``: its
    identity code's distance to the other accepted photos' (NaN for a lone photo or no face);
    ``threshold``: the different-person distance it was judged by (the model's
    ``identity_threshold``; 0 when the model has none, and nothing is rejected as another person).
    """

    reconstruction: ImageReconstruction
    accepted: bool
    rejection: PhotoRejection | None
    weight: float
    view_weight: float
    distance: float
    threshold: float


@dataclass
class PersonReconstruction:
    """Several photos of one person, one neutral face: ``identity_code`` (Di,) fused from the
    accepted photos; ``photos`` in input order."""

    photos: list[PersonPhoto]
    identity_code: np.ndarray = field(repr=False)

    @property
    def used(self) -> int:
        """How many photos the fused identity was made of."""
        return sum(photo.accepted for photo in self.photos)

    @property
    def neutral_vertices(self) -> np.ndarray:
        """(V, 3) metres: the person's neutral face (every accepted photo's)."""
        return next(p.reconstruction.faces[0].result.neutral_vertices for p in self.photos if p.accepted)


@dataclass
class _ImageFaces:
    """The faces of one image on their way through the network: boxes, scores, crops (N, S, S, 3),
    the crops' maps and the outputs of their last run."""

    image: np.ndarray
    boxes: list[Box]
    scores: list[float | None]
    refine: bool
    crops: np.ndarray = field(init=False, repr=False)
    transforms: list[CropTransform] = field(init=False, repr=False)
    outputs: NetworkOutputs = field(init=False, repr=False)


def run_steps(steps: Steps[T], run: Callable[[NetworkRequest], NetworkOutputs]) -> T:
    """Drive a pipeline's steps to their answer, each network request through ``run``."""
    request = next(steps)
    try:
        while True:
            request = steps.send(run(request))
    except StopIteration as done:
        return done.value


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

    def decode(self, data: bytes, box: Box | None = None, *, photo_colours: bool = True) -> np.ndarray:
        """JPEG / PNG / WebP bytes -> (H, W, 3) uint8 RGB; raises model.runtime.image_io's errors.

        Decoded once: the answer (a :class:`model.runtime.image_io.DecodedImage`) carries, for a
        photo of at least 4 x 192 pixels, the detector's reduced copy made from the decoder's own
        image, so detection never copies or scales the full-resolution array.

        A large JPEG is decoded reduced (libjpeg's DCT scaling, a fraction of the decode's time)
        while its longer side keeps MIN_DECODED_SIDE pixels, enough for every face the detector
        can find; with the face ``box`` given, no further than its crop keeps most of the
        network's resolution (:meth:`decode_reduction`), and with no colours to read from the
        photo (``photo_colours`` False: the mesh, landmarks and pose only) that far whatever the
        photo's size. The answer's reduction and photo size say what was done; every result is in
        the photo's own pixels."""
        if box is None:
            reduction, min_side = REDUCTIONS[-1], MIN_DECODED_SIDE
        else:
            reduction, min_side = self.decode_reduction(box), MIN_DECODED_SIDE if photo_colours else 0
        if self.max_pixels is None:
            return load_rgb(data, formats=ACCEPTED_FORMATS, preview_side=self.detector.largest_input,
                            reduction=reduction, min_side=min_side)
        return load_rgb(data, formats=ACCEPTED_FORMATS, max_pixels=self.max_pixels,
                        preview_side=self.detector.largest_input, reduction=reduction, min_side=min_side)

    @staticmethod
    def size_reduction(header: ImageHeader) -> int:
        """The reduction :meth:`decode` decodes the photo of ``header`` with when no box is given
        (counted as for a photo stored turned, which may reduce less: the header does not say)."""
        return header.reduction_for(REDUCTIONS[-1], MIN_DECODED_SIDE)

    def decode_reduction(self, box: Box | None) -> int:
        """How far a photo with the face ``box`` may be decoded reduced for its crop: the greatest
        of libjpeg's reductions (1, 2, 4, 8) that leaves the crop's square at least
        MIN_DECODED_RESOLUTION of the network's input across; 1 without a box, or for one
        :meth:`check_box` will refuse once the photo is decoded."""
        if box is None:
            return 1
        x1, y1, x2, y2 = box
        if not all(math.isfinite(v) for v in box) or min(x2 - x1, y2 - y1) < MIN_BOX_SIDE:
            return 1
        side = square_box(box)[2] / (MIN_DECODED_RESOLUTION * self.reconstructor.input_size)
        return max(r for r in REDUCTIONS if r <= max(side, 1.0))

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
        width, height = photo_size(image)
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

    def _crop(self, faces: _ImageFaces) -> None:
        faces.crops, faces.transforms = self.reconstructor.crop(faces.image, faces.boxes)

    def _encode(self, images: Sequence[_ImageFaces]) -> Steps[None]:
        """Crop every image's faces and run them in one request; re-crop those with ``refine``
        around their landmarks and run those again (a second request). Leaves each image's last
        outputs in ``outputs``."""
        for faces in images:
            self._crop(faces)
        yield from self._run_plain(images)
        again = [faces for faces in images if faces.refine]
        if again:
            for faces in again:
                faces.boxes = self.refined_boxes(faces.transforms, faces.outputs)
                self._crop(faces)
            yield from self._run_plain(again)

    @staticmethod
    def _run_plain(images: Sequence[_ImageFaces]) -> Steps[None]:
        """One request for the crops of ``images``, decoded from their own codes; each image's
        rows of the outputs into its ``outputs``."""
        outputs = yield NetworkRequest(np.concatenate([faces.crops for faces in images]))
        start = 0
        for faces in images:
            stop = start + len(faces.crops)
            faces.outputs = {name: value[start:stop] for name, value in outputs.items()}
            start = stop

    def _largest_face(self, image: np.ndarray, box: Box | None, role: str) -> _ImageFaces:
        """The largest face of ``image`` (or ``box``, checked), refined when detected; NoFaceFound
        names the image's ``role``."""
        try:
            boxes, scores, _ = self.locate(image, FaceSelection.largest, box)
        except NoFaceFound:
            raise NoFaceFound(f"no face was detected in the {role}") from None
        return _ImageFaces(image, boxes, scores, refine=box is None and self.refine)

    def steps(self, image: np.ndarray, faces: FaceSelection = FaceSelection.largest, box: Box | None = None,
              on_detection: Callable[[float], None] | None = None) -> PipelineSteps:
        """The sequence for one decoded image (H, W, 3) uint8: yields network requests, receives outputs.

        Detected faces go through a second pass when ``refine``; a given ``box`` never does.
        ``on_detection`` receives the detector's time in seconds.
        """
        started = time.perf_counter()
        boxes, scores, dropped = self.locate(image, faces, box)
        if box is None and on_detection is not None:
            on_detection(time.perf_counter() - started)
        found = _ImageFaces(image, boxes, scores, refine=box is None and self.refine)
        yield from self._encode([found])
        results = self.reconstructor.results(found.boxes, found.transforms, found.outputs)
        return ImageReconstruction(image, [ReconstructedFace(b, s, r)
                                           for b, s, r in zip(found.boxes, scores, results)], dropped)

    def transfer_steps(self, identity_image: np.ndarray, expression_image: np.ndarray | None, *,
                       expression_code: np.ndarray | None = None, pose_from: PoseSource = "identity",
                       identity_box: Box | None = None, expression_box: Box | None = None) -> PipelineSteps:
        """Expression transfer: the identity image (H, W, 3) uint8 with one face, its largest (or
        ``identity_box``): its identity, albedo and lighting, with the expression of the expression
        image's largest face (or ``expression_box``) or the given ``expression_code`` (De,) (exactly
        one of the two); its pose unless ``pose_from="expression"``, which takes the expression
        face's head rotation (the identity face's position and size in its photo are kept, so the
        mesh stays on the identity image). The face's ``expression_source`` says which was used.

        Runs the faces' own codes first (both faces in one request), then the identity face's crop
        decoded with the given expression (and rotation). Raises ValueError for a bad combination
        or code, NoFaceFound naming the image without a face, InvalidBox.
        """
        if (expression_image is None) == (expression_code is None):
            raise ValueError("give the expression as an image or as a code: exactly one of the two")
        if pose_from not in ("identity", "expression"):
            raise ValueError(f"pose_from must be 'identity' or 'expression', not {pose_from!r}")
        if pose_from == "expression" and expression_image is None:
            raise ValueError("pose_from='expression' needs the expression image (a code carries no pose)")
        if expression_code is not None:
            expression_code = self.check_code("expression", expression_code)
        identity = self._largest_face(identity_image, identity_box, "identity image")
        faces = [identity]
        if expression_image is not None:
            expression = self._largest_face(expression_image, expression_box, "expression image")
            faces.append(expression)
        if expression_image is not None or identity.refine:
            yield from self._encode(faces)
        else:
            self._crop(identity)
        if expression_code is not None:
            source = ExpressionSource("code", pose_from)
            given = GivenCodes(expression=expression_code[None])
        else:
            source = ExpressionSource("image", pose_from, expression.boxes[0], expression.scores[0])
            pose = None
            if pose_from == "expression":  # the expression face's rotation (6D), the identity face's place and size
                pose = np.concatenate([expression.outputs["pose_code"][:1, :6], identity.outputs["pose_code"][:1, 6:]],
                                      axis=1)
            given = GivenCodes(expression=expression.outputs["expression_code"][:1], pose=pose)
        outputs = yield NetworkRequest(identity.crops, given)
        (result,) = self.reconstructor.results(identity.boxes, identity.transforms, outputs, given)
        face = ReconstructedFace(identity.boxes[0], identity.scores[0], result, expression_source=source)
        return ImageReconstruction(identity_image, [face])

    def check_code(self, name: str, code: np.ndarray) -> np.ndarray:
        """A code given by the caller as a (D,) float32 array of the model's size for ``name``
        (identity, expression, pose, albedo) with finite values; ValueError otherwise."""
        expected = self.reconstructor.input_defaults[f"given_{name}_code"].shape[1:]
        array = np.asarray(code, dtype=np.float32)
        if array.shape != expected:
            raise ValueError(f"an {name} code has {expected[0]} numbers, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"the {name} code must be finite numbers")
        return array

    def person_steps(self, images: Sequence[np.ndarray], *, boxes: Sequence[Box | None] | None = None
                     ) -> PersonSteps:
        """Several photos (H, W, 3) uint8 of one person -> one neutral face for all of them.

        Each photo's largest face (or its entry of ``boxes``) is encoded (all in one request);
        photos without a face are rejected (``no_face``); the identity codes of the others are
        weighed by how well each photo saw the face, and photos whose code disagrees with the
        rest beyond the model's ``identity_threshold`` are rejected (``different_person``; none
        when the model has no threshold): see :mod:`model.runtime.identity_fusion`.
        The accepted photos are then decoded again (one request) with the fused identity code and
        their own expression, pose, albedo and lighting. Raises NoFaceFound when no photo has a
        face, InvalidBox for a bad box.
        """
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} boxes for {len(images)} photos: give one (or None) per photo")
        found: list[_ImageFaces | None] = []
        for index, image in enumerate(images):
            box = None if boxes is None else boxes[index]
            try:
                found.append(self._largest_face(image, box, f"photo {index + 1}"))
            except NoFaceFound:
                found.append(None)
        seen = [faces for faces in found if faces is not None]
        if not seen:
            raise NoFaceFound("no face was detected in any of the photos")
        yield from self._encode(seen)
        codes = np.concatenate([faces.outputs["identity_code"] for faces in seen])
        views = np.array([view_weight(faces.scores[0], float(faces.outputs["euler_degrees"][0, 0]), faces.boxes[0],
                                      self.reconstructor.input_size) for faces in seen])
        threshold = self.reconstructor.metadata.identity_threshold  # 0.0: not calibrated, nothing rejected
        accepted, distances = consensus(codes, views, threshold)
        fused = fuse_identity(codes[accepted], views[accepted])
        kept = [faces for faces, keep in zip(seen, accepted) if keep]
        given = GivenCodes(identity=fused[None])
        outputs = yield NetworkRequest(np.concatenate([faces.crops for faces in kept]), given)
        shares = views * accepted / views[accepted].sum()
        judged = iter(zip(accepted, shares, views, distances))  # the photos with a face, in order
        photos, row = [], 0
        for image, faces in zip(images, found):
            if faces is None:
                photos.append(PersonPhoto(ImageReconstruction(image, []), False, "no_face", 0.0, 0.0, math.nan,
                                          threshold))
                continue
            keep, share, view, distance = next(judged)
            if keep:  # its row of the fused run
                out, run_given = {name: value[row : row + 1] for name, value in outputs.items()}, given
                row += 1
            else:  # its own reconstruction
                out, run_given = faces.outputs, None
            (result,) = self.reconstructor.results(faces.boxes, faces.transforms, out, run_given)
            face = ReconstructedFace(faces.boxes[0], faces.scores[0], result)
            photos.append(PersonPhoto(ImageReconstruction(image, [face]), bool(keep),
                                      None if keep else "different_person", float(share), float(view), float(distance),
                                      threshold))
        return PersonReconstruction(photos, fused)

    def reconstruct(self, image: np.ndarray, faces: FaceSelection = FaceSelection.largest,
                    box: Box | None = None) -> ImageReconstruction:
        """Every step in this thread, the faces of one image in one network batch per pass."""
        return run_steps(self.steps(image, faces, box), self._run)

    def transfer(self, identity_image: np.ndarray, expression_image: np.ndarray | None, *,
                 expression_code: np.ndarray | None = None, pose_from: PoseSource = "identity",
                 identity_box: Box | None = None, expression_box: Box | None = None) -> ImageReconstruction:
        """:meth:`transfer_steps`, every step in this thread."""
        return run_steps(self.transfer_steps(identity_image, expression_image, expression_code=expression_code,
                                             pose_from=pose_from, identity_box=identity_box,
                                             expression_box=expression_box), self._run)

    def reconstruct_person(self, images: Sequence[np.ndarray], *, boxes: Sequence[Box | None] | None = None
                           ) -> PersonReconstruction:
        """:meth:`person_steps`, every step in this thread."""
        return run_steps(self.person_steps(images, boxes=boxes), self._run)

    def _run(self, request: NetworkRequest) -> NetworkOutputs:
        return self.reconstructor.run(request.crops, request.given)
