"""``collect_blobs``: a role's collection task runs soon after its store crosses the
bound (not only every interval), keeps what ``keep()`` names, and ends with ``stop``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from node.blobgc import collect_blobs
from node.p2p.blobstore import BlobStore


def test_collection_follows_a_crossing_of_the_bound_and_keeps_what_is_owed(
    tmp_path: Path,
) -> None:
    store = BlobStore(tmp_path, max_bytes=25_000)
    owed: set[bytes] = set()
    passes: list[tuple[int, int]] = []

    async def scenario() -> None:
        stop, collected = asyncio.Event(), asyncio.Event()

        def on_collect(count: int, freed: int) -> None:
            passes.append((count, freed))
            collected.set()

        task = asyncio.create_task(
            collect_blobs(
                store, lambda: owed, stop, interval_s=3600, check_s=0.05, on_collect=on_collect
            )
        )
        first = store.put_bytes(b"1" * 10_000)
        owed.add(first.digest)  # the oldest, but still owed
        await asyncio.sleep(0.2)
        assert passes == []  # under the bound: no pass before the hour is up
        later = [store.put_bytes(bytes([i]) * 10_000) for i in range(2, 5)]  # 40 kB: over
        await asyncio.wait_for(collected.wait(), 5)
        assert passes == [(2, 20_000)]  # down to the low watermark (22.5 kB)
        assert store.usage() == (2, 20_000)
        assert store.has(first) and store.has(later[-1])
        stop.set()
        await asyncio.wait_for(task, 1)

    asyncio.run(scenario())
