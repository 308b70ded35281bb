"""Natural batching: concurrent calls that arrive while one batch is in flight go in the next.

A :class:`NaturalBatcher` turns many concurrent ``await batcher(item)`` calls into
few ``flush(items)`` calls without a timer: an item that arrives while nothing is
in flight is flushed at once (a lone call pays no wait), and whatever queues up
while a flush is running goes out as the next batch, up to ``max_batch`` items.
Throughput then grows with load while a single call's latency stays that of the
unbatched call.

There is no background task: the caller whose item is queued when no flush runs
becomes the flusher, flushes batches until its own item is answered, then
hands the turn to the next waiting caller. ``flush`` returns one outcome per
item, in order: a value, or an exception for that item alone (per-item
fallback, when a whole batch fails, belongs inside ``flush``). If ``flush``
raises, every item of that batch gets that exception; if the flushing caller is
cancelled, the others in its batch get :class:`BatchAborted` (whether the batch
took effect is unknown to them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["BatchAborted", "NaturalBatcher"]

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class BatchAborted(Exception):
    """The call that was flushing this item's batch was cancelled mid-flush."""


class NaturalBatcher(Generic[T, R]):
    """See the module docstring."""

    def __init__(self, flush: Flush[T, R], *, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self.max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._turn: asyncio.Future[None] | None = None  # set while a flush runs
        self.batches = 0  # flushes so far
        self.items = 0  # items flushed so far

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, done))
        while not done.done():
            if self._turn is not None:  # someone is flushing: wait for our answer or the turn
                await asyncio.wait((done, self._turn), return_when=asyncio.FIRST_COMPLETED)
                continue
            self._turn = loop.create_future()
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                await self._run(batch)
            finally:
                turn, self._turn = self._turn, None
                turn.set_result(None)
        return done.result()

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            outcomes = await self._flush([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"flush answered {len(outcomes)} of {len(batch)} items")
        except asyncio.CancelledError:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(BatchAborted("the flushing call was cancelled"))
            raise
        except Exception as exc:  # noqa: BLE001 - the batch's failure is each item's failure
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), outcome in zip(batch, outcomes, strict=True):
            if fut.done():
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
