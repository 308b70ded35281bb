"""Run blocking work (hashing a blob) in a thread that is joined before returning.

``trio.to_thread.run_sync`` keeps idle worker threads cached for a while after
use, which would outlive the node's shutdown; this helper starts one thread per
call and joins it, so a stopped node leaves no threads behind. The work itself
cannot be interrupted: cancellation waits for it to finish (hashing 256 MiB
takes ~0.2 s).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

import outcome
import trio

__all__ = ["run_in_thread"]

T = TypeVar("T")


async def run_in_thread(fn: Callable[[], T], name: str = "gpunet-worker") -> T:
    """``fn()`` in a fresh thread; its result or exception."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    box: list[outcome.Outcome[T]] = []

    def target() -> None:
        box.append(outcome.capture(fn))
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    with trio.CancelScope(shield=True):
        await done.wait()
    thread.join()
    return box[0].unwrap()
