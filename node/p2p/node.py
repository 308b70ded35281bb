"""The trio side of a gpunet p2p node: host, pubsub, DHT, job and blob services.

:class:`P2PNode` owns every libp2p object and every background task (one
nursery, cancelled on shutdown). It runs inside the trio thread of
:class:`~node.p2p.bridge.TrioBridge`; asyncio code reaches it only through
:class:`~node.p2p.service.P2PService`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.exceptions import BaseLibp2pError
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from node.p2p.blobs import Authorizer, BlobService, deny_all
from node.p2p.blobstore import BlobStore
from node.p2p.config import P2PConfig
from node.p2p.gossip import (
    OFFERS_TOPIC,
    OfferPublisher,
    OfferValidator,
    PublishQueueFull,
    apply_offer,
    make_router,
)
from node.p2p.guard import PeerGuard
from node.p2p.host import build_host, parse_peer_addr
from node.p2p.jobs import CreatedHandler, JobRequestHandler, JobService, ResultHandler
from node.p2p.metrics import P2PMetrics
from node.p2p.orderbook import AddResult, OrderBook
from protocol.identity import Identity
from protocol.messages import Offer

__all__ = ["OfferCallback", "P2PNode"]

log = logging.getLogger(__name__)

#: called (in trio) for every offer the book took: (offer, origin peer, result)
OfferCallback = Callable[[Offer, str, AddResult], None]


class _BanNotifee(INotifee):
    """Closes new connections from banned peers (the guard decides)."""

    def __init__(self, node: P2PNode) -> None:
        self._node = node

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id.to_base58()
        if self._node.guard.is_banned(peer):
            self._node.metrics.inc("connections_refused_banned")
            log.info("closing a connection from banned peer %s", peer)
            self._node.disconnect_soon(peer)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


class P2PNode:
    """See the module docstring. Create, then ``await nursery.start(node.run)``."""

    def __init__(
        self,
        identity: Identity,
        config: P2PConfig,
        *,
        book: OrderBook | None = None,
        metrics: P2PMetrics | None = None,
        on_job_request: JobRequestHandler | None = None,
        on_result: ResultHandler | None = None,
        on_created: CreatedHandler | None = None,
        on_offer: OfferCallback | None = None,
        blob_store: BlobStore | None = None,
        authorize: Authorizer = deny_all,
    ) -> None:
        self.identity = identity
        self.config = config
        self.metrics = metrics if metrics is not None else P2PMetrics()
        self.book = book if book is not None else OrderBook()
        self.guard = PeerGuard(config.limits, self.metrics)
        self.guard.on_ban = self._on_ban
        self.on_offer = on_offer
        self._on_job_request = on_job_request
        self._on_result = on_result
        self._on_created = on_created
        self._nursery: trio.Nursery | None = None
        self._host: IHost | None = None
        self._pubsub: Pubsub | None = None
        self._dht: KadDHT | None = None
        self._publisher: OfferPublisher | None = None
        self._jobs: JobService | None = None
        self._blobs: BlobService | None = None
        self.blob_store = blob_store
        self._authorize = authorize
        self._blacklisted: set[str] = set()
        self._own_offer: Offer | None = None
        self.extensions: list[Callable[[P2PNode], Awaitable[None]]] = []

    # ------------------------------------------------------------ accessors
    @property
    def host(self) -> IHost:
        """The libp2p host (trio thread only)."""
        if self._host is None:
            raise RuntimeError("node is not running")
        return self._host

    @property
    def pubsub(self) -> Pubsub:
        """The pubsub service (trio thread only)."""
        if self._pubsub is None:
            raise RuntimeError("node is not running")
        return self._pubsub

    @property
    def jobs(self) -> JobService:
        """The job protocol service (trio thread only)."""
        if self._jobs is None:
            raise RuntimeError("node is not running")
        return self._jobs

    @property
    def blobs(self) -> BlobService:
        """The blob service (trio thread only); needs a ``blob_store``."""
        if self._blobs is None:
            raise RuntimeError("node is not running or has no blob store")
        return self._blobs

    @property
    def nursery(self) -> trio.Nursery:
        """The node's task nursery (trio thread only)."""
        if self._nursery is None:
            raise RuntimeError("node is not running")
        return self._nursery

    @property
    def peer_id(self) -> str:
        """This node's peer id text."""
        return self.identity.peer_id

    def addrs(self) -> list[str]:
        """Full ``/…/p2p/<id>`` listen addresses."""
        out = []
        for addr in self.host.get_addrs():
            text = str(addr)
            out.append(text if "/p2p/" in text else f"{text}/p2p/{self.peer_id}")
        return out

    # ------------------------------------------------------------ run
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start everything, report ``self`` through ``task_status``, run until cancelled."""
        cfg = self.config
        host = build_host(self.identity, cfg)
        router = make_router(cfg)
        pubsub = Pubsub(host, router, strict_signing=True)
        self._host, self._pubsub = host, pubsub
        listen = [Multiaddr(a) for a in cfg.listen_addrs]
        try:
            async with (
                host.run(listen),
                background_trio_service(pubsub),
                background_trio_service(router),
                self._maybe_dht(host),
                trio.open_nursery() as nursery,
            ):
                self._nursery = nursery
                await pubsub.wait_until_ready()
                validator = OfferValidator(cfg, self.book, self.guard, self.metrics)
                pubsub.set_topic_validator(OFFERS_TOPIC, validator, False)
                subscription = await pubsub.subscribe(OFFERS_TOPIC)
                self._publisher = OfferPublisher(pubsub, cfg, self.metrics)
                self._jobs = JobService(
                    host,
                    cfg,
                    self.guard,
                    self.metrics,
                    on_request=self._on_job_request,
                    on_result=self._on_result,
                    on_created=self._on_created,
                )
                self._jobs.install()
                if self.blob_store is not None:
                    self._blobs = BlobService(
                        host,
                        cfg,
                        self.blob_store,
                        guard=self.guard,
                        metrics=self.metrics,
                        authorize=self._authorize,
                    )
                    self._blobs.install(nursery)
                    await self._blobs.start(nursery)
                host.get_network().register_notifee(_BanNotifee(self))
                for extension in self.extensions:
                    await extension(self)
                nursery.start_soon(self._publisher.run)
                nursery.start_soon(self._pump_offers, subscription)
                nursery.start_soon(self._housekeeping)
                nursery.start_soon(self._republish)
                for addr in cfg.bootstrap:
                    nursery.start_soon(self._bootstrap, addr)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._jobs = None
            self._blobs = None
            self._host = self._pubsub = self._dht = None
            # py-libp2p's seen-message cache runs a sweeper thread nobody else stops
            pubsub.seen_messages.stop()

    @contextlib.asynccontextmanager
    async def _maybe_dht(self, host: IHost) -> AsyncIterator[None]:
        if not self.config.enable_dht:
            yield
            return
        dht = KadDHT(
            host,
            DHTMode.SERVER,
            max_peers_per_subnet=None if self.config.eclipse_protection else 0,
        )
        async with background_trio_service(dht):
            self._dht = dht
            yield

    async def _pump_offers(self, subscription: Any) -> None:
        while True:
            msg = await subscription.get()
            applied = apply_offer(self.book, self.metrics, msg)
            if applied is not None and self.on_offer is not None:
                self.on_offer(*applied)

    async def _housekeeping(self) -> None:
        while True:
            await trio.sleep(1.0)
            dropped = self.book.prune()
            if dropped:
                self.metrics.inc("book_expired", dropped)
            self.guard.sweep()
            for peer in list(self._blacklisted):
                if not self.guard.is_banned(peer):
                    self._blacklisted.discard(peer)
                    self.pubsub.remove_from_blacklist(ID.from_base58(peer))

    async def _republish(self) -> None:
        while True:
            await trio.sleep(self.config.republish_seconds)
            offer = self._own_offer
            if offer is None or self._publisher is None:
                continue
            if offer.expiry <= time.time():
                self._own_offer = None
                continue
            with contextlib.suppress(PublishQueueFull):  # logged and counted by submit
                self._publisher.submit(offer)
        self._own_offer = offer

    async def _bootstrap(self, addr: str) -> None:
        delay = 0.2
        for _ in range(8):
            try:
                await self.connect(addr)
                return
            except (BaseLibp2pError, OSError, ValueError) as exc:
                log.info("bootstrap %s failed (%r); retrying in %.1f s", addr, exc, delay)
                self.metrics.inc("bootstrap_failures")
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)
        log.warning("giving up on bootstrap peer %s", addr)

    # ------------------------------------------------------------ bans
    def _on_ban(self, peer: str) -> None:
        if self._pubsub is None:
            return
        self._blacklisted.add(peer)
        self._pubsub.add_to_blacklist(ID.from_base58(peer))  # also closes the connection
        self.disconnect_soon(peer)

    def disconnect_soon(self, peer: str) -> None:
        """Close the connection to ``peer`` from a fresh task (safe inside callbacks)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._disconnect, peer)

    async def _disconnect(self, peer: str) -> None:
        try:
            await self.host.disconnect(ID.from_base58(peer))
        except (BaseLibp2pError, OSError, KeyError) as exc:
            log.debug("disconnect %s: %r", peer, exc)

    # ------------------------------------------------------------ operations
    async def connect(self, addr: str) -> str:
        """Dial ``/…/p2p/<id>``; returns the peer id text."""
        info = parse_peer_addr(addr)
        if self.guard.is_banned(info.peer_id.to_base58()):
            raise ValueError("peer is banned")
        await self.host.connect(info)
        if self._dht is not None:
            await self._dht.routing_table.add_peer(info)
        return str(info.peer_id.to_base58())

    def connected_peers(self) -> list[str]:
        """Peer ids with an open connection."""
        return [p.to_base58() for p in self.host.get_connected_peers()]

    def publish_offer(self, offer: Offer) -> None:
        """Queue our own offer for gossip (raises PublishQueueFull when full)."""
        if self._publisher is None:
            raise RuntimeError("node is not running")
        if offer.provider != self.identity.address:
            raise ValueError("a node publishes only its own offers")
        self._publisher.submit(offer)
        self._own_offer = offer

    def mesh_size(self) -> int:
        """Peers subscribed to the offer topic."""
        return len(self.pubsub.peer_topics.get(OFFERS_TOPIC, ()))

    async def provide(self, key: str) -> bool:
        """Announce in the DHT that we provide ``key`` (hex string)."""
        if self._dht is None:
            raise RuntimeError("DHT is disabled")
        return bool(await self._dht.provide(key))

    async def find_providers(self, key: str, count: int = 20) -> list[str]:
        """Peers that provide ``key`` (de-duplicated: the library repeats entries)."""
        if self._dht is None:
            raise RuntimeError("DHT is disabled")
        found = await self._dht.find_providers(key, count)
        out: list[str] = []
        for info in found:
            pid = info.peer_id.to_base58()
            if pid not in out:
                out.append(pid)
        return out
