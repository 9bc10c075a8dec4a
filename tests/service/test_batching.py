import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from model.runtime.codes import GivenCodes
from model.runtime.pipeline import NetworkRequest
from model.runtime.reconstructor import FaceReconstructor
from service.batching import MicroBatcher


def _double(request: NetworkRequest) -> dict[str, np.ndarray]:
    """A stand-in network: per-item outputs that reveal which item they came from."""
    return {"value": request.crops.reshape(len(request.crops), -1)[:, 0].astype(np.float32) * 2}


def _run(coroutine):
    return asyncio.run(coroutine)


def _crops(*values: int) -> NetworkRequest:
    return NetworkRequest(np.stack([np.full((2, 2, 3), v, np.uint8) for v in values]))


def test_concurrent_jobs_share_a_batch_and_get_their_own_outputs():
    sizes = []

    async def scenario():
        batcher = MicroBatcher(_double, ThreadPoolExecutor(1), max_batch=8, max_wait_s=0.2, upstream=lambda: 3,
                               on_batch=lambda size, seconds: sizes.append(size))
        batcher.start()
        results = await asyncio.gather(batcher.submit(_crops(1)), batcher.submit(_crops(2, 3)),
                                       batcher.submit(_crops(4)))
        await batcher.stop()
        return results

    results = _run(scenario())
    assert [r["value"].tolist() for r in results] == [[2.0], [4.0, 6.0], [8.0]]
    assert sizes == [4]


def test_a_lone_request_does_not_wait_for_company():
    async def scenario():
        batcher = MicroBatcher(_double, ThreadPoolExecutor(1), max_batch=8, max_wait_s=2.0, upstream=lambda: 1)
        batcher.start()
        started = time.perf_counter()
        await batcher.submit(_crops(1))
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    assert _run(scenario()) < 0.5


def test_batches_never_exceed_max_batch_and_big_jobs_run_alone():
    sizes = []

    async def scenario():
        batcher = MicroBatcher(_double, ThreadPoolExecutor(1), max_batch=4, max_wait_s=0.05, upstream=lambda: 10,
                               on_batch=lambda size, seconds: sizes.append(size))
        batcher.start()
        jobs = [_crops(*range(3)), _crops(5, 6), _crops(*range(7)), _crops(9)]
        results = await asyncio.gather(*(batcher.submit(job) for job in jobs))
        await batcher.stop()
        return jobs, results

    jobs, results = _run(scenario())
    for job, result in zip(jobs, results):
        assert result["value"].tolist() == (job.crops[:, 0, 0, 0].astype(np.float32) * 2).tolist()
    assert sum(sizes) == 13 and max(sizes) == 7 and all(size <= 4 for size in sizes if size != 7)


def test_a_failing_network_fails_every_job_of_its_batch():
    def broken(batch):
        raise RuntimeError("network exploded")

    async def scenario():
        batcher = MicroBatcher(broken, ThreadPoolExecutor(1), max_batch=8, max_wait_s=0.05, upstream=lambda: 2)
        batcher.start()
        outcomes = await asyncio.gather(batcher.submit(_crops(1)), batcher.submit(_crops(2)), return_exceptions=True)
        await batcher.stop()
        return outcomes

    outcomes = _run(scenario())
    assert all(isinstance(o, RuntimeError) for o in outcomes)


def test_submit_after_stop_is_refused():
    async def scenario():
        batcher = MicroBatcher(_double, ThreadPoolExecutor(1), max_batch=8, max_wait_s=0.0)
        batcher.start()
        await batcher.stop()
        with pytest.raises(RuntimeError, match="not running"):
            await batcher.submit(_crops(1))

    _run(scenario())


@pytest.mark.parametrize("mirror_average", [False, True], ids=["plain", "mirror-averaged"])
def test_plain_and_given_code_requests_batched_together_answer_as_run_alone(onnx_model, mirror_average):
    reconstructor = FaceReconstructor(onnx_model, threads=1, mirror_average=mirror_average)
    size = reconstructor.input_size
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    expression = rng.normal(0.0, 1.0, (1, 64)).astype(np.float32)
    requests = [NetworkRequest(crops[:2]), NetworkRequest(crops[2:], GivenCodes(expression=expression))]
    alone = [reconstructor.run(request.crops, request.given) for request in requests]
    sizes = []

    async def scenario():
        batcher = MicroBatcher(lambda request: reconstructor.run(request.crops, request.given), ThreadPoolExecutor(1),
                               max_batch=8, max_wait_s=0.5, upstream=lambda: 2,
                               on_batch=lambda size, seconds: sizes.append(size))
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(request) for request in requests))
        await batcher.stop()
        return results

    together = _run(scenario())
    assert sizes == [3]  # one network run for both
    for batched, apart in zip(together, alone):
        assert batched.keys() == apart.keys()
        for name, value in apart.items():
            np.testing.assert_allclose(batched[name], value, atol=1e-5, err_msg=name)
    own = reconstructor.run(crops[2:])  # the given expression changed the face; the codes are the crop's own
    assert not np.allclose(own["expressive_vertices"], together[1]["expressive_vertices"], atol=1e-3)
    np.testing.assert_allclose(own["expression_code"], together[1]["expression_code"], atol=1e-5)
