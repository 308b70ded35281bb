"""The order book: replacement by nonce, expiry, queries, stake lookup."""

from __future__ import annotations

import time

from conftest import make_caps, make_offer

from node.p2p.orderbook import AddResult, OrderBook
from protocol.identity import Identity


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_replacement_by_nonce_and_equivocation() -> None:
    book = OrderBook()
    ident = Identity.generate()
    o1 = make_offer(ident, nonce=1, price=50)
    assert book.add(o1, "p") is AddResult.ADDED
    assert book.add(o1, "p") is AddResult.REFRESHED
    assert book.add(make_offer(ident, nonce=1, price=60), "p") is AddResult.CONFLICT
    o2 = make_offer(ident, nonce=2, price=70)
    assert book.add(o2, "p") is AddResult.REPLACED
    assert book.add(o1, "p") is AddResult.STALE
    assert len(book) == 1
    assert [e.offer for e in book.query()] == [o2]
    assert book.query(max_price=69) == []
    assert book.remove(ident.address) and len(book) == 0 and book.query() == []


def test_expiry() -> None:
    clock = Clock()
    book = OrderBook(clock=clock)
    ident = Identity.generate()
    now = int(clock.now)
    assert book.add(make_offer(ident, expiry=now - 1), "p") is AddResult.EXPIRED
    assert book.add(make_offer(ident, expiry=now + 10), "p") is AddResult.ADDED
    assert len(book.query()) == 1
    clock.now += 11
    assert book.query() == []  # filtered even before pruning
    assert book.get(ident.address) is None
    assert book.prune() == 1 and len(book) == 0


def test_queries_filter_and_sort_by_price() -> None:
    stakes: dict[bytes, int] = {}
    book = OrderBook(stake_lookup=lambda a: stakes.get(a, 0))
    offers = []
    for i in range(40):
        ident = Identity.generate()
        cls = ["cpu", "nvidia-h200", "nvidia-a100"][i % 3]
        caps = make_caps(cls, memory=(i % 4) * 20_000, tier=i % 4)
        offer = make_offer(ident, price=1000 - i * 10, caps=caps)
        offers.append(offer)
        stakes[ident.address] = i * 100
        assert book.add(offer, ident.peer_id) is AddResult.ADDED

    def brute(**f: int | str) -> list[bytes]:
        rows = [
            o
            for o in offers
            if o.capabilities.device_class == f.get("device_class", o.capabilities.device_class)
            and o.capabilities.gpu_memory_mib >= int(f.get("min_gpu_memory_mib", 0))
            and o.capabilities.sandbox_tier >= int(f.get("min_sandbox_tier", 0))
            and o.price_per_gpu_second <= int(f.get("max_price", 10**9))
            and stakes[o.provider] >= int(f.get("min_stake", 0))
        ]
        rows.sort(key=lambda o: (o.price_per_gpu_second, o.provider))
        return [o.provider for o in rows][: int(f.get("limit", 20))]

    cases: list[dict[str, int | str]] = [
        {},
        {"device_class": "nvidia-h200"},
        {"device_class": "cpu", "min_sandbox_tier": 2},
        {"min_gpu_memory_mib": 40_000, "max_price": 800},
        {"min_stake": 2500, "limit": 5},
        {"device_class": "nvidia-a100", "min_stake": 1000, "max_price": 900, "limit": 100},
        {"device_class": "tpu"},
    ]
    for f in cases:
        got = [e.offer.provider for e in book.query(**f)]  # type: ignore[arg-type]
        assert got == brute(**f), f


def test_stake_filter_without_lookup_matches_nobody() -> None:
    book = OrderBook()
    ident = Identity.generate()
    book.add(make_offer(ident), "p")
    assert book.query(min_stake=1) == []
    assert len(book.query()) == 1


def test_a_full_book_evicts_the_provider_heard_from_least_recently() -> None:
    """Offers are free to sign with fresh keys: a flood of forged providers must not lock
    out a real one (the full book refused every newcomer for a whole offer lifetime),
    and the book never holds more than its bound."""
    cap = 20
    book = OrderBook(max_entries=cap)
    far = int(time.time()) + 24 * 3600  # the longest lifetime gossip accepts
    flood = [make_offer(Identity.generate(), expiry=far) for _ in range(cap + 10)]
    for offer in flood[:cap]:
        assert book.add(offer, "p") is AddResult.ADDED
    honest = make_offer(Identity.generate(), price=50)
    assert book.add(honest, "p") is AddResult.ADDED  # the book is full of forgeries
    assert book.get(honest.provider) is not None and len(book) == cap
    assert book.get(flood[0].provider) is None  # heard from least recently: evicted
    for i, offer in enumerate(flood[cap:]):  # more forgeries, while honest republishes
        assert book.add(offer, "p") is AddResult.ADDED
        if i % 5 == 0:
            assert book.add(honest, "p") is AddResult.REFRESHED
        assert len(book) <= cap
    assert [e.offer for e in book.query(limit=1)] == [honest]
    assert book.evicted == 11 and len(book) == cap
    # a provider that stops republishing goes once the book has turned over
    for _ in range(cap):
        book.add(make_offer(Identity.generate(), expiry=far), "p")
    assert book.get(honest.provider) is None and len(book) == cap
