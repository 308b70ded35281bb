"""The order book: the freshest valid offer of every provider, queryable fast.

One entry per provider address; a newer nonce replaces the old offer, an
older nonce is refused, an equal nonce with different content is refused as
equivocation (the same bytes again only refreshes). Expired offers are pruned.

The book holds at most ``max_entries`` providers. When it is full, a new
provider's offer evicts the provider heard from least recently (an offer
added, replaced or repeated counts as heard): offers are free to sign with
fresh keys, so refusing newcomers instead would let one peer fill the book
for a whole offer lifetime and lock every later provider out, while a
provider that republishes stays as long as the flood does not outpace it.

Queries filter by device class, GPU memory, GPU count, price, sandbox tier and
stake (through a pluggable ``stake_lookup(provider) -> int``, called only for
candidates that pass every other filter) and return the cheapest first. Each
device class keeps its rows sorted by price, as does the whole book, so a
query walks rows in price order and stops at ``limit`` matches.

The book holds only validated offers (the gossip validator checks signature,
source peer, chain and expiry first) and is guarded by a lock, so asyncio code
may query it directly without a trip through the trio bridge.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import enum
import heapq
import threading
import time
from collections.abc import Callable

from protocol.messages import Offer

__all__ = ["AddResult", "BookEntry", "OrderBook"]


class AddResult(enum.Enum):
    """What :meth:`OrderBook.add` did."""

    ADDED = "added"
    REPLACED = "replaced"  # newer nonce
    REFRESHED = "refreshed"  # the same offer again
    STALE = "stale"  # older nonce than the one held
    CONFLICT = "conflict"  # same nonce, different content (equivocation)
    EXPIRED = "expired"


@dataclasses.dataclass(frozen=True, slots=True)
class BookEntry:
    """An offer in the book, with the peer it came from."""

    offer: Offer
    peer_id: str
    received_at: float


# row: (price, provider, gpu_memory_mib, sandbox_tier, gpu_count, expiry, entry)
_Row = tuple[int, bytes, int, int, int, int, BookEntry]


class OrderBook:
    """See the module docstring."""

    def __init__(
        self,
        *,
        stake_lookup: Callable[[bytes], int] | None = None,
        clock: Callable[[], float] = time.time,
        max_entries: int = 100_000,
    ) -> None:
        self._stake_lookup = stake_lookup
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._by_provider: dict[bytes, _Row] = {}
        self._all: list[_Row] = []
        self._by_class: dict[str, list[_Row]] = {}
        self._expiries: list[tuple[int, bytes, int]] = []
        # providers, least recently heard from first
        self._heard: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.evicted = 0  # providers evicted to make room

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_provider)

    def get(self, provider: bytes) -> BookEntry | None:
        """The current entry of ``provider``, if any and not expired."""
        with self._lock:
            row = self._by_provider.get(provider)
        if row is None or row[5] <= self._clock():
            return None
        return row[6]

    # ------------------------------------------------------------ updates
    def add(self, offer: Offer, peer_id: str) -> AddResult:
        """Insert or replace ``offer`` (already validated)."""
        now = self._clock()
        if offer.expiry <= now:
            return AddResult.EXPIRED
        with self._lock:
            self._prune_locked(now)
            old = self._by_provider.get(offer.provider)
            result = AddResult.ADDED
            if old is not None:
                held = old[6].offer
                if offer.nonce < held.nonce:
                    return AddResult.STALE
                if offer.nonce == held.nonce:
                    if offer != held:
                        return AddResult.CONFLICT
                    self._heard.move_to_end(offer.provider)
                    return AddResult.REFRESHED
                self._remove_locked(old)
                result = AddResult.REPLACED
            elif len(self._by_provider) >= self._max_entries:
                self._remove_locked(self._by_provider[next(iter(self._heard))])
                self.evicted += 1
            caps = offer.capabilities
            row: _Row = (
                offer.price_per_gpu_second,
                offer.provider,
                caps.gpu_memory_mib,
                caps.sandbox_tier,
                caps.gpu_count,
                offer.expiry,
                BookEntry(offer, peer_id, now),
            )
            self._by_provider[offer.provider] = row
            self._heard[offer.provider] = None
            bisect.insort(self._all, row, key=_sort_key)
            bisect.insort(self._by_class.setdefault(caps.device_class, []), row, key=_sort_key)
            heapq.heappush(self._expiries, (offer.expiry, offer.provider, offer.nonce))
            return result

    def remove(self, provider: bytes) -> bool:
        """Drop ``provider``'s offer; True if there was one."""
        with self._lock:
            row = self._by_provider.get(provider)
            if row is None:
                return False
            self._remove_locked(row)
            return True

    def prune(self) -> int:
        """Drop expired offers; returns how many."""
        with self._lock:
            return self._prune_locked(self._clock())

    def _prune_locked(self, now: float) -> int:
        dropped = 0
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, provider, nonce = heapq.heappop(heap)
            row = self._by_provider.get(provider)
            if row is not None and row[6].offer.nonce == nonce:
                self._remove_locked(row)
                dropped += 1
        return dropped

    def _remove_locked(self, row: _Row) -> None:
        del self._by_provider[row[1]]
        del self._heard[row[1]]
        _delete(self._all, row)
        cls = row[6].offer.capabilities.device_class
        rows = self._by_class[cls]
        _delete(rows, row)
        if not rows:
            del self._by_class[cls]

    # ------------------------------------------------------------ queries
    def query(
        self,
        *,
        device_class: str | None = None,
        min_gpu_memory_mib: int = 0,
        min_gpu_count: int = 0,
        max_price: int | None = None,
        min_sandbox_tier: int = 0,
        min_stake: int = 0,
        limit: int = 20,
    ) -> list[BookEntry]:
        """Matching offers, cheapest first, at most ``limit``."""
        now = self._clock()
        out: list[BookEntry] = []
        if limit <= 0:
            return out
        lookup = self._stake_lookup if min_stake > 0 else None
        if min_stake > 0 and lookup is None:
            return out  # no way to know anyone's stake: nobody qualifies
        with self._lock:
            rows = self._all if device_class is None else self._by_class.get(device_class, [])
            end = len(rows)
            if max_price is not None:
                end = bisect.bisect_right(rows, max_price, key=_price)
            for i in range(end):
                row = rows[i]
                if (
                    row[2] < min_gpu_memory_mib
                    or row[3] < min_sandbox_tier
                    or row[4] < min_gpu_count
                    or row[5] <= now
                ):
                    continue
                if lookup is not None and lookup(row[1]) < min_stake:
                    continue
                out.append(row[6])
                if len(out) >= limit:
                    break
        return out


def _sort_key(row: _Row) -> tuple[int, bytes]:
    return (row[0], row[1])


def _price(row: _Row) -> int:
    return row[0]


def _delete(rows: list[_Row], row: _Row) -> None:
    key = _sort_key(row)
    i = bisect.bisect_left(rows, key, key=_sort_key)
    if i < len(rows) and rows[i][1] == row[1] and rows[i][0] == row[0]:
        del rows[i]
