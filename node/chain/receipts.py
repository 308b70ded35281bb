"""Waiting for a transaction someone else sent: its receipt, polled for a bounded time.

A peer tells us a transaction hash as it signs the transaction (a client's
``createJob`` notice, a provider's ``submitResult`` named in its result
manifest), so the receipt may not exist yet. :func:`receipt_soon` polls our own
chain node for it, every 0.5 ms at first and backing off, and gives up after a
bound the caller chooses: the hash is a hint from outside, and the chain
follower stays the authority when the wait ends empty.
"""

from __future__ import annotations

import asyncio
import time

from node.chain.rpc import Receipt, Rpc

__all__ = ["receipt_soon"]

FIRST_DELAY_S = 0.0005
FAST_POLLS_S = 0.010  # poll every FIRST_DELAY_S this long, then back off
MAX_DELAY_S = 0.25


async def receipt_soon(rpc: Rpc, tx_hash: bytes, within_s: float) -> Receipt | None:
    """The receipt of ``tx_hash``, or None if it is not mined within ``within_s``
    (:class:`~node.chain.errors.ChainError` if the node fails or answers junk)."""
    if len(tx_hash) != 32:
        raise ValueError("a transaction hash is 32 bytes")
    start = time.monotonic()
    deadline = start + within_s
    delay = FIRST_DELAY_S
    while True:
        receipt = await asyncio.to_thread(rpc.receipt, tx_hash)
        if receipt is not None or time.monotonic() + delay > deadline:
            return receipt
        await asyncio.sleep(delay)
        if time.monotonic() - start > FAST_POLLS_S:
            delay = min(delay * 2, MAX_DELAY_S)
