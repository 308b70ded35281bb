"""Partial downloads are bounded: a peer that announces blobs and then refuses to send
them cannot fill the fetcher's disk with preallocated partial files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from conftest import make_config

from node.p2p.blobs import BlobFetchError
from node.p2p.blobstore import BlobStore, PartialSpaceFull
from node.p2p.node import P2PNode
from protocol.content import CHUNK_SIZE, ContentId
from protocol.identity import Identity

pytestmark = pytest.mark.timeout(120)
JOB = 7


def partials(store: BlobStore) -> dict[str, int]:
    """hex digest -> size of every partial download file on disk."""
    return {p.stem: p.stat().st_size for p in (store.root / "partial").glob("*.part")}


def test_aborted_downloads_keep_partial_space_bounded(tmp_path: Path) -> None:
    asked: set[bytes] = set()
    honest = False

    async def announce_then_refuse(peer: str, cid: ContentId, job_id: int) -> bool:
        """A hostile server: answers the size probe, then refuses every chunk (the
        fetcher has preallocated the whole blob by then)."""
        if honest or cid.digest not in asked:
            asked.add(cid.digest)
            return True
        return False

    server = P2PNode(
        Identity.generate(),
        make_config(enable_dht=False),
        blob_store=BlobStore(tmp_path / "server"),
        authorize=announce_then_refuse,
    )
    cap = 5 * CHUNK_SIZE
    store = BlobStore(tmp_path / "client", max_partial_bytes=cap, max_partials=3)
    client = P2PNode(Identity.generate(), make_config(enable_dht=False), blob_store=store)
    blobs = [os.urandom(2 * CHUNK_SIZE) for _ in range(6)]

    async def main() -> None:
        nonlocal honest
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            await nursery.start(client.run)
            await client.connect(server.addrs()[0])
            assert server.blob_store is not None
            cids = [server.blob_store.put_bytes(b) for b in blobs]
            for i, cid in enumerate(cids):
                with pytest.raises(BlobFetchError, match="forbidden"):
                    await client.blobs.fetch(
                        server.peer_id, cid, JOB, max_size=1 << 30, via="libp2p"
                    )
                held = partials(store)
                assert cid.digest.hex() in held  # kept for a resume
                assert len(held) <= 3 and sum(held.values()) <= cap, (i, held)
            # the least recently written went first: the last two remain
            assert set(partials(store)) == {c.digest.hex() for c in cids[-2:]}
            assert client.metrics.get("blob_fetch_refused", reason="no_space") == 0

            # a blob larger than the whole partial space: refused, nothing deleted
            big = server.blob_store.put_bytes(os.urandom(cap + 1))
            before = partials(store)
            with pytest.raises(BlobFetchError, match="exceeds the partial space"):
                await client.blobs.fetch(server.peer_id, big, JOB, max_size=1 << 30)
            assert partials(store) == before
            assert client.metrics.get("blob_fetch_refused", reason="no_space") == 1

            # the kept partial still resumes once the server sends
            honest = True
            path = await client.blobs.fetch(server.peer_id, cids[-1], JOB, max_size=1 << 30)
            assert path.read_bytes() == blobs[-1]
            assert set(partials(store)) == {cids[-2].digest.hex()}
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_open_partials_are_never_evicted(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_partial_bytes=4 * CHUNK_SIZE, max_partials=2)
    a = store.partial(ContentId(bytes([1]) * 32), 2 * CHUNK_SIZE)
    b = store.partial(ContentId(bytes([2]) * 32), 2 * CHUNK_SIZE)
    before = partials(store)
    # both in use: a third download is refused and nothing is deleted
    for size in (1, 2 * CHUNK_SIZE):
        with pytest.raises(PartialSpaceFull, match="no room"):
            store.partial(ContentId(bytes([3]) * 32), size)
    assert partials(store) == before
    b.close()  # idle now: the next download may take its place
    c = store.partial(ContentId(bytes([3]) * 32), 2 * CHUNK_SIZE)
    assert set(partials(store)) == {bytes([1]).hex() * 32, bytes([3]).hex() * 32}
    a.close()
    c.close()
