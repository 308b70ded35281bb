"""Offers seen on gossip, written to the node store for ``GET /v1/offers``.

The order book (:mod:`node.p2p.orderbook`) holds the validated offers in memory
for selection; the HTTP API reads the store. :class:`OfferRecorder` is the
P2P service's offer listener: it keeps new and replaced offers in a bounded
pending map (called on the event loop, so it never blocks), and the node's
follower loop calls :meth:`OfferRecorder.flush` to write them in one
transaction and drop expired ones.
"""

from __future__ import annotations

import asyncio
import logging
import time

from node.p2p.orderbook import AddResult
from node.store.store import Store
from protocol.errors import DecodeError
from protocol.messages import Offer

__all__ = ["OfferRecorder"]

log = logging.getLogger(__name__)

#: Offers waiting for the next flush; more are dropped (the order book still has them).
MAX_PENDING = 4096
#: Seconds between deletions of expired offers.
PRUNE_EVERY_S = 30.0


class OfferRecorder:
    """See the module docstring."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[tuple[bytes, int], Offer] = {}
        self._last_prune = 0.0
        self.recorded = 0  # offers written so far

    def __call__(self, offer: Offer, peer: str, result: AddResult) -> None:
        if result not in (AddResult.ADDED, AddResult.REPLACED):
            return
        if len(self._pending) < MAX_PENDING:
            self._pending[(offer.provider, offer.nonce)] = offer

    async def flush(self) -> int:
        """Write the pending offers (one transaction); prune expired ones now and then.
        A failed write is logged and dropped (the order book still has the offers)."""
        now = time.time()
        prune = now - self._last_prune > PRUNE_EVERY_S
        if not self._pending and not prune:
            return 0
        batch, self._pending = list(self._pending.values()), {}
        if prune:
            self._last_prune = now
        try:
            written = await asyncio.to_thread(self._write, batch, int(now) if prune else None)
        except Exception as exc:  # noqa: BLE001 - an index for the API: never stop the node
            log.warning("could not store %d offers: %s", len(batch), exc)
            return 0
        self.recorded += written
        return written

    def _write(self, batch: list[Offer], prune_at: int | None) -> int:
        written = 0
        with self.store.transaction():
            for offer in batch:
                try:
                    written += self.store.offers.put(offer)
                except (DecodeError, ValueError) as exc:  # validated by the book; be safe
                    log.info("offer from %s not stored: %s", offer.provider.hex(), exc)
            if prune_at is not None:
                self.store.offers.prune(prune_at)
        return written
