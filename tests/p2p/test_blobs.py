"""Blob exchange: intact, forbidden, oversized, corrupted, truncated, resumed, garbage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from conftest import make_config
from libp2p.peer.id import ID
from nodes import wait_for

from node.p2p.blobs import BLOB_PROTOCOL, TICKET_PROTOCOL, BlobFetchError
from node.p2p.blobstore import BlobStore
from node.p2p.dataplane import HEADER, MAGIC, DataPlaneError, fetch_range
from node.p2p.framing import encode_uvarint
from node.p2p.node import P2PNode
from protocol.content import CHUNK_SIZE, ContentId
from protocol.identity import Identity

pytestmark = pytest.mark.timeout(120)
JOB = 42


async def allow_job(peer: str, cid: ContentId, job_id: int) -> bool:
    return job_id == JOB


def two_nodes(tmp_path: Path) -> tuple[P2PNode, P2PNode]:
    server = P2PNode(
        Identity.generate(),
        make_config(enable_dht=False),
        blob_store=BlobStore(tmp_path / "server"),
        authorize=allow_job,
    )
    client = P2PNode(
        Identity.generate(),
        make_config(enable_dht=False),
        blob_store=BlobStore(tmp_path / "client"),
    )
    return server, client


async def start(nursery: trio.Nursery, server: P2PNode, client: P2PNode) -> None:
    await nursery.start(server.run)
    await nursery.start(client.run)
    await client.connect(server.addrs()[0])


def test_fetch_intact_both_paths_and_refusals(tmp_path: Path) -> None:
    server, client = two_nodes(tmp_path)
    data = os.urandom(5 * CHUNK_SIZE + 12345)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await start(nursery, server, client)
            assert server.blob_store is not None and client.blob_store is not None
            cid = server.blob_store.put_bytes(data)
            path = await client.blobs.fetch(server.peer_id, cid, JOB, max_size=1 << 30, parallel=3)
            assert path.read_bytes() == data
            client.blob_store.path(cid).unlink()
            fetch = client.blobs.fetch
            path = await fetch(server.peer_id, cid, JOB, max_size=1 << 30, via="libp2p")
            assert path.read_bytes() == data
            client.blob_store.path(cid).unlink()
            # no reason to have it (another job): forbidden on both paths
            for via in ("dataplane", "libp2p"):
                with pytest.raises(BlobFetchError, match="forbidden"):
                    await fetch(server.peer_id, cid, JOB + 1, max_size=1 << 30, via=via)
            # unknown blob
            with pytest.raises(BlobFetchError, match="not_found"):
                await fetch(server.peer_id, ContentId(bytes(32)), JOB, max_size=1 << 30)
            # over the caller's cap: refused before any byte moves
            with pytest.raises(BlobFetchError, match="over the cap"):
                await client.blobs.fetch(server.peer_id, cid, JOB, max_size=len(data) - 1)
            assert not client.blob_store.has(cid)
            assert list((client.blob_store.root / "partial").iterdir()) == []
            assert server.metrics.get("blob_refused", reason="forbidden") == 2
            assert client.metrics.get("blob_fetch_refused", reason="oversized") == 1
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_corrupted_blob_is_refused_and_deleted(tmp_path: Path) -> None:
    server, client = two_nodes(tmp_path)
    data = os.urandom(3 * CHUNK_SIZE)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await start(nursery, server, client)
            assert server.blob_store is not None and client.blob_store is not None
            cid = server.blob_store.put_bytes(data)
            bad = bytearray(data)
            bad[CHUNK_SIZE + 7] ^= 1
            server.blob_store.path(cid).write_bytes(bytes(bad))  # server serves corrupt bytes
            for via in ("dataplane", "libp2p"):
                with pytest.raises(BlobFetchError, match="hashed to"):
                    await client.blobs.fetch(server.peer_id, cid, JOB, max_size=1 << 30, via=via)
                assert not client.blob_store.has(cid)
                assert list((client.blob_store.root / "partial").iterdir()) == []
            assert client.metrics.get("blob_fetch_refused", reason="corrupt") == 2
            nursery.cancel_scope.cancel()

    trio.run(main)


async def truncating_server(data: bytes, cut: int, *, task_status: trio.TaskStatus[int]) -> None:
    """A lying data plane: says OK, sends ``cut`` bytes of the range, closes."""

    async def handle(stream: trio.SocketStream) -> None:
        raw = b""
        while len(raw) < HEADER.size:
            raw += await stream.receive_some(HEADER.size - len(raw))
        _, _, _, _, offset, _length = HEADER.unpack(raw)
        await stream.send_all(b"\x00" + data[offset : offset + cut])
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def test_truncated_transfer_is_refused_then_resumed(tmp_path: Path) -> None:
    server, client = two_nodes(tmp_path)
    data = os.urandom(6 * CHUNK_SIZE + 999)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await start(nursery, server, client)
            assert server.blob_store is not None and client.blob_store is not None
            cid = server.blob_store.put_bytes(data)
            port = await nursery.start(truncating_server, data, 3 * CHUNK_SIZE + 500)
            partial = client.blob_store.partial(cid, len(data))

            def sink(at: int, piece: memoryview) -> None:
                partial.write(at, piece)
                partial.mark(0, at + len(piece))

            with pytest.raises(DataPlaneError, match="truncated"):
                await fetch_range(
                    ("127.0.0.1", port), bytes(32), cid, (0, len(data)), sink, read_timeout=3
                )
            partial.close()
            assert partial.received_bytes() == 3 * CHUNK_SIZE  # whole chunks only
            assert not client.blob_store.has(cid)
            # resume from the real server: only the missing chunks travel
            path = await client.blobs.fetch(server.peer_id, cid, JOB, max_size=1 << 30)
            assert path.read_bytes() == data
            assert server.metrics.get("dataplane_bytes_sent") == len(data) - 3 * CHUNK_SIZE
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_garbage_on_the_blob_paths(tmp_path: Path) -> None:
    server, client = two_nodes(tmp_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await start(nursery, server, client)
            assert server.blob_store is not None and server.blobs.dataplane is not None
            cid = server.blob_store.put_bytes(b"x" * 1000)
            port = server.blobs.dataplane.port
            # data plane: garbage header, forged token, short header -> a status byte, no data
            for payload in (
                os.urandom(HEADER.size),
                HEADER.pack(MAGIC, 1, os.urandom(32), cid.digest, 0, 1000),
                b"GPNB",
            ):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(payload)
                if len(payload) < HEADER.size:
                    await stream.send_eof()
                got = b""
                with trio.fail_after(10):
                    while chunk := await stream.receive_some(100):
                        got += chunk
                assert len(got) == 1 and got != b"\x00"
                await stream.aclose()
            assert server.metrics.total("dataplane_refused") == 3
            # libp2p blob stream: garbage frame -> strike + reset
            stream = await client.host.new_stream(ID.from_base58(server.peer_id), [BLOB_PROTOCOL])
            await stream.write(encode_uvarint(3) + b"\xc1\xc1\xc1")
            await wait_for(lambda: server.guard.strikes(client.peer_id) == 1)
            # oversized frame -> reset without reading
            stream = await client.host.new_stream(ID.from_base58(server.peer_id), [BLOB_PROTOCOL])
            await stream.write(encode_uvarint(1 << 30))
            await wait_for(lambda: server.metrics.total("blob_streams_refused") == 2)
            # ticket stream: garbage -> strike + reset; no ticket issued
            stream = await client.host.new_stream(ID.from_base58(server.peer_id), [TICKET_PROTOCOL])
            await stream.write(encode_uvarint(4) + b"\x00\x01\x02\x03")
            await wait_for(lambda: server.guard.strikes(client.peer_id) == 2)
            assert server.metrics.get("blob_tickets_issued") == 0
            # still serving
            path = await client.blobs.fetch(server.peer_id, cid, JOB, max_size=1 << 20)
            assert path.read_bytes() == b"x" * 1000
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_concurrent_transfer_limit(tmp_path: Path) -> None:
    from node.p2p.config import Limits

    limits = Limits(read_timeout=5.0, max_blob_transfers_per_peer=1)
    server = P2PNode(
        Identity.generate(),
        make_config(enable_dht=False, limits=limits),
        blob_store=BlobStore(tmp_path / "server"),
        authorize=allow_job,
    )

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            assert server.blob_store is not None and server.blobs.dataplane is not None
            dp = server.blobs.dataplane
            size = 64 * CHUNK_SIZE
            cid = server.blob_store.put_bytes(os.urandom(size))
            token = dp.grant("peer-x", cid, server.blob_store.path(cid), size, ip=None)
            header = HEADER.pack(MAGIC, 1, token, cid.digest, 0, size)
            # first transfer: read the status byte, then stall (the server keeps the slot)
            first = await trio.open_tcp_stream("127.0.0.1", dp.port)
            await first.send_all(header)
            assert (await first.receive_some(1)) == b"\x00"
            second = await trio.open_tcp_stream("127.0.0.1", dp.port)
            await second.send_all(header)
            with trio.fail_after(5):
                assert (await second.receive_some(1)) == b"\x03"  # BUSY
            assert server.metrics.get("dataplane_refused", reason="busy") == 1
            await second.aclose()
            await first.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_several_fetches_in_parallel(tmp_path: Path) -> None:
    server, client = two_nodes(tmp_path)
    blobs = [os.urandom(2 * CHUNK_SIZE + i) for i in range(3)]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await start(nursery, server, client)
            assert server.blob_store is not None
            cids = [server.blob_store.put_bytes(b) for b in blobs]
            results: dict[int, bytes] = {}

            async def get(i: int, cid: ContentId, via: str) -> None:
                path = await client.blobs.fetch(server.peer_id, cid, JOB, max_size=1 << 30, via=via)
                results[i] = path.read_bytes()

            async with trio.open_nursery() as fetches:
                # the same blob twice at once (they share one partial file: serialised)
                fetches.start_soon(get, 0, cids[0], "dataplane")
                fetches.start_soon(get, 1, cids[0], "libp2p")
                fetches.start_soon(get, 2, cids[1], "dataplane")
                fetches.start_soon(get, 3, cids[2], "libp2p")
            assert results == {0: blobs[0], 1: blobs[0], 2: blobs[1], 3: blobs[2]}
            nursery.cancel_scope.cancel()

    trio.run(main)
