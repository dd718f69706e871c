"""Continuous batching, the policy server's choice for a backend with a decode stream (llama.cpp).

Requests join the running decode at its next step and leave it when they finish, so a request
that arrives mid-batch does not wait for the whole batch, and a short one does not wait for the
longest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from x1.models.base import Completion, DecodeStream, GenerationRequest
from x1.serve.batcher import Batcher, BatcherClosed, Pending, R, T, log
from x1.serve.metrics import ServerMetrics


class ContinuousBatcher(Batcher[T, R]):
    """Continuous batching: every decode step admits what queued since the last one.

    ``open_stream()`` gives the backend's ``DecodeStream``; ``request(item)`` is the item's
    generation request and ``finish(item, completions)`` its result, built in the worker thread.
    At most ``max_batch`` sequences are in flight; a request the stream refuses at submission
    fails alone, and a step that raises fails only the requests then in flight (the stream is
    reopened). Every step runs under ``lock``, so another server sharing the model takes turns.
    """

    def __init__(
        self,
        open_stream: Callable[[], DecodeStream],
        request: Callable[[T], GenerationRequest],
        finish: Callable[[T, list[Completion]], R],
        *,
        max_batch: int = 32,
        metrics: ServerMetrics | None = None,
        name: str = "batcher",
        lock: Any = None,
    ) -> None:
        super().__init__(max_batch=max_batch, size=lambda item: request(item).n, metrics=metrics, name=name)
        self.open_stream = open_stream
        self.request = request
        self.finish = finish
        self.lock = lock or contextlib.nullcontext()
        self._stream: DecodeStream | None = None
        self._tickets: dict[int, Pending[T, R]] = {}
        self._in_flight = 0  # sequences submitted and not back

    async def stop(self) -> None:
        await super().stop()
        for pending in self._tickets.values():
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed("the server is shutting down"))
        self._tickets.clear()
        self._in_flight = 0
        if self._stream is not None:
            with self.lock:
                self._stream.close()
            self._stream = None

    async def _worker(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                while not self._queue and not self._tickets:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                new = self._take(self._in_flight)  # what fits beside the sequences in flight
                now = time.perf_counter()
                for p in new:
                    self.metrics.queue_wait.observe(now - p.arrived)
                self.batches += 1
                self.call_started = time.perf_counter()
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._advance, new)
                finally:
                    self.call_started = None
                for pending, ok, value in outcomes:
                    if ok:
                        self._succeed(pending, value)
                    else:
                        self._fail(pending, value)
                self.metrics.in_flight.set(self._in_flight)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the worker die: log and carry on
                log.exception("%s worker error", self.name)
                await asyncio.sleep(0.01)

    def _advance(self, new: list[Pending[T, R]]) -> list[tuple[Pending[T, R], bool, Any]]:
        """In the worker thread: submit the newcomers, decode one step, build the finished results."""
        outcomes: list[tuple[Pending[T, R], bool, Any]] = []
        with self.lock:
            if self._stream is None:
                self._stream = self.open_stream()
            stream = self._stream
            self._drop_abandoned(stream)
            for p in new:
                try:
                    ticket = stream.submit(self.request(p.item))
                except Exception as err:  # this request alone is bad
                    outcomes.append((p, False, err))
                    continue
                self._tickets[ticket] = p
                self._in_flight += p.size
            if not stream.busy:
                return outcomes
            self.metrics.batch_size.observe(self._in_flight)
            try:
                finished = stream.step()
            except Exception as err:  # the model failed mid-step: fail what was in flight, start afresh
                log.warning("%s: a decode step failed (%s); failing %d requests in flight", self.name, err, len(self._tickets))
                outcomes.extend((p, False, err) for p in self._tickets.values())
                self._tickets.clear()
                self._in_flight = 0
                stream.close()
                self._stream = None
                return outcomes
        for ticket, completions in finished:
            if ticket not in self._tickets:
                continue
            p = self._tickets.pop(ticket)
            self._in_flight -= p.size
            try:
                outcomes.append((p, True, self.finish(p.item, completions)))
            except Exception as err:
                outcomes.append((p, False, err))
        return outcomes

    def _drop_abandoned(self, stream: DecodeStream) -> None:
        """Requests whose waiter gave up (client gone, timed out) leave the decode and free their slots."""
        cancel = getattr(stream, "cancel", None)
        for ticket, pending in list(self._tickets.items()):
            if pending.future.done() and cancel is not None:
                cancel(ticket)
                del self._tickets[ticket]
                self._in_flight -= pending.size
                self.metrics.items.inc(outcome="cancelled")
