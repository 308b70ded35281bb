"""Content ids: sha256 digests with a textual form, streaming hashing, chunking.

A content id (CID) names bytes by their sha256. Its textual form is
``sha256:<64 lowercase hex>``; the binary form is the 32-byte digest. Blobs
travel in fixed-size chunks so a transfer can be resumed at any chunk boundary
and each chunk is checked as it arrives, before the whole blob is hashed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator
from typing import Final

from protocol.errors import InvalidField

__all__ = [
    "CHUNK_SIZE",
    "CID_PREFIX",
    "ChunkSpan",
    "ContentId",
    "StreamingHasher",
    "chunk_hashes",
    "chunk_spans",
    "cid_of",
    "hash_stream",
]

CID_PREFIX: Final = "sha256:"
#: Default chunk size of the blob protocol (1 MiB).
CHUNK_SIZE: Final = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class ContentId:
    """The sha256 digest of a blob."""

    digest: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            raise InvalidField("a content id is a 32-byte sha256 digest")

    @classmethod
    def parse(cls, text: str) -> ContentId:
        """Parse ``sha256:<hex>``; raise :class:`InvalidField` otherwise."""
        if not isinstance(text, str) or len(text) != len(CID_PREFIX) + 64:
            raise InvalidField(f"not a content id: {text!r:.80}")
        if not text.startswith(CID_PREFIX):
            raise InvalidField(f"content id must start with {CID_PREFIX!r}")
        body = text[len(CID_PREFIX) :]
        if body != body.lower():
            raise InvalidField("content id hex must be lowercase")
        try:
            return cls(bytes.fromhex(body))
        except ValueError:
            raise InvalidField(f"content id is not hex: {text!r}") from None

    def __str__(self) -> str:
        return CID_PREFIX + self.digest.hex()

    def matches(self, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` hashes to this id."""
        return hashlib.sha256(data).digest() == self.digest


def cid_of(data: bytes | bytearray | memoryview) -> ContentId:
    """Content id of in-memory bytes."""
    return ContentId(hashlib.sha256(data).digest())


class StreamingHasher:
    """Incremental sha256 that also counts bytes and enforces a size cap."""

    __slots__ = ("_h", "limit", "size")

    def __init__(self, limit: int | None = None) -> None:
        self._h = hashlib.sha256()
        self.size = 0
        self.limit = limit

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes; raise :class:`InvalidField` if the cap is exceeded."""
        n = len(data)
        if self.limit is not None and self.size + n > self.limit:
            raise InvalidField(f"content exceeds the size limit of {self.limit} bytes")
        self._h.update(data)
        self.size += n

    def content_id(self) -> ContentId:
        """Content id of everything fed so far."""
        return ContentId(self._h.digest())


def hash_stream(
    chunks: Iterable[bytes | bytearray | memoryview], limit: int | None = None
) -> tuple[ContentId, int]:
    """Hash an iterable of byte chunks: ``(content id, total size)``."""
    hasher = StreamingHasher(limit)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.content_id(), hasher.size


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkSpan:
    """Chunk ``index`` covers ``[offset, offset + length)`` of a blob."""

    index: int
    offset: int
    length: int


def chunk_spans(size: int, chunk_size: int = CHUNK_SIZE, start: int = 0) -> Iterator[ChunkSpan]:
    """The chunks of a ``size``-byte blob, from the chunk containing offset ``start``."""
    if size < 0 or chunk_size <= 0 or start < 0:
        raise InvalidField("size, chunk size and start must be non-negative (chunk size > 0)")
    index = start // chunk_size
    offset = index * chunk_size
    while offset < size:
        length = min(chunk_size, size - offset)
        yield ChunkSpan(index, offset, length)
        index += 1
        offset += length


def chunk_hashes(data: bytes | bytearray | memoryview, chunk_size: int = CHUNK_SIZE) -> list[bytes]:
    """sha256 of each chunk of ``data`` (lets a receiver check chunks as they arrive)."""
    view = memoryview(data)
    return [
        hashlib.sha256(view[s.offset : s.offset + s.length]).digest()
        for s in chunk_spans(len(view), chunk_size)
    ]
