"""The service's side of the pipeline: model/pipeline.py's steps run off the event loop.

CPU work (decoding, detection, cropping, mesh encoding) runs on a small thread pool sized to
the machine; the reconstruction network runs on its own thread, fed by the
:class:`~service.batching.MicroBatcher`, so faces of concurrent requests share network runs.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import numpy as np

from model.face_detector import FaceDetector
from model.inference import Box, FaceReconstructor, default_threads, execution_providers
from model.pipeline import FacePipeline, FaceSelection, ImageReconstruction
from model.texture_bake import UVRasterMap
from service.batching import MicroBatcher
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings

T = TypeVar("T")


class ReconstructionEngine:
    """Loads both ONNX models once; reconstructs the faces of uploaded images."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        providers = execution_providers(settings.device)
        reconstructor = FaceReconstructor(settings.model_path, providers=providers, threads=settings.threads,
                                          mirror_average=settings.mirror_average)
        detector = FaceDetector(settings.detector_path, providers=providers, threads=settings.detector_threads)
        self.pipeline = FacePipeline(reconstructor, detector, max_faces=settings.max_faces,
                                     max_pixels=settings.max_pixels, refine=settings.refine_crop)
        self.reconstructor = reconstructor
        self.topology = reconstructor.topology
        self.uv_map = UVRasterMap.build(self.topology.uvs, self.topology.faces, settings.texture_size)
        self.cpu_pool = ThreadPoolExecutor(settings.workers or default_threads(), thread_name_prefix="facerecon-cpu")
        self.network_pool = ThreadPoolExecutor(1, thread_name_prefix="facerecon-network")
        self.upstream = 0  # requests between admission and their network outputs
        self.batcher = MicroBatcher(reconstructor.run, self.network_pool, max_batch=settings.max_batch,
                                    max_wait_s=settings.max_wait_ms / 1000.0, upstream=lambda: self.upstream,
                                    on_batch=self.metrics.observe_batch)
        self.ready = False

    @property
    def providers(self) -> list[str]:
        """Execution providers the reconstruction session really uses, best first."""
        return self.reconstructor.session.get_providers()

    async def start(self) -> None:
        """Start batching and warm both sessions up (first runs allocate and pick kernels)."""
        self.batcher.start()
        size = self.reconstructor.input_size
        await self.run_cpu(self.pipeline.detector.detect, np.zeros((480, 640, 3), np.uint8))
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

    def _prepare(self, data: bytes, faces: FaceSelection, box: Box | None):
        """Decode, locate the faces (timed for the metrics when detected) and crop them."""
        image = self.pipeline.decode(data)
        started = time.perf_counter()
        boxes, scores = self.pipeline.locate(image, faces, box)
        if box is None:
            self.metrics.detection.observe(time.perf_counter() - started)
        crops, transforms = self.reconstructor.crop(image, boxes)
        return image, boxes, scores, crops, transforms

    def _recrop(self, image: np.ndarray, transforms, outputs):
        """The second pass's boxes, crops and crop maps for detected faces (refinement on)."""
        refined = self.pipeline.refined_boxes(transforms, outputs)
        crops, transforms = self.reconstructor.crop(image, refined)
        return refined, crops, transforms

    async def reconstruct(self, data: bytes, *, faces: FaceSelection = "largest",
                          box: Box | None = None) -> ImageReconstruction:
        """Decode the upload, find its faces (or use ``box``) and reconstruct them."""
        self.upstream += 1
        try:
            image, boxes, scores, crops, transforms = await self.run_cpu(self._prepare, data, faces, box)
            self.metrics.queue_depth.set(self.batcher.depth + 1)
            outputs = await self.batcher.submit(crops)
            if box is None and self.pipeline.refine:
                boxes, crops, transforms = await self.run_cpu(self._recrop, image, transforms, outputs)
                outputs = await self.batcher.submit(crops)
        finally:
            self.upstream -= 1
        self.metrics.queue_depth.set(self.batcher.depth)
        rec = self.pipeline.assemble(image, boxes, scores, transforms, outputs)
        self.metrics.faces_per_image.observe(len(rec.faces))
        return rec
