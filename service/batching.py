"""Dynamic micro-batching: faces from concurrent requests share one network run, plain crops and
crops with given codes alike (:meth:`model.runtime.pipeline.NetworkRequest.concatenate`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from model.runtime.pipeline import NetworkRequest

Outputs = dict[str, np.ndarray]


@dataclass
class _Job:
    request: NetworkRequest  # crops (N, S, S, 3) uint8, maybe codes to decode them with
    future: asyncio.Future[Outputs]
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> int:
        return len(self.request.crops)


class MicroBatcher:
    """Gathers network requests submitted concurrently into batches of at most ``max_batch`` faces.

    A batch closes when it is full, when every request that could still join is already in it
    (``upstream()`` counts the requests on their way to the network, the batched ones included:
    a lone request does not wait), or ``max_wait_s`` after its first job arrived; it then runs
    ``run_batch`` (B, S, S, 3) -> outputs (B, ...) on ``executor`` while the next batch gathers.
    A job is never split: one with more faces than ``max_batch`` runs as a batch of its own.
    ``on_batch(batch_size, seconds)`` is told about every run (metrics).
    """

    def __init__(self, run_batch: Callable[[NetworkRequest], Outputs], executor: Executor, *,
                 max_batch: int, max_wait_s: float, upstream: Callable[[], int] = lambda: 0,
                 on_batch: Callable[[int, float], None] = lambda size, seconds: None) -> None:
        self.run_batch, self.executor = run_batch, executor
        self.max_batch, self.max_wait_s, self.upstream, self.on_batch = max_batch, max_wait_s, upstream, on_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._carry: _Job | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Jobs waiting for a batch."""
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        """Finish the jobs already submitted, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def submit(self, request: NetworkRequest) -> Outputs:
        """Network outputs for a request's N crops, each array (N, ...)."""
        if self._task is None or self._task.done():
            raise RuntimeError("the micro-batcher is not running")
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(request, future))
        return await future

    async def _gather(self) -> list[_Job]:
        first, self._carry = self._carry or await self._queue.get(), None
        jobs, size = [first], first.size
        deadline = first.enqueued + self.max_wait_s
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                if len(jobs) >= self.upstream():
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if size + job.size > self.max_batch:
                self._carry = job  # does not fit: it opens the next batch
                break
            jobs.append(job)
            size += job.size
        return jobs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            live = [job for job in jobs if not job.future.cancelled()]
            try:
                if live:
                    batch = NetworkRequest.concatenate([job.request for job in live])
                    started = time.perf_counter()
                    outputs = await loop.run_in_executor(self.executor, self.run_batch, batch)
                    self.on_batch(len(batch.crops), time.perf_counter() - started)
                    start = 0
                    for job in live:
                        stop = start + job.size
                        if not job.future.done():
                            job.future.set_result({name: value[start:stop] for name, value in outputs.items()})
                        start = stop
            except Exception as err:  # the network failed: every job of this batch gets the error
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(err)
            finally:
                for _ in jobs:
                    self._queue.task_done()
