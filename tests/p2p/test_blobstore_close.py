"""PartialBlob.close is idempotent: a second close must not hit a reused descriptor.

(The fetch path closes a partial in a ``finally`` and again in ``finish``; with
several fetches in flight the second close used to close another transfer's
socket or file, which then failed with EBADF.)
"""

from __future__ import annotations

import os
from pathlib import Path

from node.p2p.blobstore import BlobStore
from protocol.content import cid_of


def test_second_close_leaves_a_reused_descriptor_alone(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = b"x" * 10
    partial = store.partial(cid_of(data), len(data))
    partial.write(0, data)
    partial.mark(0, len(data))
    partial.close()
    reused = [os.open(tmp_path / f"other{i}", os.O_CREAT | os.O_RDWR, 0o600) for i in range(2)]
    try:
        path = partial.finish()  # closes again internally
        assert path.read_bytes() == data
        for fd in reused:
            os.fstat(fd)  # still open: raises OSError(EBADF) if closed behind our back
    finally:
        for fd in reused:
            os.close(fd)
