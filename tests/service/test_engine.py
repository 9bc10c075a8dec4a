"""The engine runs the pipeline's sequences off the event loop: reconstruction, transfer and
person requests at once, their network runs through the micro-batcher, answer as in one thread."""

from __future__ import annotations

import asyncio
import threading

import cv2
import numpy as np
import pytest

from model.conventions import FaceSelection, MeshSpace
from model.mesh import kernels
from model.runtime import detector_kernels
from model.runtime.image_io import load_rgb
from model.runtime.pipeline import NoFaceFound
from service.encoding import build_meshes
from service.engine import MIB, ReconstructionEngine, WorkBudget, WorkBudgetFull, _Flight, _Held
from service.metrics import ServiceMetrics
from service.schemas import TextureMode
from service.settings import ServiceSettings
from tests.conftest import SHARED_DATA

LFW = SHARED_DATA / "train" / "lfw"
OPEN_MOUTH = SHARED_DATA / "train" / "utkface" / "16_0_0_20170104012457770.jpg"
PERSON = sorted((LFW / "John_Bolton").glob("*.jpg"))[:3] if LFW.is_dir() else []

needs_photos = pytest.mark.skipif(len(PERSON) < 3 or not OPEN_MOUTH.is_file(),
                                  reason="needs the face photos of ../shared/data (train/lfw, train/utkface)")


@needs_photos
def test_concurrent_reconstruction_transfer_and_person_requests_answer_as_in_one_thread():
    identity, expression = PERSON[0].read_bytes(), OPEN_MOUTH.read_bytes()
    person = [path.read_bytes() for path in PERSON]
    sizes = []

    async def scenario():
        engine = ReconstructionEngine(ServiceSettings(threads=1, max_wait_ms=200))
        await engine.start()
        engine.batcher.on_batch = lambda size, seconds: sizes.append(size)
        try:
            return engine, await asyncio.gather(engine.reconstruct(identity), engine.transfer(identity, expression),
                                                engine.reconstruct_person(person))
        finally:
            await engine.stop()

    engine, (plain, transferred, fused) = asyncio.run(scenario())
    pipeline = engine.pipeline
    alone = pipeline.transfer(load_rgb(identity), load_rgb(expression)).faces[0].result
    np.testing.assert_allclose(transferred.faces[0].result.expressive_vertices, alone.expressive_vertices, atol=2e-4)
    np.testing.assert_allclose(plain.faces[0].result.expressive_vertices,
                               pipeline.reconstruct(load_rgb(identity)).faces[0].result.expressive_vertices, atol=2e-4)
    in_thread = pipeline.reconstruct_person([load_rgb(data) for data in person])
    assert fused.used == in_thread.used == 3
    np.testing.assert_allclose(fused.identity_code, in_thread.identity_code, rtol=0.05, atol=0.05)
    assert max(sizes) > 1  # requests shared network runs


@needs_photos
def test_a_request_alone_runs_its_network_and_encodes_its_answer_on_its_own_cpu_thread():
    data = PERSON[0].read_bytes()
    network_threads = []

    async def scenario():
        engine = ReconstructionEngine(ServiceSettings(threads=1))
        await engine.start()
        run = engine._run_network

        def recorded(request):
            network_threads.append(threading.current_thread().name)
            return run(request)

        engine._run_network = recorded
        try:
            rec = await engine.reconstruct(data)
            encoded = await engine.reconstruct_then(data, lambda rec: (threading.current_thread().name, rec))
            return engine, rec, encoded
        finally:
            await engine.stop()

    engine, rec, (finish_thread, again) = asyncio.run(scenario())
    assert len(network_threads) == 2 and all(name.startswith("facerecon-cpu") for name in network_threads)
    assert finish_thread.startswith("facerecon-cpu")  # the answer encoded where the reconstruction ended
    np.testing.assert_allclose(again.faces[0].result.expressive_vertices, rec.faces[0].result.expressive_vertices,
                               atol=1e-6)
    assert engine.upstream == 0


