"""Small pieces shared by the long-running roles' task groups (provider, verifier)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["Stop", "sleep_or_stop", "wait_within"]

T = TypeVar("T")


class Stop(Exception):
    """Raised inside a role's task group to cancel its tasks on shutdown."""


async def wait_within(aw: Awaitable[T], seconds: float | None) -> T:
    """``await aw``, raising :class:`TimeoutError` after ``seconds`` (None: never).

    What ``asyncio.wait_for`` does, without its Python 3.11 flaw: there, a
    cancellation that arrives in the same loop step as ``aw``'s result is dropped
    (``wait_for`` returns the result and the task runs on as if never cancelled),
    which left a stopping daemon deaf to its cancellation. ``asyncio.timeout``
    (used here) keeps it; on a timeout ``aw`` is cancelled, as by ``wait_for``.
    """
    async with asyncio.timeout(seconds):
        return await aw


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when it is set."""
    with contextlib.suppress(TimeoutError):
        await wait_within(stop.wait(), seconds)
    return stop.is_set()
