"""Offers seen on the gossip topic: kept bounded, queried by the order book and the API.

The store keeps what it is given; checking an offer's signature and that it
came from its provider's peer is the caller's job (p2p), done before ``put``.
Bounds: at most ``per_provider`` offers per provider (highest nonces kept)
and ``max_offers`` in all (expired ones go first, then the soonest to
expire).
"""

from __future__ import annotations

from typing import Any, Final

from node.store.db import Database
from node.store.records import (
    OfferRecord,
    StoreError,
    bytes_of,
    check_bytes,
    check_i64,
    check_u64,
    hex_of,
    u64_text,
)
from protocol.messages import Offer, encode

__all__ = ["Offers"]

_MAX_LIST: Final = 1000


class Offers:
    """The ``offers`` table."""

    def __init__(self, db: Database, *, max_offers: int = 10_000, per_provider: int = 8) -> None:
        if max_offers < 1 or per_provider < 1:
            raise ValueError("max_offers and per_provider must be positive")
        self._db = db
        self.max_offers = max_offers
        self.per_provider = per_provider

    def put(self, offer: Offer) -> bool:
        """Store an offer (validated by encoding it); False if it was already stored."""
        encoded = encode(offer)  # raises a DecodeError subclass on an invalid offer
        check_i64("expiry", offer.expiry)
        caps = offer.capabilities
        row = {
            "provider": hex_of(offer.provider),
            "nonce": u64_text("nonce", offer.nonce),
            "price": u64_text("price", offer.price_per_gpu_second),
            "expiry": offer.expiry,
            "device_class": caps.device_class,
            "gpu_model": caps.gpu_model,
            "sandbox_tier": caps.sandbox_tier,
            "client": hex_of(offer.client),
            "offer": encoded,
            "received_at": self._db.now_ms(),
        }
        with self._db.transaction() as db:
            cursor = db.execute(
                f"INSERT OR IGNORE INTO offers ({', '.join(row)}) "
                f"VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
            if cursor.rowcount == 0:
                return False
            db.execute(
                "DELETE FROM offers WHERE provider = ? AND nonce NOT IN "
                "(SELECT nonce FROM offers WHERE provider = ? ORDER BY nonce DESC LIMIT ?)",
                (row["provider"], row["provider"], self.per_provider),
            )
            excess = self._count() - self.max_offers
            if excess > 0:
                db.execute(
                    "DELETE FROM offers WHERE rowid IN "
                    "(SELECT rowid FROM offers ORDER BY expiry, received_at LIMIT ?)",
                    (excess,),
                )
            return True

    def get(self, provider: bytes, nonce: int) -> OfferRecord | None:
        """One stored offer."""
        check_bytes("provider", provider, 20)
        check_u64("nonce", nonce)
        rows = self._db.query(
            "SELECT * FROM offers WHERE provider = ? AND nonce = ?",
            (hex_of(provider), u64_text("nonce", nonce)),
        )
        return _offer(rows[0]) if rows else None

    def select(
        self,
        *,
        now: int,
        provider: bytes | None = None,
        device_class: str | None = None,
        min_tier: int | None = None,
        max_price: int | None = None,
        include_expired: bool = False,
        limit: int = 100,
    ) -> list[OfferRecord]:
        """Offers matching every given filter, cheapest first (``now`` in unix seconds)."""
        if not 1 <= limit <= _MAX_LIST:
            raise StoreError(f"limit must be in [1, {_MAX_LIST}]")
        where: list[str] = []
        params: list[Any] = []
        if not include_expired:
            check_i64("now", now)
            where.append("expiry > ?")
            params.append(now)
        if provider is not None:
            check_bytes("provider", provider, 20)
            where.append("provider = ?")
            params.append(hex_of(provider))
        if device_class is not None:
            where.append("device_class = ?")
            params.append(device_class)
        if min_tier is not None:
            where.append("sandbox_tier >= ?")
            params.append(int(min_tier))
        if max_price is not None:
            where.append("price <= ?")
            params.append(u64_text("max_price", max_price))
        sql = "SELECT * FROM offers"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._db.query(sql + " ORDER BY price, provider, nonce LIMIT ?", (*params, limit))
        return [_offer(r) for r in rows]

    def prune(self, now: int) -> int:
        """Delete offers expired at ``now`` (unix seconds); return how many."""
        check_i64("now", now)
        with self._db.transaction() as db:
            return db.execute("DELETE FROM offers WHERE expiry <= ?", (now,)).rowcount

    def _count(self) -> int:
        return int(self._db.query("SELECT count(*) AS n FROM offers")[0]["n"])


def _offer(r: dict[str, Any]) -> OfferRecord:
    return OfferRecord(
        provider=bytes_of(r["provider"]),
        nonce=int(r["nonce"]),
        price=int(r["price"]),
        expiry=r["expiry"],
        device_class=r["device_class"],
        gpu_model=r["gpu_model"],
        sandbox_tier=r["sandbox_tier"],
        client=bytes_of(r["client"]),
        encoded=r["offer"],
        received_at=r["received_at"],
    )
