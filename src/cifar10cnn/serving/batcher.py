"""Dynamic batching: requests from concurrent clients are gathered into one forward pass.

A request puts its images (k×32×32×3 uint8) on a queue and awaits a future. One worker task takes
requests until `max_batch` images are gathered or `max_delay` has passed since the first one, runs
the model once on all of them in a worker thread (the event loop stays free), and hands each
request its own rows back, in order. The queue is bounded in images: when full, `submit` raises
`QueueFull` at once (the app answers 503 with Retry-After) instead of letting latency grow
without bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class QueueFull(Exception):
    pass


@dataclass
class _Job:
    images: np.ndarray
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatcherStats:
    forward_passes: int = 0
    images: int = 0
    requests: int = 0
    rejected: int = 0
    largest_batch: int = 0


class DynamicBatcher:
    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], max_batch: int = 64, max_delay_ms: float = 5.0,
                 max_queue_images: int = 1024) -> None:
        self.infer = infer  # uint8 N×32×32×3 → float N×C probabilities; runs in a worker thread
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue_images = max_queue_images
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._queued_images = 0
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def run_exclusive(self, fn: Callable, *args):
        """Run `fn(*args)` on the model thread, between forward passes (e.g. Grad-CAM)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for `images`, computed in a shared forward pass."""
        assert self._queue is not None, "batcher not started"
        if self._queued_images + len(images) > self.max_queue_images:
            self.stats.rejected += 1
            raise QueueFull(f"{self._queued_images} images already queued (limit {self.max_queue_images})")
        job = _Job(images, asyncio.get_running_loop().create_future())
        self._queued_images += len(images)
        self.stats.requests += 1
        self._queue.put_nowait(job)
        return await job.future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        pending: _Job | None = None
        while True:
            first = pending or await self._queue.get()
            pending = None
            jobs, n = [first], len(first.images)
            deadline = first.queued_at + self.max_delay
            while n < self.max_batch:
                timeout = deadline - time.perf_counter()
                try:
                    if timeout <= 0:
                        job = self._queue.get_nowait()
                    else:
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if n + len(job.images) > self.max_batch:
                    pending = job  # starts the next batch; a single request never waits twice
                    break
                jobs.append(job)
                n += len(job.images)
            batch = np.concatenate([j.images for j in jobs])
            self._queued_images -= n
            try:
                probs = await loop.run_in_executor(self._executor, self.infer, batch)
            except Exception as e:  # a model failure fails these requests, not the server
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            self.stats.forward_passes += 1
            self.stats.images += n
            self.stats.largest_batch = max(self.stats.largest_batch, n)
            start = 0
            for j in jobs:
                k = len(j.images)
                if not j.future.done():  # the client may have gone away
                    j.future.set_result(probs[start:start + k])
                start += k
