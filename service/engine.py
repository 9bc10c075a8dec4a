"""The reconstruction pipeline behind the API: decode, detect, crop, micro-batched network run.

CPU work (decoding, detection, cropping, mesh encoding) runs on a small thread pool sized to
the machine, off the event loop; the reconstruction network runs on its own thread, fed by the
:class:`~service.batching.MicroBatcher`.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Literal, TypeVar

import numpy as np

from model.face_detector import Detection, FaceDetector
from model.image_io import load_rgb
from model.inference import Box, FaceReconstructor, FaceResult, default_threads, execution_providers
from model.texture_bake import UVRasterMap
from service.batching import MicroBatcher
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
FaceSelection = Literal["largest", "all"]
T = TypeVar("T")


class NoFaceFound(Exception):
    """The detector found no face in the image."""


class InvalidBox(ValueError):
    """A face box given by the caller does not fit the image."""


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

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.shape[1], self.image.shape[0]


def _box_area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


class ReconstructionEngine:
    """Loads both ONNX models once; reconstructs the faces of uploaded images."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        providers = execution_providers(settings.device)
        self.reconstructor = FaceReconstructor(settings.model_path, providers=providers, threads=settings.threads)
        self.detector = FaceDetector(settings.detector_path, providers=providers, threads=settings.threads,
                                     max_faces=settings.max_faces)
        self.topology = self.reconstructor.topology
        self.uv_map = UVRasterMap.build(self.topology.uvs, self.topology.faces, settings.texture_size)
        self.cpu_pool = ThreadPoolExecutor(settings.workers or default_threads(), thread_name_prefix="facerecon-cpu")
        self.network_pool = ThreadPoolExecutor(1, thread_name_prefix="facerecon-network")
        self.batcher = MicroBatcher(self.reconstructor.run, self.network_pool, max_batch=settings.max_batch,
                                    max_wait_s=settings.max_wait_ms / 1000.0, on_batch=self.metrics.observe_batch)
        self.ready = False

    @property
    def providers(self) -> list[str]:
        """Execution providers the reconstruction session really uses, best first."""
        return self.reconstructor.session.get_providers()

    async def start(self) -> None:
        """Start batching and warm both sessions up (first runs allocate and pick kernels)."""
        self.batcher.start()
        size = self.reconstructor.input_size
        await self.run_cpu(self.detector.detect, np.zeros((480, 640, 3), np.uint8))
        for batch in sorted({1, self.settings.max_batch}):
            await self.batcher.submit(np.zeros((batch, size, size, 3), np.uint8))
        self.ready = True

    async def stop(self) -> None:
        """Finish queued work, then release the threads."""
        self.ready = False
        await self.batcher.stop()
        self.cpu_pool.shutdown(wait=True)
        self.network_pool.shutdown(wait=True)

    async def run_cpu(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.cpu_pool, function, *args)

    def decode(self, data: bytes) -> np.ndarray:
        """Upload bytes -> (H, W, 3) uint8 RGB; raises image_io's errors."""
        return load_rgb(data, max_pixels=self.settings.max_pixels, formats=ACCEPTED_FORMATS)

    def _detect(self, image: np.ndarray, faces: FaceSelection) -> list[Detection]:
        started = time.perf_counter()
        detections = self.detector.detect(image)
        self.metrics.detection.observe(time.perf_counter() - started)
        if not detections:
            raise NoFaceFound("no face was detected in the image")
        if faces == "largest":
            return [max(detections, key=lambda d: _box_area(d.box))]
        return detections[: self.settings.max_faces]

    async def reconstruct(self, data: bytes, *, faces: FaceSelection = "largest",
                          box: Box | None = None) -> ImageReconstruction:
        """Decode the upload, find its faces (or use ``box``) and reconstruct them."""
        image = await self.run_cpu(self.decode, data)
        if box is not None:
            height, width = image.shape[:2]
            if box[0] >= width or box[1] >= height or box[2] <= 0 or box[3] <= 0:
                raise InvalidBox(f"box {box} lies outside the {width}x{height} image")
            boxes, scores = [box], [None]
        else:
            detections = await self.run_cpu(self._detect, image, faces)
            boxes, scores = [d.box for d in detections], [d.score for d in detections]
        crops, transforms = await self.run_cpu(self.reconstructor.crop, image, boxes)
        self.metrics.queue_depth.set(self.batcher.depth + 1)
        outputs = await self.batcher.submit(crops)
        self.metrics.queue_depth.set(self.batcher.depth)
        results = self.reconstructor.results(boxes, transforms, outputs)
        self.metrics.faces_per_image.observe(len(results))
        return ImageReconstruction(image, [ReconstructedFace(b, s, r) for b, s, r in zip(boxes, scores, results)])
