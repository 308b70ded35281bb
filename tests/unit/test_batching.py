"""NaturalBatcher: a lone call goes at once; calls during a flush share the next one."""

from __future__ import annotations

import asyncio

import pytest

from node.batching import BatchAborted, NaturalBatcher


class Recorder:
    def __init__(self, fail_item: int | None = None, fail_all: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_item = fail_item
        self.fail_all = fail_all

    async def flush(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail_all:
            raise RuntimeError("whole batch failed")
        return [ValueError(f"bad {i}") if i == self.fail_item else i * 10 for i in items]


def test_lone_call_is_flushed_at_once_and_concurrent_calls_are_batched() -> None:
    async def main() -> None:
        rec = Recorder()
        batcher: NaturalBatcher[int, int] = NaturalBatcher(rec.flush, max_batch=4)
        assert await batcher(1) == 10
        assert rec.batches == [[1]]
        rec.gate.clear()  # the next flush stalls: everything that arrives meanwhile queues
        first = asyncio.ensure_future(batcher(2))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(batcher(i)) for i in range(3, 10)]
        await asyncio.sleep(0.01)
        assert rec.batches == [[1], [2]]
        rec.gate.set()
        assert await first == 20
        assert await asyncio.gather(*rest) == [i * 10 for i in range(3, 10)]
        # 7 waiting items at max_batch 4: two more flushes, in arrival order
        assert rec.batches == [[1], [2], [3, 4, 5, 6], [7, 8, 9]]
        assert (batcher.batches, batcher.items) == (4, 9)

    asyncio.run(main())


def test_per_item_errors_and_whole_batch_errors_reach_only_their_callers() -> None:
    async def main() -> None:
        rec = Recorder(fail_item=3)
        batcher: NaturalBatcher[int, int] = NaturalBatcher(rec.flush)
        rec.gate.clear()
        calls = [asyncio.ensure_future(batcher(i)) for i in range(1, 5)]
        await asyncio.sleep(0.01)
        rec.gate.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert outcomes[0] == 10 and outcomes[1] == 20 and outcomes[3] == 40
        assert isinstance(outcomes[2], ValueError) and str(outcomes[2]) == "bad 3"
        rec.fail_all = True
        with pytest.raises(RuntimeError, match="whole batch failed"):
            await batcher(5)
        rec.fail_all = False
        assert await batcher(6) == 60  # the batcher keeps working after a failed flush

    asyncio.run(main())


def test_a_cancelled_flusher_aborts_its_batch_and_hands_the_turn_on() -> None:
    async def main() -> None:
        rec = Recorder()
        batcher: NaturalBatcher[int, int] = NaturalBatcher(rec.flush, max_batch=2)
        rec.gate.clear()
        leader = asyncio.ensure_future(batcher(1))
        await asyncio.sleep(0)
        same_batch_later = [asyncio.ensure_future(batcher(i)) for i in (2, 3, 4)]
        await asyncio.sleep(0.01)
        assert rec.batches == [[1]]
        leader.cancel()
        await asyncio.sleep(0.01)
        rec.gate.set()
        # items 2..4 were queued, not in the cancelled batch: a new flusher takes them
        assert await asyncio.gather(*same_batch_later) == [20, 30, 40]
        assert leader.cancelled()
        rec.gate.clear()
        a = asyncio.ensure_future(batcher(5))
        await asyncio.sleep(0)
        b = asyncio.ensure_future(batcher(6))
        await asyncio.sleep(0)
        c = asyncio.ensure_future(batcher(7))  # queued behind the running flush of [5]
        await asyncio.sleep(0.01)
        a.cancel()
        await asyncio.sleep(0.01)
        rec.gate.set()
        assert await b == 60 and await c == 70
        rec.gate.clear()
        d = asyncio.ensure_future(batcher(8))
        await asyncio.sleep(0.01)
        e = asyncio.ensure_future(batcher(9))  # waits for the turn
        await asyncio.sleep(0.01)
        d.cancel()  # d's batch is [8] only: e is not in it and gets flushed next
        await asyncio.sleep(0.01)
        rec.gate.set()
        assert await e == 90
        with pytest.raises(ValueError):
            NaturalBatcher(rec.flush, max_batch=0)

    asyncio.run(main())


def test_items_in_a_cancelled_flush_get_batch_aborted() -> None:
    async def main() -> None:
        rec = Recorder()
        batcher: NaturalBatcher[int, int] = NaturalBatcher(rec.flush, max_batch=8)
        rec.gate.clear()
        a = asyncio.ensure_future(batcher(1))  # flushes [1] at once and stalls
        await asyncio.sleep(0.01)
        b = asyncio.ensure_future(batcher(2))
        await asyncio.sleep(0)
        c = asyncio.ensure_future(batcher(3))
        await asyncio.sleep(0.01)
        rec.gate.set()
        await a
        rec.gate.clear()
        await asyncio.sleep(0.01)  # b's caller took the turn and flushes [2, 3]
        assert rec.batches == [[1], [2, 3]]
        b.cancel()
        with pytest.raises(BatchAborted):
            await c
        assert b.cancelled()
        rec.gate.set()
        assert await batcher(4) == 40  # the turn was handed back

    asyncio.run(main())


def test_linger_only_under_load_and_keys_batch_apart() -> None:
    from node.batching import KeyedBatchers

    async def main() -> None:
        rec = Recorder()
        batcher: NaturalBatcher[int, int] = NaturalBatcher(rec.flush, linger_s=0.05)
        loop = asyncio.get_running_loop()
        t = loop.time()
        assert await batcher(1) == 10
        assert loop.time() - t < 0.04  # a lone call on an idle batcher never lingers
        rec.gate.clear()
        first = asyncio.ensure_future(batcher(2))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher(3))  # queued during the flush: load
        await asyncio.sleep(0.01)
        rec.gate.set()
        await first
        late = [asyncio.ensure_future(batcher(i)) for i in (4, 5)]  # joins during the linger
        await asyncio.sleep(0)
        assert await second == 30 and await asyncio.gather(*late) == [40, 50]
        assert rec.batches[-1] == [3, 4, 5]
        with pytest.raises(ValueError):
            NaturalBatcher(rec.flush, linger_s=-1)

        seen: list[tuple[str, list[int]]] = []

        async def flush(key: str, items: list[int]) -> list[int]:
            seen.append((key, list(items)))
            await asyncio.sleep(0.01)
            return [len(key) * i for i in items]

        keyed: KeyedBatchers[str, int, int] = KeyedBatchers(flush, max_keys=2)
        outs = await asyncio.gather(keyed("a", 1), keyed("bb", 1), keyed("a", 2), keyed("bb", 3))
        assert outs == [1, 2, 2, 6]
        assert sorted(seen) == [("a", [1]), ("a", [2]), ("bb", [1]), ("bb", [3])]
        assert (keyed.batches, keyed.items) == (4, 4) and len(keyed) == 2
        assert await keyed("ccc", 1) == 3  # a third key: the idle batchers are dropped
        assert len(keyed) == 1 and keyed["ccc"].batches == 1

    asyncio.run(main())


def test_a_cancelled_caller_still_queued_is_never_flushed() -> None:
    async def main() -> None:
        rec = Recorder()
        batcher: NaturalBatcher[int, int] = NaturalBatcher(rec.flush)
        rec.gate.clear()
        first = asyncio.ensure_future(batcher(1))  # flushing, stalled
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher(2))
        kept = asyncio.ensure_future(batcher(3))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        rec.gate.set()
        assert await first == 10 and await kept == 30
        assert gone.cancelled()
        assert rec.batches == [[1], [3]]
        assert batcher.idle

    asyncio.run(main())
