"""asyncio facade of the p2p node: the only way asyncio code talks to libp2p.

``P2PService`` starts a :class:`~node.p2p.node.P2PNode` in the trio thread of a
:class:`~node.p2p.bridge.TrioBridge` and exposes coroutines that run there.
Application callbacks (job requests, results, offers) are asyncio coroutines
or functions; the node calls them across the bridge. The order book is
thread-safe and queried directly.

Shutdown order for an aiohttp app (shared/notes/libp2p.md §4.3): stop the
site, then ``await service.stop()``, then ``runner.cleanup()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from node.p2p.blobstore import BlobStore
from node.p2p.bridge import TrioBridge
from node.p2p.config import P2PConfig
from node.p2p.jobs import JobProtocolError
from node.p2p.metrics import P2PMetrics
from node.p2p.node import P2PNode
from node.p2p.orderbook import AddResult, BookEntry, OrderBook
from node.p2p.wire import JobCreatedNotice, ResultAck
from protocol.content import ContentId
from protocol.identity import Identity
from protocol.messages import JobAccept, JobDecline, JobRequest, Offer, ResultManifest

__all__ = ["P2PService"]

AsyncJobHandler = Callable[[str, JobRequest], Awaitable[JobAccept | JobDecline]]
AsyncResultHandler = Callable[[str, ResultManifest], Awaitable[bool]]
AsyncCreatedHandler = Callable[[str, JobCreatedNotice], Awaitable[None]]
OfferListener = Callable[[Offer, str, AddResult], None]
AsyncAuthorizer = Callable[[str, ContentId, int], Awaitable[bool]]


class P2PService:
    """See the module docstring."""

    def __init__(
        self,
        identity: Identity,
        config: P2PConfig,
        *,
        book: OrderBook | None = None,
        on_job_request: AsyncJobHandler | None = None,
        on_result: AsyncResultHandler | None = None,
        on_created: AsyncCreatedHandler | None = None,
        on_offer: OfferListener | None = None,
        blob_store: BlobStore | None = None,
        authorize: AsyncAuthorizer | None = None,
    ) -> None:
        self.identity = identity
        self.config = config
        self.metrics = P2PMetrics()
        self.book = book if book is not None else OrderBook()
        self.bridge: TrioBridge[P2PNode] = TrioBridge(name=f"p2p-{identity.peer_id[-6:]}")
        self._node: P2PNode | None = None
        self._on_job_request = on_job_request
        self._on_result = on_result
        self._on_created = on_created
        self._on_offer = on_offer
        self.blob_store = blob_store
        self._authorize = authorize

    # ------------------------------------------------------------ lifecycle
    def _make_node(self) -> P2PNode:
        bridge = self.bridge
        job_cb, result_cb, offer_cb = self._on_job_request, self._on_result, self._on_offer
        created_cb = self._on_created

        async def on_request(peer: str, req: JobRequest) -> JobAccept | JobDecline:
            assert job_cb is not None
            return await bridge.call_asyncio(job_cb, peer, req)

        async def on_result(peer: str, manifest: ResultManifest) -> bool:
            assert result_cb is not None
            return await bridge.call_asyncio(result_cb, peer, manifest)

        async def on_created(peer: str, notice: JobCreatedNotice) -> None:
            assert created_cb is not None
            await bridge.call_asyncio(created_cb, peer, notice)

        def on_offer(offer: Offer, peer: str, result: AddResult) -> None:
            assert offer_cb is not None
            bridge.emit(offer_cb, offer, peer, result)

        auth_cb = self._authorize

        async def authorize(peer: str, cid: ContentId, job_id: int) -> bool:
            if auth_cb is None:
                return False
            return await bridge.call_asyncio(auth_cb, peer, cid, job_id)

        return P2PNode(
            self.identity,
            self.config,
            book=self.book,
            metrics=self.metrics,
            on_job_request=on_request if job_cb else None,
            on_result=on_result if result_cb else None,
            on_created=on_created if created_cb else None,
            on_offer=on_offer if offer_cb else None,
            blob_store=self.blob_store,
            authorize=authorize,
        )

    async def start(self, *, time_limit: float = 30.0) -> None:
        """Start libp2p in its trio thread; returns when the node listens."""
        self._node = self._make_node()
        await self.bridge.start(self._node.run, time_limit=time_limit)

    async def stop(self) -> None:
        """Stop libp2p and join its thread (idempotent)."""
        await self.bridge.stop()

    @property
    def done(self) -> asyncio.Future[None]:
        """Resolved when the trio side ends; holds the exception if it crashed."""
        return self.bridge.done

    @property
    def node(self) -> P2PNode:
        """The trio-side node: pass its bound methods to :meth:`call`, never call them here."""
        if self._node is None:
            raise RuntimeError("service not started")
        return self._node

    async def call(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run a trio coroutine function on the node's thread."""
        return await self.bridge.call(afn, *args)

    async def _sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return await self.bridge.call(run)

    # ------------------------------------------------------------ operations
    @property
    def peer_id(self) -> str:
        """This node's peer id text."""
        return self.identity.peer_id

    async def addrs(self) -> list[str]:
        """Listen addresses with ``/p2p/<id>``."""
        result: list[str] = await self._sync(self.node.addrs)
        return result

    async def connect(self, addr: str) -> str:
        """Dial a ``/…/p2p/<id>`` address."""
        result: str = await self.bridge.call(self.node.connect, addr)
        return result

    async def peers(self) -> list[str]:
        """Connected peer ids."""
        result: list[str] = await self._sync(self.node.connected_peers)
        return result

    async def publish_offer(self, offer: Offer) -> None:
        """Queue our offer for paced gossip (raises PublishQueueFull when full)."""
        await self._sync(self.node.publish_offer, offer)

    def query(self, **filters: Any) -> list[BookEntry]:
        """Order-book query (see :meth:`OrderBook.query`)."""
        return self.book.query(**filters)

    async def request_job(
        self, peer: str, request: JobRequest, *, time_limit: float = 10.0
    ) -> JobAccept | JobDecline:
        """Send a job request; the verified accept or the decline."""
        node = self.node

        async def run() -> JobAccept | JobDecline:
            return await node.jobs.request(peer, request, time_limit=time_limit)

        result: JobAccept | JobDecline = await self.bridge.call(run)
        return result

    async def request_jobs(
        self, peer: str, requests: list[JobRequest], *, time_limit: float = 10.0
    ) -> list[JobAccept | JobDecline | JobProtocolError]:
        """Send several job requests on one stream; per request the verified accept,
        the decline, or the :class:`JobProtocolError` saying why there is neither."""
        node = self.node

        async def run() -> list[JobAccept | JobDecline | JobProtocolError]:
            return await node.jobs.request_many(peer, requests, time_limit=time_limit)

        result: list[JobAccept | JobDecline | JobProtocolError] = await self.bridge.call(run)
        return result

    async def notify_created_many(
        self, peer: str, notices: list[JobCreatedNotice], *, time_limit: float = 10.0
    ) -> None:
        """Tell provider ``peer`` that several jobs it accepted are created (one stream)."""
        node = self.node

        async def run() -> None:
            await node.jobs.notify_created_many(peer, notices, time_limit=time_limit)

        await self.bridge.call(run)

    async def deliver_results(
        self, peer: str, manifests: list[ResultManifest], *, time_limit: float = 10.0
    ) -> list[ResultAck | JobProtocolError]:
        """Deliver several result manifests to the client ``peer`` on one stream."""
        node = self.node

        async def run() -> list[ResultAck | JobProtocolError]:
            return await node.jobs.deliver_results(peer, manifests, time_limit=time_limit)

        result: list[ResultAck | JobProtocolError] = await self.bridge.call(run)
        return result

    async def notify_created(
        self, peer: str, notice: JobCreatedNotice, *, time_limit: float = 10.0
    ) -> None:
        """Tell provider ``peer`` that a job it accepted is created onchain."""
        node = self.node

        async def run() -> None:
            await node.jobs.notify_created(peer, notice, time_limit=time_limit)

        await self.bridge.call(run)

    async def deliver_result(
        self, peer: str, manifest: ResultManifest, *, time_limit: float = 10.0
    ) -> ResultAck:
        """Deliver a result manifest to the client ``peer``."""
        node = self.node

        async def run() -> ResultAck:
            return await node.jobs.deliver_result(peer, manifest, time_limit=time_limit)

        result: ResultAck = await self.bridge.call(run)
        return result

    async def provide(self, key: str) -> bool:
        """DHT provide."""
        result: bool = await self.bridge.call(self.node.provide, key)
        return result

    async def find_providers(self, key: str, count: int = 20) -> list[str]:
        """DHT provider lookup."""
        result: list[str] = await self.bridge.call(self.node.find_providers, key, count)
        return result

    async def fetch_blob(
        self,
        peer: str,
        cid: ContentId,
        job_id: int,
        *,
        max_size: int,
        via: str = "dataplane",
        parallel: int = 2,
    ) -> Path:
        """Fetch a blob into the local store (see :meth:`BlobService.fetch`)."""
        node = self.node

        async def run() -> Path:
            return await node.blobs.fetch(
                peer, cid, job_id, max_size=max_size, via=via, parallel=parallel
            )

        result: Path = await self.bridge.call(run)
        return result
