"""Small pieces shared by the long-running roles' task groups (provider, verifier)."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Stop", "sleep_or_stop"]


class Stop(Exception):
    """Raised inside a role's task group to cancel its tasks on shutdown."""


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
