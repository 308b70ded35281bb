"""Blob upload for the API: stream a request body into the blob store, bounded and hashed.

A client node's API takes model weights and inputs as raw bytes
(``POST /v1/blobs``) before a job names them by content id. The body is read
in chunks into a temporary file under the store's ``partial/`` directory and
hashed on the way; past ``limit`` bytes the upload stops, the file is removed
and :class:`BlobTooLarge` is raised, so an oversized or aborted upload leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from typing import Final, Protocol

from node.p2p.blobstore import BlobStore
from protocol.content import ContentId

__all__ = ["BlobTooLarge", "ChunkSource", "receive_blob"]

CHUNK: Final = 1 << 20


class BlobTooLarge(Exception):
    """The upload is larger than the limit."""


class ChunkSource(Protocol):
    """What aiohttp's ``request.content`` offers (a stream of bytes)."""

    async def read(self, n: int = -1) -> bytes: ...


async def receive_blob(source: ChunkSource, store: BlobStore, limit: int) -> tuple[ContentId, int]:
    """Store the body's bytes; returns (content id, size). Raises :class:`BlobTooLarge`."""
    tmp = store.root / "partial" / f"upload-{secrets.token_hex(8)}"
    digest = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as fh:
            while chunk := await source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise BlobTooLarge(f"the blob is over {limit} bytes")
                digest.update(chunk)
                await asyncio.to_thread(fh.write, chunk)
            fh.flush()
            await asyncio.to_thread(os.fsync, fh.fileno())
        cid = ContentId(digest.digest())
        store.adopt(tmp, cid)
        return cid, size
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
