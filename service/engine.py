"""The service's side of the one pipeline: :meth:`model.runtime.pipeline.FacePipeline.steps` run off the event loop.

CPU work (decoding, detection, cropping, mesh encoding) runs on a small thread pool sized to
the machine; the reconstruction network runs on its own thread, fed by the
:class:`~service.batching.MicroBatcher`, so faces of concurrent requests share network runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from model.conventions import Box, FaceSelection
from model.mesh.texture_bake import UVRasterMap
from model.runtime.detector import FaceDetector
from model.runtime.pipeline import FacePipeline, ImageReconstruction, NetworkOutputs, PipelineSteps
from model.runtime.reconstructor import FaceReconstructor
from model.runtime.sessions import default_threads, execution_providers
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

    def _advance(self, steps: PipelineSteps, outputs: NetworkOutputs | None) -> np.ndarray | ImageReconstruction:
        """Run the pipeline's CPU work up to its next network batch (its crops) or to its answer."""
        try:
            return next(steps) if outputs is None else steps.send(outputs)
        except StopIteration as done:
            return done.value

    def _begin(self, data: bytes, faces: FaceSelection,
               box: Box | None) -> tuple[PipelineSteps, np.ndarray | ImageReconstruction]:
        """Decode the upload and run the pipeline up to its first network batch."""
        steps = self.pipeline.steps(self.pipeline.decode(data), faces, box, on_detection=self.metrics.detection.observe)
        return steps, self._advance(steps, None)

    async def reconstruct(self, data: bytes, *, faces: FaceSelection = FaceSelection.largest,
                          box: Box | None = None) -> ImageReconstruction:
        """Decode the upload, find its faces (or use ``box``) and reconstruct them: the pipeline's
        CPU steps on the thread pool, its network batches through the micro-batcher."""
        self.upstream += 1
        try:
            steps, step = await self.run_cpu(self._begin, data, faces, box)
            while isinstance(step, np.ndarray):
                self.metrics.queue_depth.set(self.batcher.depth + 1)
                outputs = await self.batcher.submit(step)
                step = await self.run_cpu(self._advance, steps, outputs)
        finally:
            self.upstream -= 1
        self.metrics.queue_depth.set(self.batcher.depth)
        self.metrics.faces_per_image.observe(len(step.faces))
        return step
