"""BlobStore.put_bytes from many threads at once (the client keeps a job's blobs in a
worker thread while it requests the job; concurrent jobs share their weights)."""

from __future__ import annotations

import threading
from pathlib import Path

from node.p2p.blobstore import BlobStore
from protocol.content import cid_of


def test_concurrent_puts_of_the_same_bytes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    blobs = [bytes([i]) * (256 << 10) for i in range(40)]  # each put by every thread at once
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def put() -> None:
        for data in blobs:
            start.wait()
            try:
                assert store.put_bytes(data) == cid_of(data)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for data in blobs:
        assert store.path(cid_of(data)).read_bytes() == data
    assert [
        p.name for p in store.path(cid_of(blobs[0])).parent.iterdir() if p.suffix == ".tmp"
    ] == []
