"""Per-peer abuse control: rate limits, stream slots, strikes and temporary bans.

Used from the trio thread only. Every refusal is logged and counted in
:class:`~node.p2p.metrics.P2PMetrics`; nothing is dropped silently. When a
peer collects ``strikes_to_ban`` strikes (garbage frames, invalid signatures,
spoofed offers ...) it is banned for ``ban_seconds``: the ``on_ban`` callback
(set by the node) disconnects it and blacklists it in pubsub, and the node's
connection notifee closes any new connection from it while the ban lasts.

Its tables are keyed by peer id, and peer ids are free: :meth:`PeerGuard.sweep`
(called every second by the node) forgets what no longer matters (a rate
bucket that has refilled, a ban that has ended, strikes older than
``ban_seconds``), and strikes are kept for at most :data:`MAX_STRIKE_PEERS`
peers (the least recently struck is forgotten first).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator

from node.p2p.config import Limits
from node.p2p.metrics import P2PMetrics

__all__ = ["MAX_STRIKE_PEERS", "PeerGuard", "Refused", "TokenBucket"]

log = logging.getLogger(__name__)

#: Peers whose strikes are remembered at once (the least recently struck go first).
MAX_STRIKE_PEERS = 65_536
#: Rate buckets kept at once; past that all are forgotten (sweeping keeps it far below).
MAX_BUCKETS = 100_000


class Refused(Exception):
    """A peer's request was refused by an abuse limit (already logged and counted)."""


@dataclasses.dataclass(slots=True)
class TokenBucket:
    """Classic token bucket; ``rate`` tokens per second up to ``burst``."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if available."""
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def full(self, now: float) -> bool:
        """True once the bucket has refilled: forgetting it then changes nothing."""
        return self.tokens < 0 or self.tokens + (now - self.stamp) * self.rate >= self.burst


class PeerGuard:
    """Rate limits, concurrency slots, strikes and bans, keyed by peer id text."""

    def __init__(
        self,
        limits: Limits,
        metrics: P2PMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._streams: dict[str, int] = {}
        self._blobs: dict[str, int] = {}
        self._blobs_total = 0
        self._strikes: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self._banned: dict[str, float] = {}
        self.on_ban: Callable[[str], None] | None = None

    # ------------------------------------------------------------ bans
    def is_banned(self, peer: str) -> bool:
        """True while ``peer`` is banned."""
        until = self._banned.get(peer)
        if until is None:
            return False
        if self._clock() >= until:
            del self._banned[peer]
            self._strikes.pop(peer, None)
            log.info("ban of %s expired", peer)
            return False
        return True

    def ban(self, peer: str, reason: str) -> None:
        """Ban ``peer`` for ``ban_seconds`` and tell the node to disconnect it."""
        already = self.is_banned(peer)
        self._banned[peer] = self._clock() + self.limits.ban_seconds
        if already:
            return
        self.metrics.inc("peers_banned", reason=reason)
        log.warning("banning peer %s for %.0f s: %s", peer, self.limits.ban_seconds, reason)
        if self.on_ban is not None:
            self.on_ban(peer)

    def strike(self, peer: str, reason: str) -> bool:
        """Record misbehaviour; ban at the threshold. True if the peer is now banned."""
        self.metrics.inc("peer_strikes", reason=reason)
        count = self._strikes.pop(peer, (0, 0.0))[0] + 1
        self._strikes[peer] = (count, self._clock())
        while len(self._strikes) > MAX_STRIKE_PEERS:
            self._strikes.popitem(last=False)
        log.info("strike %d/%d for %s: %s", count, self.limits.strikes_to_ban, peer, reason)
        if count >= self.limits.strikes_to_ban:
            self.ban(peer, reason)
            return True
        return False

    def strikes(self, peer: str) -> int:
        """Current strike count of ``peer``."""
        return self._strikes.get(peer, (0, 0.0))[0]

    def tracked(self) -> int:
        """Entries in the guard's per-peer tables (buckets, strikes, bans)."""
        return len(self._buckets) + len(self._strikes) + len(self._banned)

    def sweep(self) -> None:
        """Forget refilled rate buckets, ended bans and strikes older than
        ``ban_seconds`` (none of them changes a decision any more)."""
        now = self._clock()
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
        for peer in [p for p, until in self._banned.items() if now >= until]:
            self.is_banned(peer)  # drops the ban and the peer's strikes, logs it
        cutoff = now - self.limits.ban_seconds
        while self._strikes:
            peer, (_, stamp) = next(iter(self._strikes.items()))
            if stamp > cutoff:
                break
            del self._strikes[peer]

    # ------------------------------------------------------------ rates
    def allow(self, peer: str, kind: str) -> bool:
        """Take one token from ``peer``'s bucket for ``kind`` ("request" or "gossip")."""
        if self.is_banned(peer):
            self.metrics.inc("refused_banned", kind=kind)
            return False
        key = (peer, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            if kind == "gossip":
                bucket = TokenBucket(self.limits.gossip_per_second, self.limits.gossip_burst)
            else:
                bucket = TokenBucket(self.limits.requests_per_second, self.limits.request_burst)
            if len(self._buckets) >= MAX_BUCKETS:  # only if sweeping cannot keep up
                self._buckets.clear()
            self._buckets[key] = bucket
        if bucket.take(self._clock()):
            return True
        self.metrics.inc("refused_rate", kind=kind)
        log.info("rate limit: refusing %s from %s", kind, peer)
        return False

    # ------------------------------------------------------------ slots
    @contextlib.contextmanager
    def stream_slot(self, peer: str) -> Iterator[None]:
        """Hold one inbound-stream slot of ``peer``; raise :class:`Refused` if none is free."""
        if self.is_banned(peer):
            self.metrics.inc("refused_banned", kind="stream")
            raise Refused(f"{peer} is banned")
        active = self._streams.get(peer, 0)
        if active >= self.limits.max_streams_per_peer:
            self.metrics.inc("refused_streams")
            log.info("stream limit: refusing a stream from %s (%d open)", peer, active)
            raise Refused("too many streams")
        self._streams[peer] = active + 1
        try:
            yield
        finally:
            left = self._streams[peer] - 1
            if left:
                self._streams[peer] = left
            else:
                del self._streams[peer]

    @contextlib.contextmanager
    def blob_slot(self, peer: str) -> Iterator[None]:
        """Hold one blob-transfer slot (global and per peer); raise :class:`Refused` if full."""
        mine = self._blobs.get(peer, 0)
        if (
            self._blobs_total >= self.limits.max_blob_transfers
            or mine >= self.limits.max_blob_transfers_per_peer
        ):
            self.metrics.inc("refused_blob_busy")
            log.info("blob limit: refusing a transfer to %s (%d/%d)", peer, mine, self._blobs_total)
            raise Refused("too many blob transfers")
        self._blobs[peer] = mine + 1
        self._blobs_total += 1
        try:
            yield
        finally:
            self._blobs_total -= 1
            left = self._blobs[peer] - 1
            if left:
                self._blobs[peer] = left
            else:
                del self._blobs[peer]
