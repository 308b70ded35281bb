"""Complete blobs are bounded: the store counts their bytes and :meth:`BlobStore.collect`
deletes the least recently used ones outside ``keep`` down to the low watermark."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from node.p2p.blobstore import BlobStore
from protocol.content import CHUNK_SIZE, ContentId, cid_of

KB = 1000


def blob(i: int, size: int = 10 * KB) -> bytes:
    return i.to_bytes(4, "big") * (size // 4)


def on_disk(store: BlobStore) -> dict[str, int]:
    """hex digest -> size of every complete blob file."""
    return {p.name: p.stat().st_size for p in store.root.iterdir() if len(p.name) == 64}


def test_collect_deletes_least_recently_used_first_down_to_the_low_watermark(
    tmp_path: Path,
) -> None:
    store = BlobStore(tmp_path, max_bytes=45 * KB)  # low watermark: 40.5 kB
    cids = [store.put_bytes(blob(i)) for i in range(6)]
    assert store.usage() == (6, 60 * KB) and store.over()
    assert store.has(cids[0])  # read for a job: now the most recent
    assert store.size(cids[1]) == 10 * KB  # served to a peer: most recent after 0
    assert store.collect() == (2, 20 * KB)  # 2 and 3, the least recently used
    assert not store.has(cids[2]) and not store.has(cids[3])
    assert all(store.has(c) for c in (cids[0], cids[1], cids[4], cids[5]))
    assert store.usage() == (4, 40 * KB) == (len(on_disk(store)), sum(on_disk(store).values()))
    assert store.collect() == (0, 0)  # at or under the low watermark: nothing to do
    assert list((tmp_path / "trash").iterdir()) == []


def test_collect_never_deletes_a_kept_blob_even_past_the_bound(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_bytes=25 * KB)
    cids = [store.put_bytes(blob(i)) for i in range(5)]
    keep = {cids[0].digest, cids[1].digest, cids[2].digest}  # the three oldest
    assert store.collect(keep) == (2, 20 * KB)
    assert [store.has(c) for c in cids] == [True, True, True, False, False]
    assert store.usage() == (3, 30 * KB) and store.over()  # owed blobs stay over the bound
    assert store.collect(keep) == (0, 0)
    assert store.collect() == (1, 10 * KB)  # once no longer owed: back under


def test_a_blob_used_after_the_mark_survives_that_pass(tmp_path: Path) -> None:
    """A caller snapshots ``keep`` with the mark; work begun after it is safe."""
    store = BlobStore(tmp_path, max_bytes=5 * KB)
    old, used = store.put_bytes(blob(1)), store.put_bytes(blob(2))
    mark = store.mark()
    assert store.has(used)  # a job took it after the snapshot
    fresh = store.put_bytes(blob(3))  # and one written after it
    assert store.collect(unused_since=mark) == (1, 10 * KB)
    assert not store.has(old) and store.has(used) and store.has(fresh)


def test_the_count_and_order_survive_a_reopen(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_bytes=35 * KB)
    cids = [store.put_bytes(blob(i, (i + 1) * KB)) for i in range(4)]
    now = time.time()
    for age, cid in zip((10, 40, 30, 20), cids, strict=True):  # 1 is oldest, then 2, 3, 0
        os.utime(store.path(cid), (now - age, now - age))
    again = BlobStore(tmp_path, max_bytes=6 * KB)
    assert again.usage() == (4, 10 * KB)
    # low watermark 5.4 kB: the two oldest by mtime (not by write order) go
    assert again.collect() == (2, 5 * KB)
    assert [again.has(c) for c in cids] == [True, False, False, True]


def test_finished_downloads_adoptions_and_removals_are_counted(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_bytes=1 << 30)
    data = os.urandom(CHUNK_SIZE + 5)
    cid = cid_of(data)
    partial = store.partial(cid, len(data))
    partial.write(0, data)
    partial.mark(0, len(data))
    partial.finish()
    assert store.usage() == (1, len(data))
    upload = tmp_path / "partial" / "upload"
    upload.write_bytes(b"uploaded")
    store.adopt(upload, cid_of(b"uploaded"))
    assert store.usage() == (2, len(data) + 8)
    store.remove(cid)
    assert store.usage() == (1, 8)
    store.put_bytes(b"uploaded")  # already there: counted once
    assert store.usage() == (1, 8)


def test_a_file_deleted_behind_the_stores_back_is_uncounted_on_lookup(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    cid = store.put_bytes(b"gone")
    store.path(cid).unlink()
    assert not store.has(ContentId(cid.digest))
    assert store.usage() == (0, 0)


def test_concurrent_puts_and_collections_keep_the_count_exact(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_bytes=200 * KB)
    kept = [store.put_bytes(blob(10_000 + i)) for i in range(5)]
    keep = {c.digest for c in kept}
    stop = threading.Event()
    deleted: list[int] = []

    def put(first: int) -> None:
        for i in range(first, first + 150):
            store.put_bytes(blob(i % 60))  # overlapping writers: the same blobs again

    def collect() -> None:
        while not stop.is_set():
            deleted.append(store.collect(keep)[0])

    writers = [threading.Thread(target=put, args=(n * 20,)) for n in range(3)]
    collector = threading.Thread(target=collect)
    collector.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    collector.join()
    files = on_disk(store)
    assert store.usage() == (len(files), sum(files.values()))
    assert all(store.has(c) for c in kept)
    assert sum(deleted) > 0
    store.collect(keep)
    assert store.usage()[1] <= store.low_watermark
    assert BlobStore(tmp_path).usage() == store.usage()
