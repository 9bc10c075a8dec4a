"""The service's side of the one pipeline: :class:`model.runtime.pipeline.FacePipeline`'s steps
(a reconstruction, an expression transfer, a person from several photos) run off the event loop.

CPU work (decoding, detection, cropping, mesh encoding) runs on a small thread pool sized to
the machine; the reconstruction network runs on its own thread, fed by the
:class:`~service.batching.MicroBatcher`, so faces of concurrent requests share network runs. A
request alone on its way to the network runs it at once on its own CPU thread instead, and encodes
its answer right after (no hops to other threads and back for a request with nothing to share).

Memory is admitted by a :class:`WorkBudget`: every reconstruction request reserves, before its
images are decoded, what it can cost at most (from the image headers: pixels and bit depth;
its images; its faces; its output), and is refused at once when that does not fit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import numpy as np

from model.conventions import Box, FaceSelection, MeshSpace
from model.mesh.texture_bake import UVRasterMap
from model.runtime.detector import FaceDetector
from model.runtime.image_io import ImageDecodeError, ImageHeader, reduced_pixels
from model.runtime.pipeline import (
    FacePipeline,
    ImageReconstruction,
    NetworkOutputs,
    NetworkRequest,
    PersonReconstruction,
    PoseSource,
    Steps,
)
from model.runtime.reconstructor import FaceReconstructor
from model.runtime.sessions import check_session_providers, default_threads, execution_providers
from service.batching import MicroBatcher
from service.encoding import build_meshes
from service.metrics import ServiceMetrics
from service.schemas import TextureMode
from service.settings import ServiceSettings

T = TypeVar("T")
U = TypeVar("U")

MIB = 1 << 20
# What one request can cost at most, in bytes (fitted to the peaks measured with
# benchmarks/bench_memory.py, with room to spare; README, Benchmarks, Memory):
DETECT_PIXEL_BYTES = 7  # per pixel while detecting: the RGB array (3) and the detector's preview (3 / f**2 for
# its factor f, none for a photo that is its own preview; 4 when it was a Pillow copy): a loose bound now
PIXEL_SLACK = 1  # per pixel, beside the larger of that and decoding's (ImageHeader.peak_bytes)
SIDE_BYTES = 2048  # per pixel of the photo's longer side: crops' cut-block strips, buffers
IMAGE_BYTES = 24 * MIB  # per image being worked on: strips, crops, network batch, meshes, UV baking (~14 MiB)
FACE_BYTES = 2 * MIB  # per face answered: its files (and a batch's zip of them) until the answer is sent ...
FACE_JSON_MESH_BYTES = 8 * MIB  # ... or its vertices and triangles as JSON (include_mesh): lists, then text
UPLOAD_COPIES = 2  # the request body, as parsed form and as bytes read from it
DETECTOR_MAX_FACES = 256  # the detector reports this many at most: faces cut by max_faces are counted


class WorkTooLarge(Exception):
    """The request would need more memory than the whole budget: it can never be served."""


class WorkBudgetFull(Exception):
    """The request does not fit beside the requests in flight: try again later."""


class WorkBudget:
    """A memory budget in bytes shared by the requests in flight (taken on the event loop or on a CPU
    thread: :meth:`ReconstructionEngine.reconstruct_then`)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.used = capacity, 0
        self._lock = threading.Lock()

    def take(self, cost: int) -> None:
        """Hold ``cost`` bytes of the budget (until :meth:`give_back`); refuse at once when they do not fit."""
        if cost > self.capacity:
            raise WorkTooLarge(f"the request needs about {cost / MIB:.0f} MiB of memory, more than the "
                               f"{self.capacity / MIB:.0f} MiB this server gives all requests together")
        with self._lock:
            if self.used + cost > self.capacity:
                raise WorkBudgetFull(f"{self.used / MIB:.0f} of {self.capacity / MIB:.0f} MiB in use; "
                                     f"this request needs {cost / MIB:.0f} MiB")
            self.used += cost

    def give_back(self, cost: int) -> None:
        with self._lock:
            self.used -= cost


class _Held:
    """The bytes of the memory budget one request holds: taken on the CPU thread that reads its upload's
    header (:meth:`take`), given back on the event loop when the request ends (:meth:`end`). A request
    that ended first (its client gone) takes nothing any more: its thread stops instead."""

    def __init__(self, engine: ReconstructionEngine) -> None:
        self.engine, self.cost, self.ended = engine, 0, False
        self._lock = threading.Lock()

    def take(self, cost: int) -> None:
        with self._lock:
            if self.ended:
                raise CancelledError("the request ended before it was admitted")
            self.engine.take(cost)
            self.cost = cost

    def end(self) -> None:
        with self._lock:
            self.ended = True
            if self.cost:
                self.engine.budget.give_back(self.cost)
                self.cost = 0


