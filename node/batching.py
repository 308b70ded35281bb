"""Natural batching: concurrent calls that arrive while one batch is in flight go in the next.

A :class:`NaturalBatcher` turns many concurrent ``await batcher(item)`` calls into
few ``flush(items)`` calls without a timer: an item that arrives while nothing is
in flight is flushed at once (a lone call pays no wait), and whatever queues up
while a flush is running goes out as the next batch, up to ``max_batch`` items.
Throughput then grows with load while a single call's latency stays that of the
unbatched call. With ``linger_s``, a flush that follows one during which items
queued up (the stage is loaded) first waits that long for more to join, for
stages whose cost per batch dwarfs their cost per item; a lone call on an
unloaded batcher never waits.

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
from functools import partial
from typing import Generic, TypeVar

__all__ = ["BatchAborted", "KeyedBatchers", "NaturalBatcher"]

K = TypeVar("K")
T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class BatchAborted(Exception):
    """The call that was flushing this item's batch was cancelled mid-flush."""


class NaturalBatcher(Generic[T, R]):
    """See the module docstring."""

    def __init__(self, flush: Flush[T, R], *, max_batch: int = 32, linger_s: float = 0.0) -> None:
        if max_batch < 1 or linger_s < 0:
            raise ValueError("max_batch must be at least 1 and linger_s at least 0")
        self._flush = flush
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._loaded = False  # items arrived while the last flush ran
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._turn: asyncio.Future[None] | None = None  # set while a flush runs
        self.batches = 0  # flushes so far
        self.items = 0  # items flushed so far

    @property
    def idle(self) -> bool:
        """Nothing queued and no flush running."""
        return not self._queue and self._turn is None

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        entry = (item, done)
        self._queue.append(entry)
        try:
            return await self._serve(done, loop)
        except asyncio.CancelledError:
            if entry in self._queue:  # not flushed yet: nobody does the work for nothing
                self._queue.remove(entry)
            raise

    async def _serve(self, done: asyncio.Future[R], loop: asyncio.AbstractEventLoop) -> R:
        while not done.done():
            if self._turn is not None:  # someone is flushing: wait for our answer or the turn
                await asyncio.wait((done, self._turn), return_when=asyncio.FIRST_COMPLETED)
                continue
            self._turn = loop.create_future()
            try:
                if self._loaded and self.linger_s and len(self._queue) < self.max_batch:
                    await asyncio.sleep(self.linger_s)  # under load: let the batch fill
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                await self._run(batch)
                self._loaded = bool(self._queue)
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


class KeyedBatchers(Generic[K, T, R]):
    """One :class:`NaturalBatcher` per key (a peer; a tenant and its model): items
    only batch with items of the same key. ``flush(key, items)`` as above. Idle
    batchers are dropped once more than ``max_keys`` exist (bounded memory)."""

    def __init__(
        self,
        flush: Callable[[K, list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = 32,
        max_keys: int = 1024,
        linger_s: float = 0.0,
    ) -> None:
        self._flush = flush
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.max_keys = max_keys
        self._by_key: dict[K, NaturalBatcher[T, R]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def __getitem__(self, key: K) -> NaturalBatcher[T, R]:
        return self._by_key[key]

    @property
    def batches(self) -> int:
        """Flushes so far by the batchers still kept."""
        return sum(b.batches for b in self._by_key.values())

    @property
    def items(self) -> int:
        """Items flushed so far by the batchers still kept."""
        return sum(b.items for b in self._by_key.values())

    async def __call__(self, key: K, item: T) -> R:
        batcher = self._by_key.get(key)
        if batcher is None:
            if len(self._by_key) >= self.max_keys:
                self._by_key = {k: b for k, b in self._by_key.items() if not b.idle}
            batcher = NaturalBatcher(
                partial(self._flush, key), max_batch=self.max_batch, linger_s=self.linger_s
            )
            self._by_key[key] = batcher
        return await batcher(item)
