"""A dynamic batcher: many concurrent HTTP requests become one blocking model call.

Requests queue up; one worker task takes the oldest, then waits until ``max_wait_ms`` after
that request arrived (or until ``max_batch`` sequences are waiting) and hands everything it
gathered to ``run_batch`` in its worker thread, once. The thread is always the same one: llama.cpp
runs OpenMP, whose thread team belongs to the calling thread, and teams of several callers
spin against each other (a server measured ~1.5x slower per batch with a pool of threads). The model call *is* the batch: a backend's
``generate(list[GenerationRequest])`` decodes all of them together.

Failure is contained: when a batch raises, its requests are retried one at a time, so only the
request that is really bad fails (its waiter gets the exception); the worker never dies, and a
waiter that gave up (client disconnected) is simply skipped.

``ContinuousBatcher`` (``serve/continuous.py``) builds on the same base for decode streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from x1.serve.metrics import ServerMetrics

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("x1.serve")


class BatcherClosed(RuntimeError):
    """The batcher is stopped (the server is shutting down)."""


@dataclass
class Pending(Generic[T, R]):
    """A queued item, its size in sequences, and the future its waiter awaits."""

    item: T
    size: int
    future: asyncio.Future[R]
    arrived: float = field(default_factory=time.perf_counter)


class Batcher(Generic[T, R]):
    """What every batcher shares: the queue, ``submit``, the worker's lifecycle and its outcomes.

    ``size(item)`` is how many sequences an item costs (``n`` for a generation request). A
    subclass's ``_worker`` turns queued items into model calls. Call ``start()`` inside the
    serving event loop.
    """

    def __init__(
        self,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        size: Callable[[T], int] | None = None,
        metrics: ServerMetrics | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.size = size or (lambda _item: 1)
        self.metrics = metrics or ServerMetrics()
        self.name = name
        self._queue: deque[Pending[T, R]] = deque()
        self._queued_size = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self.batches = 0  # model calls made (retries included)
        self.call_started: float | None = None  # when the model call now running began (None: none runs)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is not None:
            return
        self._closed = False
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"x1-{self.name}")
        self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"x1-{self.name}")

    async def stop(self) -> None:
        """Fail whatever still waits and stop the worker (a model call in progress finishes first)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed("the server is shutting down"))
        self._queued_size = 0
        self.metrics.queue_depth.set(0)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        return len(self._queue)

    # -- submitting -----------------------------------------------------------------------
    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result (or its exception)."""
        if self._closed or self._task is None or self._wakeup is None:
            raise BatcherClosed(f"the {self.name} is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        size = max(1, int(self.size(item)))
        self._queue.append(Pending(item, size, future))
        self._queued_size += size
        self.metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        return await future

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Queue several items at once (they may share a batch); if any fails, the first error is raised."""
        results = await asyncio.gather(*(self.submit(i) for i in items), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return list(results)  # type: ignore[arg-type]

    def _take(self, in_flight: int = 0) -> list[Pending[T, R]]:
        """Queued items, oldest first, that fit in ``max_batch`` beside ``in_flight`` sequences
        (one item always goes when nothing else does); items whose waiter gave up are dropped."""
        batch: list[Pending[T, R]] = []
        total = in_flight
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # the waiter gave up: drop it
                self._queue.popleft()
                self._queued_size -= head.size
                continue
            if (batch or total) and total + head.size > self.max_batch:
                break
            self._queue.popleft()
            self._queued_size -= head.size
            batch.append(head)
            total += head.size
        self.metrics.queue_depth.set(len(self._queue))
        return batch

    def _succeed(self, pending: Pending[T, R], result: R) -> None:
        self.metrics.items.inc(outcome="ok")
        if not pending.future.done():
            pending.future.set_result(result)

    def _fail(self, pending: Pending[T, R], err: BaseException) -> None:
        self.metrics.items.inc(outcome="error")
        if not pending.future.done():
            pending.future.set_exception(err)

    async def _worker(self) -> None:
        raise NotImplementedError


class DynamicBatcher(Batcher[T, R]):
    """Gather items for up to ``max_wait_ms`` or ``max_batch`` sequences, then ``run_batch(items)`` once.

    ``run_batch`` is blocking (it runs in a thread) and returns one result per item, in order;
    an item larger than ``max_batch`` goes alone.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        size: Callable[[T], int] | None = None,
        metrics: ServerMetrics | None = None,
        name: str = "batcher",
    ) -> None:
        super().__init__(max_batch=max_batch, max_wait_ms=max_wait_ms, size=size, metrics=metrics, name=name)
        self.run_batch = run_batch

    # -- the worker -----------------------------------------------------------------------
    async def _worker(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                while not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                # Wait from the oldest request's arrival, so requests that piled up behind a
                # running batch do not wait again.
                deadline = self._queue[0].arrived + self.max_wait_s
                while self._queued_size < self.max_batch:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                batch = self._take()
                if batch:
                    await self._execute(loop, batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the worker die: log and carry on
                log.exception("%s worker error", self.name)
                await asyncio.sleep(0.01)

    async def _call(self, loop: asyncio.AbstractEventLoop, items: list[T]) -> list[R]:
        self.batches += 1
        self.call_started = time.perf_counter()
        try:
            results = list(await loop.run_in_executor(self._executor, self.run_batch, items))
        finally:
            self.call_started = None
        if len(results) != len(items):
            raise RuntimeError(f"the model returned {len(results)} results for {len(items)} requests")
        return results

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[Pending[T, R]]) -> None:
        now = time.perf_counter()
        sequences = sum(p.size for p in batch)
        for p in batch:
            self.metrics.queue_wait.observe(now - p.arrived)
        self.metrics.batch_size.observe(sequences)
        self.metrics.in_flight.set(sequences)
        try:
            try:
                results = await self._call(loop, [p.item for p in batch])
            except Exception as err:
                if len(batch) == 1:
                    self._fail(batch[0], err)
                    return
                # Which request broke it? Retry them alone so the good ones still succeed.
                self.metrics.retries.inc()
                log.warning("%s: a batch of %d failed (%s); retrying one by one", self.name, len(batch), err)
                for p in batch:
                    if p.future.done():
                        continue
                    self.metrics.batch_size.observe(p.size)
                    try:
                        (result,) = await self._call(loop, [p.item])
                    except Exception as single_err:
                        self._fail(p, single_err)
                    else:
                        self._succeed(p, result)
                return
            for p, result in zip(batch, results, strict=True):
                self._succeed(p, result)
        except asyncio.CancelledError:  # stopped mid-batch: nobody will answer these waiters
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(BatcherClosed("the server is shutting down"))
            raise
        finally:
            self.metrics.in_flight.set(0)

def call_seconds(batcher: Batcher[Any, Any]) -> float:
    """How long the model call now running has run (0 when none): /health calls a batcher wedged past a limit."""
    started = batcher.call_started
    return 0.0 if started is None else time.perf_counter() - started


def describe(batcher: Batcher[Any, Any]) -> dict[str, Any]:
    """A small dict for /health."""
    return {
        "running": batcher.running,
        "call_s": round(call_seconds(batcher), 3),
        "queue_depth": batcher.depth,
        "max_batch": batcher.max_batch,
        "max_wait_ms": batcher.max_wait_s * 1000.0,
        "batches": batcher.batches,
        "mean_batch_size": round(batcher.metrics.batch_size.mean(), 3),
    }