def _answer(value: T) -> T:
    return value


class _Flight:
    """One request's place in :attr:`ReconstructionEngine.upstream`, the requests on their way to the
    network that the micro-batcher waits for: entered on creation (on the event loop), left for a
    network run of its own while it is the only one there (:meth:`go_alone`: nothing to batch it
    with, and the batcher must not wait for it), entered again after that run, and left for good
    before its answer is encoded or when it ends, from whichever thread does that."""

    def __init__(self, engine: ReconstructionEngine) -> None:
        self.engine, self.inside = engine, False
        self.enter()

    def enter(self) -> None:
        with self.engine.upstream_lock:
            if not self.inside:
                self.inside = True
                self.engine.upstream += 1

    def leave(self) -> None:
        with self.engine.upstream_lock:
            if self.inside:
                self.inside = False
                self.engine.upstream -= 1

    def go_alone(self) -> bool:
        """Leave the count if this request is the only one in it: True when it should run its network
        request at once, on its own thread."""
        with self.engine.upstream_lock:
            if self.inside and self.engine.upstream == 1:
                self.inside = False
                self.engine.upstream -= 1
                return True
            return False


class ReconstructionEngine:
    """Loads both ONNX models once; reconstructs the faces of uploaded images."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        providers = execution_providers(settings.device)
        reconstructor = FaceReconstructor(settings.model_path, providers=providers, threads=settings.threads,
                                          spinning=settings.spinning, mirror_average=settings.mirror_average)
        detector = FaceDetector(settings.detector_path, providers=providers, threads=settings.detector_threads,
                                spinning=settings.spinning,
                                max_faces=max(DETECTOR_MAX_FACES, settings.max_faces))
        # ONNX Runtime falls back to the CPU when it cannot create the CUDA provider: with device=cuda
        # that fails start-up (DeviceUnavailable) rather than a GPU deployment reporting ready on the CPU.
        check_session_providers(settings.device, providers, reconstructor.session.get_providers(),
                                "the reconstruction model")
        check_session_providers(settings.device, providers, detector.session.get_providers(), "the face detector")
        self.pipeline = FacePipeline(reconstructor, detector, max_faces=settings.max_faces,
                                     max_pixels=settings.max_pixels, refine=settings.refine_crop)
        self.reconstructor = reconstructor
        self.topology = reconstructor.topology
        self.uv_map = UVRasterMap.build(self.topology.uvs, self.topology.faces, settings.texture_size)
        self.cpu_pool = ThreadPoolExecutor(settings.workers or default_threads(), thread_name_prefix="facerecon-cpu")
        self.network_pool = ThreadPoolExecutor(1, thread_name_prefix="facerecon-network")
        self.upstream = 0  # requests between admission and their network outputs (_Flight)
        self.upstream_lock = threading.Lock()
        self.batcher = MicroBatcher(self._run_network, self.network_pool, max_batch=settings.max_batch,
                                    max_wait_s=settings.max_wait_ms / 1000.0, upstream=lambda: self.upstream,
                                    on_batch=self.metrics.observe_batch)
        self.budget = WorkBudget(settings.memory_budget_mb * MIB)
        self.ready = False

    @property
    def model_version(self) -> str:
        """The reconstruction model's version (training steps and file hash): /v1/info, ``X-Model-Version``."""
        return self.reconstructor.model_version

    @property
    def landmark_calibration(self) -> str:
        """What the model's landmark offsets were fitted on (ONNX metadata), ``none`` when not calibrated."""
        return self.reconstructor.metadata.landmark_calibration

    @property
    def providers(self) -> list[str]:
        """Execution providers the reconstruction session really uses, best first."""
        return self.reconstructor.session.get_providers()

    async def start(self) -> None:
        """Start batching and warm both sessions up (first runs allocate and pick kernels), and
        compile the colour pass's loops (:meth:`warm_up_colours`)."""
        self.batcher.start()
        size = self.reconstructor.input_size
        await self.run_cpu(self.pipeline.detector.detect, np.zeros((480, 640, 3), np.uint8))
        for batch in sorted({1, self.settings.max_batch}):
            await self.batcher.submit(NetworkRequest(np.zeros((batch, size, size, 3), np.uint8)))
        await self.run_cpu(self.warm_up_colours)
        self.ready = True

    def warm_up_colours(self) -> None:
        """Colour a face per vertex and in the UV layout once: the compiled loops of the colour pass
        (:mod:`model.mesh.kernels`) compile on their first call, a few seconds, which must not fall
        on a request."""
        grey = np.full((256, 256, 3), 128, np.uint8)
        reconstruction = self.pipeline.reconstruct(grey, box=(64.0, 64.0, 192.0, 192.0))
        for texture in (TextureMode.vertex, TextureMode.uv):
            build_meshes(reconstruction, self.topology, MeshSpace.image, texture, self.uv_map)

    async def stop(self) -> None:
        """Finish queued work, then release the threads."""
        self.ready = False
        await self.batcher.stop()
        self.cpu_pool.shutdown(wait=True)
        self.network_pool.shutdown(wait=True)

    async def run_cpu(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.cpu_pool, function, *args)

    def read_headers(self, uploads: Sequence[bytes]) -> list[ImageHeader | ImageDecodeError]:
        """Each upload's header (nothing decoded), or why it is no usable image (see FacePipeline.header)."""
        headers: list[ImageHeader | ImageDecodeError] = []
        for data in uploads:
            try:
                headers.append(self.pipeline.header(data))
            except ImageDecodeError as err:
                headers.append(err)
        return headers

    def request_cost(self, headers: Sequence[ImageHeader | ImageDecodeError], upload_bytes: int, *,
                     faces: FaceSelection, box: bool = False, json_mesh: bool = False, parallel: int = 1) -> int:
        """Bytes a request can take at most: its upload, the ``parallel`` largest of its images being
        worked on at once, and every image's faces until the answer is sent. A large JPEG is decoded
        reduced (:meth:`FacePipeline.decode`) and costs what that holds; one with a given ``box``
        is counted whole (the box may keep it so)."""
        images = [h for h in headers if isinstance(h, ImageHeader)]
        working = sorted((self._image_bytes(h, 1 if box else self.pipeline.size_reduction(h)) for h in images),
                         reverse=True)
        per_image = 1 if box or FaceSelection(faces) is FaceSelection.largest else self.settings.max_faces
        per_face = FACE_JSON_MESH_BYTES if json_mesh else FACE_BYTES
        return UPLOAD_COPIES * upload_bytes + sum(working[:parallel]) + len(images) * per_image * per_face

    @staticmethod
    def _image_bytes(header: ImageHeader, reduction: int) -> int:
        """Bytes one image decoded reduced by ``reduction`` takes while it is worked on."""
        pixels = reduced_pixels(header.width, header.height, reduction)
        return (max(header.peak_bytes(reduction), pixels * DETECT_PIXEL_BYTES) + pixels * PIXEL_SLACK
                + max(header.width, header.height) * SIDE_BYTES + IMAGE_BYTES)

    def batch_plan(self, headers: Sequence[ImageHeader | ImageDecodeError], upload_bytes: int, *,
                   faces: FaceSelection, json_mesh: bool = False) -> tuple[int, int]:
        """(images of a batch worked on at once, its cost): up to ``batch_parallelism`` at once, fewer
        when that would not fit the budget, one at least."""
        for parallel in range(self.settings.batch_parallelism, 0, -1):
            cost = self.request_cost(headers, upload_bytes, faces=faces, json_mesh=json_mesh, parallel=parallel)
            if cost <= self.budget.capacity or parallel == 1:
                return parallel, cost
        raise AssertionError("unreachable")

    def take(self, cost: int) -> None:
        """Hold ``cost`` bytes of the memory budget (WorkTooLarge, WorkBudgetFull), counting refusals."""
        try:
            self.budget.take(cost)
        except WorkBudgetFull:
            self.metrics.rejected.inc()
            raise

    @contextmanager
    def admit(self, cost: int) -> Iterator[None]:
        """Hold ``cost`` bytes of the memory budget for the block (:meth:`take`)."""
        self.take(cost)
        try:
            yield
        finally:
            self.budget.give_back(cost)

    def several_images_cost(self, headers: Sequence[ImageHeader | ImageDecodeError], upload_bytes: int, *,
                            json_mesh: bool = False) -> int:
        """Bytes a transfer or person request can take at most: each image as one reconstruction of
        its largest face, all of them held at once (the pipeline works on them together)."""
        return self.request_cost(headers, upload_bytes, faces=FaceSelection.largest, json_mesh=json_mesh,
                                 parallel=len(headers))

    def _run_network(self, request: NetworkRequest) -> NetworkOutputs:
        return self.reconstructor.run(request.crops, request.given)

    def _run_network_inline(self, request: NetworkRequest) -> NetworkOutputs:
        """A lone request's network run on its own CPU thread (no hop to the network thread and back)."""
        started = time.perf_counter()
        outputs = self._run_network(request)
        self.metrics.observe_batch(len(request.crops), time.perf_counter() - started)
        return outputs

    @staticmethod
    def _advance(steps: Steps[T], outputs: NetworkOutputs | None) -> NetworkRequest | T:
        """Run the pipeline's CPU work up to its next network request or to its answer."""
        try:
            return next(steps) if outputs is None else steps.send(outputs)
        except StopIteration as done:
            return done.value

    def _work(self, flight: _Flight, steps: Steps[T], outputs: NetworkOutputs | None,
              finish: Callable[[T], U]) -> NetworkRequest | U:
        """One stretch of a request's work on the thread pool: the steps' CPU work from ``outputs``
        (None: the start) on; their network requests run here too while the request is alone in
        flight (nothing to batch it with), else the stretch ends at the next one; at the steps'
        answer the request leaves the count of those on their way to the network, then ``finish``
        (encoding the answer) runs in the same stretch."""
        step = self._advance(steps, outputs)
        while isinstance(step, NetworkRequest) and flight.go_alone():
            outputs = self._run_network_inline(step)
            flight.enter()
            step = self._advance(steps, outputs)
        if isinstance(step, NetworkRequest):
            return step
        flight.leave()
        return finish(step)

    def _start(self, flight: _Flight, begin: Callable[[], Steps[T]], finish: Callable[[T], U]
               ) -> tuple[Steps[T], NetworkRequest | U]:
        steps = begin()
        return steps, self._work(flight, steps, None, finish)

    async def _drive(self, begin: Callable[[], Steps[T]], finish: Callable[[T], U]) -> U:
        """``begin()`` (decoding the uploads and making the steps), the steps' CPU work and
        ``finish`` on the thread pool, the steps' network requests through the micro-batcher (or
        at once, on the same thread, when the request is alone: :meth:`_work`)."""
        flight = _Flight(self)
        try:
            steps, step = await self.run_cpu(self._start, flight, begin, finish)
            while isinstance(step, NetworkRequest):
                self.metrics.queue_depth.set(self.batcher.depth + 1)
                outputs = await self.batcher.submit(step)
                step = await self.run_cpu(self._work, flight, steps, outputs, finish)
        finally:
            flight.leave()
        self.metrics.queue_depth.set(self.batcher.depth)
        return step

    async def reconstruct(self, data: bytes, *, faces: FaceSelection = FaceSelection.largest,
                          box: Box | None = None) -> ImageReconstruction:
        """Decode the upload, find its faces (or use ``box``) and reconstruct them: the pipeline's
        CPU steps on the thread pool, its network batches through the micro-batcher."""
        return await self.reconstruct_then(data, _answer, faces=faces, box=box)

    async def reconstruct_then(self, data: bytes, finish: Callable[[ImageReconstruction], U], *,
                               faces: FaceSelection = FaceSelection.largest, box: Box | None = None,
                               photo_colours: bool = True, cost: Callable[[ImageHeader], int] | None = None) -> U:
        """:meth:`reconstruct`, then ``finish(reconstruction)`` (encoding the answer) on the same
        thread, right after the last CPU step. ``photo_colours``: whether ``finish`` reads colours
        from the photo (if not, a JPEG with a given box is decoded reduced: :meth:`FacePipeline.decode`).

        ``cost``: the request is admitted here, by the bytes ``cost(header)`` of the upload's header,
        held until this returns; the header is read and the budget taken on the CPU thread that then
        decodes the upload, one hop to a thread and back fewer than reading the header first (its
        errors, WorkTooLarge and WorkBudgetFull are raised before anything is decoded)."""
        held = _Held(self)

        def done(rec: ImageReconstruction) -> U:
            self.metrics.faces_per_image.observe(len(rec.faces))
            return finish(rec)

        def begin() -> Steps[ImageReconstruction]:
            if cost is not None:
                held.take(cost(self.pipeline.header(data)))
            image = self.pipeline.decode(data, box, photo_colours=photo_colours)
            return self.pipeline.steps(image, faces, box, on_detection=self.metrics.detection.observe)

        try:
            return await self._drive(begin, done)
        finally:
            held.end()

    async def transfer(self, identity_data: bytes, expression_data: bytes | None, *,
                       expression_code: np.ndarray | None = None, pose_from: PoseSource = "identity"
                       ) -> ImageReconstruction:
        """Expression transfer (:meth:`FacePipeline.transfer_steps`) between two uploads, or onto one
        upload from an expression code (De,): decoding and CPU steps on the thread pool, network
        runs through the micro-batcher. The caller admits it (:meth:`several_images_cost`)."""
        def begin() -> Steps[ImageReconstruction]:
            identity = self.pipeline.decode(identity_data)
            expression = None if expression_data is None else self.pipeline.decode(expression_data)
            return self.pipeline.transfer_steps(identity, expression, expression_code=expression_code,
                                                pose_from=pose_from)

        return await self._drive(begin, _answer)

    async def reconstruct_person(self, datas: Sequence[bytes]) -> PersonReconstruction:
        """One face from several uploads of a person (:meth:`FacePipeline.person_steps`): decoding
        and CPU steps on the thread pool, network runs through the micro-batcher. The caller
        admits it (:meth:`several_images_cost`)."""
        return await self._drive(lambda: self.pipeline.person_steps([self.pipeline.decode(data) for data in datas]),
                                 _answer)
