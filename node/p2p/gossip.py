"""Offer gossip on ``/gpunet/offers/1``: router tuning, validator, paced publisher.

* :func:`make_router` — GossipSub (meshsub 1.2/1.1/1.0) with a 1 s heartbeat
  (the library default is 120 s) and the library's own spam limiter disabled:
  it drops silently above 10 msg/s; our validator rate-limits per forwarder
  instead, with a log line and a counter.
* :class:`OfferValidator` — the topic validator. A message is accepted only if
  it fits the size cap, decodes strictly as an :class:`~protocol.messages.Offer`,
  its ``provider`` is the address of the message's *origin* peer (``from``,
  whose signature pubsub's strict signing already checked), its EIP-712
  signature verifies, it is for this node's chain id and contract, not expired,
  not too far in the future, and not older than the nonce the book holds.
  Malicious failures (garbage, bad signature, spoofed provider) strike the
  forwarder (:class:`~node.p2p.guard.PeerGuard` bans it at the threshold);
  benign ones (expired, other chain, stale) are only counted.
* :class:`OfferPublisher` — our pacing/back-pressure: publishes go through a
  bounded queue drained at ``publish_per_second``; a full queue raises
  :class:`PublishQueueFull` at the caller instead of losing the offer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from node.p2p.config import P2PConfig
from node.p2p.guard import PeerGuard
from node.p2p.metrics import P2PMetrics
from node.p2p.orderbook import AddResult, OrderBook
from protocol.errors import BadSignature, DecodeError, IdentityError
from protocol.identity import address_from_peer_id
from protocol.messages import Offer, decode_as, encode

__all__ = [
    "OFFERS_TOPIC",
    "OfferPublisher",
    "OfferValidator",
    "PublishQueueFull",
    "make_router",
]

log = logging.getLogger(__name__)

#: gossipsub topic of signed offers; the trailing number is the wire version
OFFERS_TOPIC = "/gpunet/offers/1"


class PublishQueueFull(Exception):
    """The paced publish queue is full: the offer was NOT queued (retry later)."""


def make_router(config: P2PConfig) -> GossipSub:
    """GossipSub tuned for offer gossip (see module docstring)."""
    degree, low, high = config.gossip_degree
    return GossipSub(
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=degree,
        degree_low=low,
        degree_high=high,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=config.heartbeat_interval,
        spam_protection_enabled=False,
        eclipse_protection_enabled=config.eclipse_protection,
    )


class OfferValidator:
    """Synchronous pubsub topic validator for offers (see module docstring)."""

    def __init__(
        self,
        config: P2PConfig,
        book: OrderBook,
        guard: PeerGuard,
        metrics: P2PMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.book = book
        self.guard = guard
        self.metrics = metrics
        self._clock = clock

    def _reject(self, forwarder: str, reason: str, *, malicious: bool) -> bool:
        self.metrics.inc("gossip_rejected", reason=reason)
        log.info("gossip: rejected an offer forwarded by %s: %s", forwarder, reason)
        if malicious:
            self.guard.strike(forwarder, f"gossip:{reason}")
        return False

    def __call__(self, forwarder_id: ID, msg: rpc_pb2.Message) -> bool:
        forwarder = forwarder_id.to_base58()
        if not self.guard.allow(forwarder, "gossip"):
            self.metrics.inc("gossip_rejected", reason="rate_limited")
            return False
        if len(msg.data) > Offer.MAX_BYTES:
            return self._reject(forwarder, "oversized", malicious=True)
        try:
            offer = decode_as(msg.data, Offer)
        except DecodeError as exc:
            log.debug("undecodable offer: %s", exc)
            return self._reject(forwarder, "undecodable", malicious=True)
        try:
            origin = address_from_peer_id(bytes(msg.from_id))
        except IdentityError:
            return self._reject(forwarder, "origin_not_secp256k1", malicious=True)
        if offer.provider != origin:
            return self._reject(forwarder, "provider_not_origin", malicious=True)
        if offer.chain_id != self.config.chain_id or offer.contract != self.config.contract:
            return self._reject(forwarder, "wrong_chain", malicious=False)
        now = self._clock()
        if offer.expiry <= now:
            return self._reject(forwarder, "expired", malicious=False)
        if offer.expiry > now + self.config.limits.max_offer_ttl:
            return self._reject(forwarder, "expiry_too_far", malicious=False)
        held = self.book.get(offer.provider)
        if held is not None and offer.nonce < held.offer.nonce:
            return self._reject(forwarder, "stale_nonce", malicious=False)
        try:
            offer.verify()
        except BadSignature:
            return self._reject(forwarder, "bad_signature", malicious=True)
        self.metrics.inc("gossip_accepted")
        return True


class OfferPublisher:
    """Paced, bounded publishing of offers (see module docstring)."""

    def __init__(self, pubsub: Pubsub, config: P2PConfig, metrics: P2PMetrics) -> None:
        self._pubsub = pubsub
        self._interval = 1.0 / config.publish_per_second
        self._metrics = metrics
        self._send, self._recv = trio.open_memory_channel[bytes](config.publish_queue)

    def submit(self, offer: Offer) -> None:
        """Queue ``offer`` for publishing; raise :class:`PublishQueueFull` if the queue is full."""
        data = encode(offer)
        try:
            self._send.send_nowait(data)
        except trio.WouldBlock:
            self._metrics.inc("gossip_publish_refused", reason="queue_full")
            log.warning("gossip: publish queue full, offer nonce %d not queued", offer.nonce)
            raise PublishQueueFull("offer publish queue is full; retry later") from None
        self._metrics.inc("gossip_publish_queued")

    def queued(self) -> int:
        """Offers waiting to go out."""
        return self._send.statistics().current_buffer_used

    async def run(self) -> None:
        """Drain the queue at the configured rate (runs until cancelled)."""
        async with self._recv:
            async for data in self._recv:
                try:
                    await self._pubsub.publish(OFFERS_TOPIC, data)
                except Exception as exc:  # noqa: BLE001 - logged and counted, never silent
                    self._metrics.inc("gossip_publish_failed")
                    log.warning("gossip: publish failed: %r", exc)
                else:
                    self._metrics.inc("gossip_published")
                await trio.sleep(self._interval)


def apply_offer(
    book: OrderBook, metrics: P2PMetrics, msg: rpc_pb2.Message
) -> tuple[Offer, str, AddResult] | None:
    """Put a validated gossip message into the book; returns what happened."""
    try:
        offer = decode_as(msg.data, Offer)
    except DecodeError:  # cannot happen after validation; counted all the same
        metrics.inc("gossip_rejected", reason="undecodable_after_validation")
        return None
    peer = ID(bytes(msg.from_id)).to_base58()
    result = book.add(offer, peer)
    metrics.inc("book_updates", result=result.value)
    return offer, peer, result
