"""Offers from gossip reach the store (what ``GET /v1/offers`` reads), in one write."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from node.offers_seen import OfferRecorder
from node.p2p.orderbook import AddResult
from node.store.store import Store
from tests.node.factories import offer


def test_new_and_replaced_offers_are_written_others_are_not_and_expired_ones_go(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        seen = OfferRecorder(store)
        now = int(time.time())
        seen(offer(0, nonce=1), "peer", AddResult.ADDED)
        seen(offer(0, nonce=2), "peer", AddResult.REPLACED)
        seen(offer(1, nonce=1), "peer", AddResult.STALE)
        seen(offer(1, nonce=2), "peer", AddResult.CONFLICT)
        seen(offer(1, nonce=3), "peer", AddResult.REFRESHED)
        seen(offer(0, nonce=2), "peer", AddResult.ADDED)  # the same offer twice: once
        seen(offer(2, nonce=1, expiry=now - 1), "peer", AddResult.ADDED)
        assert asyncio.run(seen.flush()) == 3  # written; the first flush also prunes
        rows = store.offers.select(now=now, include_expired=True, limit=10)
        assert sorted((r.provider, r.nonce) for r in rows) == [
            (offer(0).provider, 1),
            (offer(0).provider, 2),
        ]
        assert asyncio.run(seen.flush()) == 0  # nothing pending
        assert seen.recorded == 3
