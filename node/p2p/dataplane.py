"""The blob data plane: plain TCP, authenticated by tickets issued over libp2p.

py-libp2p's yamux moves 28–70 MB/s on loopback; the goal is ≥ 500 MB/s, so
bulk bytes bypass libp2p. A client first asks for a ticket on the Noise-
encrypted stream ``/gpunet/blob-ticket/1.0.0`` (which authenticates the peer
id and runs the access check); the ticket's 32-byte random token is bound to
that peer, that content id, the requester's IP and a short lifetime. Each data
connection then carries one range::

    request  (85 bytes): b"GPNB" | version=1 | token[32] | cid[32] | offset u64 | length u64
    response           : status u8 (0 = ok) | exactly ``length`` bytes if ok, then close

Integrity comes from the content id (the client hashes the whole blob);
confidentiality does not: the bytes are not encrypted (see docs/p2p.md).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import secrets
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from node.p2p.config import Limits
from node.p2p.guard import PeerGuard, Refused
from node.p2p.metrics import P2PMetrics
from protocol.content import ContentId

__all__ = ["HEADER", "DataPlaneServer", "DpStatus", "Grant", "fetch_range"]

log = logging.getLogger(__name__)

HEADER = struct.Struct(">4sB32s32sQQ")
MAGIC = b"GPNB"
VERSION = 1
_BUF = 4 << 20


class DpStatus(enum.IntEnum):
    """Status byte of a data-plane response."""

    OK = 0
    BAD_TOKEN = 1
    BAD_RANGE = 2
    BUSY = 3
    NOT_FOUND = 4
    BAD_HEADER = 5


class DataPlaneError(Exception):
    """A data-plane transfer failed (refused, truncated, timed out)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """What a token allows."""

    peer: str
    cid: ContentId
    path: Path
    size: int
    ip: str | None
    expires: float


class DataPlaneServer:
    """Trio TCP server for ranges of blobs; tokens come from :meth:`grant`."""

    def __init__(
        self,
        host: str,
        port: int,
        limits: Limits,
        guard: PeerGuard,
        metrics: P2PMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.limits = limits
        self.guard = guard
        self.metrics = metrics
        self._clock = clock
        self._grants: dict[bytes, Grant] = {}
        self._open = 0

    def grant(
        self, peer: str, cid: ContentId, path: Path, size: int, *, ip: str | None, ttl: int = 60
    ) -> bytes:
        """Issue a token for ``peer`` to read ``cid`` for ``ttl`` seconds."""
        now = self._clock()
        if len(self._grants) > 10_000:
            self._grants = {k: g for k, g in self._grants.items() if g.expires > now}
        token = secrets.token_bytes(32)
        self._grants[token] = Grant(peer, cid, path, size, ip, now + ttl)
        return token

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen; reports the bound port through ``task_status``."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _read_header(self, stream: trio.SocketStream) -> bytes:
        buf = bytearray()
        with trio.move_on_after(self.limits.read_timeout):
            while len(buf) < HEADER.size:
                chunk = await stream.receive_some(HEADER.size - len(buf))
                if not chunk:
                    break
                buf += chunk
        return bytes(buf)

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self._open >= self.limits.max_dataplane_connections:
            self.metrics.inc("dataplane_refused", reason="connections")
            log.warning("data plane: %d connections open, refusing another", self._open)
            await stream.aclose()
            return
        self._open += 1
        try:
            async with stream:
                await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.metrics.inc("dataplane_broken")
            log.info("data plane: connection broke: %r", exc)
        finally:
            self._open -= 1

    async def _refuse(self, stream: trio.SocketStream, status: DpStatus, why: str) -> None:
        self.metrics.inc("dataplane_refused", reason=status.name.lower())
        log.info("data plane: refused a request: %s", why)
        await stream.send_all(bytes([status]))

    async def _serve(self, stream: trio.SocketStream) -> None:
        raw = await self._read_header(stream)
        if len(raw) != HEADER.size:
            await self._refuse(stream, DpStatus.BAD_HEADER, f"short header ({len(raw)} bytes)")
            return
        magic, version, token, cid, offset, length = HEADER.unpack(raw)
        if magic != MAGIC or version != VERSION:
            await self._refuse(stream, DpStatus.BAD_HEADER, "bad magic or version")
            return
        grant = self._grants.get(token)
        if grant is None or grant.expires < self._clock() or grant.cid.digest != cid:
            await self._refuse(stream, DpStatus.BAD_TOKEN, "unknown, expired or foreign token")
            return
        peer_ip = stream.socket.getpeername()[0]
        if grant.ip is not None and grant.ip != peer_ip:
            await self._refuse(stream, DpStatus.BAD_TOKEN, f"token used from {peer_ip}")
            return
        if length == 0 or offset + length > grant.size:
            await self._refuse(stream, DpStatus.BAD_RANGE, f"range {offset}+{length}")
            return
        try:
            with self.guard.blob_slot(grant.peer):
                await self._send_range(stream, grant.path, offset, length)
        except Refused:
            await self._refuse(stream, DpStatus.BUSY, "too many transfers")
        except FileNotFoundError:
            await self._refuse(stream, DpStatus.NOT_FOUND, "blob vanished")

    async def _send_range(
        self, stream: trio.SocketStream, path: Path, offset: int, length: int
    ) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size < offset + length:
                raise FileNotFoundError("blob is shorter than granted")
            await stream.send_all(bytes([DpStatus.OK]))
            sock = stream.socket
            sent = 0
            while sent < length:
                try:  # zero-copy from the page cache; the socket is non-blocking
                    n = os.sendfile(sock.fileno(), fd, offset + sent, min(_BUF, length - sent))
                except BlockingIOError:
                    with trio.fail_after(self.limits.read_timeout):  # a stalled reader is dropped
                        await sock.wait_writable()
                    continue
                if n == 0:  # shrank mid-transfer: close early; the client sees a truncation
                    self.metrics.inc("dataplane_broken")
                    log.warning("data plane: %s shrank while being sent", path)
                    return
                sent += n
                await trio.lowlevel.checkpoint()
            self.metrics.inc("dataplane_bytes_sent", sent)
        finally:
            os.close(fd)


async def fetch_range(
    address: tuple[str, int],
    token: bytes,
    cid: ContentId,
    span: tuple[int, int],
    sink: Callable[[int, memoryview], None],
    *,
    read_timeout: float,
) -> None:
    """Fetch ``span = (offset, length)``; ``sink(offset, bytes)`` gets the pieces in order."""
    offset, length = span
    with trio.fail_after(read_timeout):
        stream = await trio.open_tcp_stream(*address)
    async with stream:
        sock = stream.socket
        await stream.send_all(HEADER.pack(MAGIC, VERSION, token, cid.digest, offset, length))
        with trio.move_on_after(read_timeout):
            status = await stream.receive_some(1)
        if not status:
            raise DataPlaneError("no status from the data plane")
        if status[0] != DpStatus.OK:
            raise DataPlaneError(f"data plane refused: {DpStatus(status[0]).name}")
        buf = bytearray(min(_BUF, length))
        view = memoryview(buf)
        got = 0
        while got < length:
            n = 0
            with trio.move_on_after(read_timeout):
                n = await sock.recv_into(view, min(len(buf), length - got))
            if n <= 0:
                raise DataPlaneError(f"truncated: {got}/{length} bytes of the range")
            sink(offset + got, view[:n])
            got += n
        extra = b""
        with trio.move_on_after(0.5):
            extra = await stream.receive_some(1)
        if extra:
            raise DataPlaneError("the data plane sent more than the requested range")