def test_a_request_goes_alone_only_when_no_other_is_on_its_way_to_the_network():
    engine = ReconstructionEngine(ServiceSettings(threads=1))
    try:
        first, second = _Flight(engine), _Flight(engine)
        assert engine.upstream == 2 and not first.go_alone()  # the batcher may gather both
        second.leave()
        second.leave()  # once only
        assert engine.upstream == 1 and first.go_alone() and engine.upstream == 0  # the batcher waits for nobody
        assert not first.go_alone()
        first.enter()  # back for its next network request
        assert engine.upstream == 1
        first.leave()
        assert engine.upstream == 0
    finally:
        engine.cpu_pool.shutdown()


@needs_photos
def test_the_cost_of_several_images_is_each_as_one_reconstruction():
    engine = ReconstructionEngine(ServiceSettings(threads=1))
    try:
        data = [path.read_bytes() for path in PERSON]
        headers = engine.read_headers(data)
        one = [engine.request_cost([header], 0, faces=FaceSelection.largest) for header in headers]
        assert engine.several_images_cost(headers, 0) == sum(one)
    finally:
        engine.cpu_pool.shutdown()
        engine.network_pool.shutdown()


def test_the_spinning_setting_reaches_both_sessions():
    """The service's default leaves the cores idle between runs (more requests/s under load, README);
    FACERECON_SPINNING=1 turns ONNX Runtime's busy-waiting back on for both networks."""
    for spinning, entry in ((False, "0"), (True, "1")):
        engine = ReconstructionEngine(ServiceSettings(threads=2, spinning=spinning))
        sessions = [engine.pipeline.reconstructor.session, *engine.pipeline.detector.sessions.values()]
        assert [s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
                for s in sessions] == [entry] * len(sessions)


def compiled_variants() -> dict[str, int]:
    """How many compiled variants each compiled loop (the colour pass's, the detector's) has."""
    return {f"{module.__name__}.{name}": len(loop.signatures) for module in (kernels, detector_kernels)
            for name, loop in vars(module).items() if hasattr(loop, "signatures")}


def test_the_warm_up_compiles_what_a_request_runs():
    """After start, a decoded JPEG searched for faces, and one coloured per vertex and in the UV layout,
    compile nothing more: the compiled loops (seconds to compile) never fall on a request."""
    rng = np.random.default_rng(0)
    photo = cv2.imencode(".jpg", rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))[1].tobytes()

    async def scenario():
        engine = ReconstructionEngine(ServiceSettings(threads=1))
        await engine.start()
        try:
            compiled = compiled_variants()
            with pytest.raises(NoFaceFound):  # noise: every detector branch runs, and finds nothing
                await engine.reconstruct(photo)
            for texture in (TextureMode.vertex, TextureMode.uv):
                await engine.reconstruct_then(photo, lambda rec, texture=texture: build_meshes(
                    rec, engine.topology, MeshSpace.image, texture, engine.uv_map), box=(80.0, 40.0, 240.0, 200.0))
            return compiled, compiled_variants()
        finally:
            await engine.stop()

    after_warm_up, after_requests = asyncio.run(scenario())
    assert after_warm_up == after_requests and all(after_warm_up.values())


def test_a_request_holds_its_share_of_the_budget_until_it_ends_and_takes_none_after():
    """A single reconstruction takes its share on a CPU thread and gives it back on the event loop; a
    request that ended first (its client gone, the thread still at work) takes nothing any more."""
    from concurrent.futures import CancelledError

    engine = ReconstructionEngine.__new__(ReconstructionEngine)  # the budget alone, no sessions
    engine.settings, engine.metrics = ServiceSettings(memory_budget_mb=64), ServiceMetrics()
    engine.budget = WorkBudget(64 * MIB)
    held = _Held(engine)
    held.take(40 * MIB)
    assert engine.budget.used == 40 * MIB
    with pytest.raises(WorkBudgetFull):
        _Held(engine).take(30 * MIB)  # does not fit beside it now
    held.end()
    assert engine.budget.used == 0
    late = _Held(engine)
    late.end()
    with pytest.raises(CancelledError):
        late.take(MIB)
    assert engine.budget.used == 0
    late.end()  # ending twice gives back nothing twice
    assert engine.budget.used == 0
