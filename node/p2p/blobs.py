"""Blob exchange: ``/gpunet/blob/1.0.0`` (libp2p) and the ticketed TCP data plane.

Serving: a peer gets a blob only if the pluggable :data:`Authorizer` says it
has a reason to (the job's counterparty or a verifier of that job); the
default authorizer refuses everyone. Every refusal is answered
(``forbidden``/``not_found``/``busy``), logged and counted.

* ``/gpunet/blob/1.0.0``: on one stream the client sends ``BlobRequest``
  frames (≤ 1 MiB each, pipelined) and reads one ``BlobResponse`` per request.
  Standard libp2p framing, works with any libp2p peer; ~30–70 MB/s.
* ``/gpunet/blob-ticket/1.0.0``: ``TicketRequest`` -> ``Ticket`` with a token for
  the data plane (:mod:`node.p2p.dataplane`), which moves the bytes.

Fetching (:meth:`BlobService.fetch`) is chunked, resumable (a partial file
and a chunk map survive failures and restarts), parallel (several ranges at
once over the data plane), size-capped (the announced size is checked against
the caller's cap before any byte is fetched) and hash-verified (the whole blob
against its content id before it enters the store; a mismatch deletes it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID

from node.p2p.blobstore import BlobStore, PartialBlob, PartialSpaceFull
from node.p2p.channels import close_quietly, reset_quietly
from node.p2p.config import P2PConfig
from node.p2p.dataplane import DataPlaneError, DataPlaneServer, fetch_range
from node.p2p.framing import FrameError, read_frame, write_frame
from node.p2p.guard import PeerGuard, Refused
from node.p2p.jobs import peer_of
from node.p2p.metrics import P2PMetrics
from node.p2p.threads import run_in_thread
from node.p2p.wire import Ticket, TicketRequest, decode_frame, encode_frame
from protocol.content import CHUNK_SIZE, ContentId
from protocol.errors import DecodeError
from protocol.messages import BlobRequest, BlobResponse, BlobStatus, decode_as, encode

__all__ = [
    "BLOB_PROTOCOL",
    "TICKET_PROTOCOL",
    "Authorizer",
    "BlobFetchError",
    "BlobService",
    "deny_all",
]

log = logging.getLogger(__name__)

BLOB_PROTOCOL = TProtocol("/gpunet/blob/1.0.0")
TICKET_PROTOCOL = TProtocol("/gpunet/blob-ticket/1.0.0")
_MAX_REQUESTS_PER_STREAM = 1 << 16
_PIPELINE = 8

#: may ``peer`` (peer id text) have blob ``cid`` for job ``job_id``?
Authorizer = Callable[[str, ContentId, int], Awaitable[bool]]


async def deny_all(peer: str, cid: ContentId, job_id: int) -> bool:
    """The default authorizer: nobody has a reason."""
    return False


class BlobFetchError(Exception):
    """A fetch was refused or failed; a partial download is kept for a resume."""


class BlobService:
    """Serving and fetching blobs for one node."""

    def __init__(
        self,
        host: IHost,
        config: P2PConfig,
        store: BlobStore,
        *,
        guard: PeerGuard,
        metrics: P2PMetrics,
        authorize: Authorizer = deny_all,
    ) -> None:
        self.host = host
        self.config = config
        self.store = store
        self.guard = guard
        self.metrics = metrics
        self.authorize = authorize
        self.limits = config.limits
        self.dataplane: DataPlaneServer | None = None
        self._fetching: dict[ContentId, trio.Lock] = {}
        if config.enable_data_plane:
            self.dataplane = DataPlaneServer(
                config.data_plane_host, config.data_plane_port, self.limits, guard, metrics
            )

    def install(self, nursery: trio.Nursery) -> None:
        """Register the stream handlers (the data plane is started by :meth:`start`)."""
        self.host.set_stream_handler(BLOB_PROTOCOL, self._handle_blob)
        self.host.set_stream_handler(TICKET_PROTOCOL, self._handle_ticket)

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the data plane listener in ``nursery``."""
        if self.dataplane is not None:
            await nursery.start(self.dataplane.serve)

    async def _allowed(self, peer: str, cid: ContentId, job_id: int) -> BlobStatus:
        try:
            allowed = await self.authorize(peer, cid, job_id)
        except Exception:  # an authoriser bug refuses, never crashes
            log.exception("blob authoriser failed")
            allowed = False
        if not allowed:
            self.metrics.inc("blob_refused", reason="forbidden")
            log.info("blob %s refused to %s (job %d): no reason to have it", cid, peer, job_id)
            return BlobStatus.FORBIDDEN
        if not self.store.has(cid):
            self.metrics.inc("blob_refused", reason="not_found")
            return BlobStatus.NOT_FOUND
        return BlobStatus.OK

    # ------------------------------------------------------------ serving: tickets
    async def _handle_ticket(self, stream: INetStream) -> None:
        peer = peer_of(stream)
        lim = self.limits
        try:
            with self.guard.stream_slot(peer):
                data = await read_frame(stream, max_bytes=512, time_limit=lim.read_timeout)
                try:
                    req = decode_frame(data, TicketRequest)
                except DecodeError:
                    self.guard.strike(peer, "ticket:undecodable")
                    self.metrics.inc("blob_refused", reason="bad_request")
                    await reset_quietly(stream)
                    return
                cid = ContentId(req.cid)
                if not self.guard.allow(peer, "request"):
                    status = BlobStatus.BUSY
                elif self.dataplane is None:
                    status = BlobStatus.NOT_FOUND
                else:
                    status = await self._allowed(peer, cid, req.job_id)
                ticket = Ticket(cid=req.cid, status=status.value)
                if status is BlobStatus.OK and self.dataplane is not None:
                    size = self.store.size(cid) or 0
                    remote = stream.get_remote_address()
                    token = self.dataplane.grant(
                        peer, cid, self.store.path(cid), size, ip=remote[0] if remote else None
                    )
                    ticket = Ticket(
                        cid=req.cid,
                        status=status.value,
                        token=token,
                        host=_announce(self.config.data_plane_host),
                        port=self.dataplane.port,
                        total_size=size,
                        expires_in=60,
                    )
                    self.metrics.inc("blob_tickets_issued")
                await write_frame(stream, encode_frame(ticket), time_limit=lim.read_timeout)
        except (Refused, FrameError) as exc:
            self.metrics.inc("blob_streams_refused", kind=type(exc).__name__)
            await reset_quietly(stream)
        else:
            await close_quietly(stream)

    # ------------------------------------------------------------ serving: libp2p path
    async def _handle_blob(self, stream: INetStream) -> None:
        peer = peer_of(stream)
        try:
            with self.guard.stream_slot(peer), self.guard.blob_slot(peer):
                if not self.guard.allow(peer, "request"):
                    raise Refused("rate limited")
                await self._serve_blob_stream(peer, stream)
        except (Refused, FrameError) as exc:
            self.metrics.inc("blob_streams_refused", kind=type(exc).__name__)
            log.info("blob stream from %s ended: %s", peer, exc)
            await reset_quietly(stream)
        else:
            await close_quietly(stream)

    async def _serve_blob_stream(self, peer: str, stream: INetStream) -> None:
        lim = self.limits
        allowed: dict[tuple[bytes, int], BlobStatus] = {}
        for _ in range(_MAX_REQUESTS_PER_STREAM):
            try:
                data = await read_frame(stream, max_bytes=256, time_limit=lim.read_timeout)
            except FrameError as exc:
                if "ended after 0/1" in str(exc):
                    return  # clean end of the request sequence
                raise
            try:
                req = decode_as(data, BlobRequest)
            except DecodeError:
                self.guard.strike(peer, "blob:undecodable")
                raise Refused("undecodable blob request") from None
            key = (req.cid, req.job_id)
            if key not in allowed:
                allowed[key] = await self._allowed(peer, req.content_id, req.job_id)
            status = allowed[key]
            size = self.store.size(req.content_id) if status is BlobStatus.OK else None
            if status is BlobStatus.OK and size is None:
                status = BlobStatus.NOT_FOUND
            if status is not BlobStatus.OK or size is None:
                resp = BlobResponse(cid=req.cid, status=status)
            elif req.offset >= size and not (req.offset == 0 and size == 0):
                resp = BlobResponse(cid=req.cid, status=BlobStatus.BAD_RANGE, total_size=size)
            else:
                with self.store.path(req.content_id).open("rb") as f:
                    f.seek(req.offset)
                    chunk = f.read(min(req.length, size - req.offset))
                resp = BlobResponse(
                    cid=req.cid,
                    status=BlobStatus.OK,
                    offset=req.offset,
                    total_size=size,
                    data=chunk,
                )
                self.metrics.inc("blob_bytes_sent_libp2p", len(chunk))
            await write_frame(stream, encode(resp), time_limit=lim.read_timeout)

    # ------------------------------------------------------------ fetching
    async def fetch(
        self,
        peer: str,
        cid: ContentId,
        job_id: int,
        *,
        max_size: int,
        via: str = "dataplane",
        parallel: int = 2,
    ) -> Path:
        """Fetch ``cid`` from ``peer`` into the store (see module docstring); its path."""
        if self.store.has(cid):
            return self.store.path(cid)
        lock = self._fetching.setdefault(cid, trio.Lock())
        try:
            async with lock:  # one fetch per blob at a time (they share the partial file)
                return await self._fetch_locked(peer, cid, job_id, max_size, via, parallel)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._fetching.pop(cid, None)

    async def _fetch_locked(  # noqa: PLR0917
        self, peer: str, cid: ContentId, job_id: int, max_size: int, via: str, parallel: int
    ) -> Path:
        if self.store.has(cid):
            return self.store.path(cid)
        max_size = min(max_size, self.limits.max_blob_bytes)
        if via == "dataplane":
            ticket, server_ip = await self._ticket(peer, cid, job_id)
            size = ticket.total_size
        elif via == "libp2p":
            ticket = None
            size = await self._probe_size(peer, cid, job_id)
        else:
            raise ValueError(f"unknown path {via!r}")
        if size > max_size:
            self.metrics.inc("blob_fetch_refused", reason="oversized")
            raise BlobFetchError(f"blob {cid} is {size} bytes, over the cap of {max_size}")
        try:
            partial = self.store.partial(cid, size)
        except PartialSpaceFull as exc:
            self.metrics.inc("blob_fetch_refused", reason="no_space")
            raise BlobFetchError(f"blob {cid}: {exc}") from None
        try:
            if ticket is not None:
                # connect to the address the authenticated libp2p connection came from;
                # the ticket's host is only a fallback (a server must not steer us elsewhere)
                address = (server_ip or ticket.host or "127.0.0.1", ticket.port)
                await self._fetch_dataplane(peer, ticket, address, partial, parallel)
            else:
                await self._fetch_libp2p(peer, partial, job_id)
        finally:
            partial.close()
        if not partial.complete():
            raise BlobFetchError(f"blob {cid} incomplete")
        try:
            path = await run_in_thread(partial.finish)
        except Exception as exc:
            self.metrics.inc("blob_fetch_refused", reason="corrupt")
            self.guard.strike(peer, "blob:corrupt")
            raise BlobFetchError(str(exc)) from exc
        self.metrics.inc("blob_fetched", via=via)
        return path

    async def _ticket(self, peer: str, cid: ContentId, job_id: int) -> tuple[Ticket, str | None]:
        lim = self.limits
        req = encode_frame(TicketRequest(cid=cid.digest, job_id=job_id))
        try:
            with trio.fail_after(lim.read_timeout):
                stream = await self.host.new_stream(ID.from_base58(peer), [TICKET_PROTOCOL])
            try:
                remote = stream.get_remote_address()
                await write_frame(stream, req, time_limit=lim.read_timeout)
                data = await read_frame(stream, max_bytes=512, time_limit=lim.read_timeout)
            finally:
                await close_quietly(stream)
            ticket = decode_frame(data, Ticket)
        except (BaseLibp2pError, OSError, FrameError, DecodeError, trio.TooSlowError) as exc:
            raise BlobFetchError(f"no data-plane ticket from {peer}: {exc!r}") from None
        if ticket.status != BlobStatus.OK.value or ticket.cid != cid.digest:
            raise BlobFetchError(f"{peer} refused blob {cid}: {ticket.status}")
        if len(ticket.token) != 32 or not ticket.port:
            raise BlobFetchError("malformed ticket")
        return ticket, (remote[0] if remote else None)

    async def _fetch_dataplane(
        self,
        peer: str,
        ticket: Ticket,
        address: tuple[str, int],
        partial: PartialBlob,
        parallel: int,
    ) -> None:
        segments = _split(partial.missing(), max(1, parallel))
        lim = self.limits

        async def one(offset: int, length: int) -> None:
            def sink(at: int, data: memoryview) -> None:
                partial.write(at, data)
                partial.mark(offset, at + len(data))

            try:
                await fetch_range(
                    address,
                    ticket.token,
                    partial.cid,
                    (offset, length),
                    sink,
                    read_timeout=lim.read_timeout,
                )
            except (DataPlaneError, OSError, trio.TooSlowError) as exc:
                raise BlobFetchError(f"data plane from {peer}: {exc!r}") from None

        try:
            async with trio.open_nursery() as nursery:
                for offset, length in segments:
                    nursery.start_soon(one, offset, length)
        except BaseExceptionGroup as group:
            first = group.exceptions[0]
            if isinstance(first, BlobFetchError):
                raise first from None
            raise

    async def _probe_size(self, peer: str, cid: ContentId, job_id: int) -> int:
        resp = await self._libp2p_exchange(
            peer, [BlobRequest(cid=cid.digest, length=1, job_id=job_id)]
        )
        return resp[0].total_size

    async def _libp2p_exchange(self, peer: str, reqs: list[BlobRequest]) -> list[BlobResponse]:
        out: list[BlobResponse] = []
        await self._libp2p_stream(peer, reqs, out.append)
        return out

    async def _libp2p_stream(
        self, peer: str, reqs: list[BlobRequest], on_response: Callable[[BlobResponse], None]
    ) -> None:
        lim = self.limits
        try:
            with trio.fail_after(lim.read_timeout):
                stream = await self.host.new_stream(ID.from_base58(peer), [BLOB_PROTOCOL])
        except (BaseLibp2pError, OSError, trio.TooSlowError) as exc:
            raise BlobFetchError(f"cannot open a blob stream to {peer}: {exc!r}") from None
        try:
            sent = 0
            for i in range(len(reqs)):
                while sent < len(reqs) and sent < i + _PIPELINE:
                    await write_frame(stream, encode(reqs[sent]), time_limit=lim.read_timeout)
                    sent += 1
                data = await read_frame(
                    stream, max_bytes=BlobResponse.MAX_BYTES, time_limit=lim.read_timeout
                )
                resp = decode_as(data, BlobResponse)
                req = reqs[i]
                if resp.status is not BlobStatus.OK:
                    raise BlobFetchError(f"{peer} refused blob: {resp.status.value}")
                if resp.cid != req.cid or resp.offset != req.offset:
                    raise BlobFetchError("response for another chunk")
                on_response(resp)
        except (FrameError, DecodeError) as exc:
            raise BlobFetchError(f"blob stream from {peer} failed: {exc}") from None
        finally:
            await close_quietly(stream)

    async def _fetch_libp2p(self, peer: str, partial: PartialBlob, job_id: int) -> None:
        reqs = [
            BlobRequest(
                cid=partial.cid.digest, offset=off, length=min(CHUNK_SIZE, ln - i), job_id=job_id
            )
            for off0, ln in partial.missing()
            for i in range(0, ln, CHUNK_SIZE)
            for off in (off0 + i,)
        ]

        def sink(resp: BlobResponse) -> None:
            if resp.total_size != partial.total_size:
                raise BlobFetchError("the blob changed size during the transfer")
            expected = min(CHUNK_SIZE, partial.total_size - resp.offset)
            if len(resp.data) != expected:
                raise BlobFetchError(f"chunk at {resp.offset} truncated: {len(resp.data)} bytes")
            partial.write(resp.offset, resp.data)
            partial.mark(resp.offset, resp.offset + len(resp.data))

        if reqs:
            await self._libp2p_stream(peer, reqs, sink)


def _split(runs: list[tuple[int, int]], parts: int) -> list[tuple[int, int]]:
    """Cut missing runs into about ``parts`` chunk-aligned segments."""
    total = sum(length for _, length in runs)
    if total == 0:
        return []
    target = max(CHUNK_SIZE, -(-total // parts // CHUNK_SIZE) * CHUNK_SIZE)
    out: list[tuple[int, int]] = []
    for start, size in runs:
        offset, length = start, size
        while length > target:
            out.append((offset, target))
            offset += target
            length -= target
        out.append((offset, length))
    return out


def _announce(host: str) -> str:
    """The data-plane host put in tickets ("" = the address of the libp2p connection)."""
    return "" if host in ("", "0.0.0.0", "::") else host
