"""Blob collection for a long-running role: keeps its blob store under ``max_bytes``.

A role (provider, client, verifier) runs :func:`collect_blobs` as a task it owns.
Every ``interval_s``, and within ``check_s`` of the store crossing its bound, it
snapshots what the role still owes or needs (``keep()``, on the event loop)
together with the store's use :meth:`~node.p2p.blobstore.BlobStore.mark`, then
deletes least recently used blobs outside that set in a worker thread
(:meth:`~node.p2p.blobstore.BlobStore.collect`). Work that starts after the
snapshot is safe: any blob it uses is newer than the mark.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection

from node.p2p.blobstore import BlobStore
from node.tasks import sleep_or_stop

__all__ = ["DEFAULT_COLLECT_INTERVAL_S", "collect_blobs"]

log = logging.getLogger("gpunet.blobgc")

#: Seconds between two periodic collections.
DEFAULT_COLLECT_INTERVAL_S = 30.0


async def collect_blobs(
    store: BlobStore,
    keep: Callable[[], Collection[bytes]],
    stop: asyncio.Event,
    *,
    interval_s: float = DEFAULT_COLLECT_INTERVAL_S,
    check_s: float = 1.0,
    on_collect: Callable[[int, int], None] | None = None,
) -> None:
    """Collect until ``stop`` is set (see the module docstring). ``on_collect(count,
    bytes)`` is told what each pass deleted. A store still over its bound after a
    pass (everything left is kept) is tried again only once it has grown, or at
    the next interval."""
    check_s = min(check_s, interval_s)
    last = time.monotonic()
    stuck_at: int | None = None  # the total a pass could not bring under the bound
    while not await sleep_or_stop(stop, check_s):
        _, total = store.usage()
        due = time.monotonic() - last >= interval_s
        if not due and not (store.over() and total != stuck_at):
            continue
        last = time.monotonic()
        pinned = frozenset(keep())
        mark = store.mark()  # the same step as the snapshot: nothing ran in between
        try:
            count, freed = await asyncio.to_thread(store.collect, pinned, unused_since=mark)
        except OSError as exc:  # a full or failing disk: log, try again later
            log.warning("blob collection failed: %s", exc)
            continue
        stuck_at = store.usage()[1] if store.over() else None
        if on_collect is not None:
            on_collect(count, freed)
