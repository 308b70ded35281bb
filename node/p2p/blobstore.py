"""Content-addressed blob files on disk, and resumable partial downloads.

Layout under ``root``: ``<sha256 hex>`` for complete, verified blobs;
``partial/<hex>.part`` plus ``partial/<hex>.chunks`` (one byte per
:data:`~protocol.content.CHUNK_SIZE` chunk, 1 = received) for downloads in
progress. A partial download is verified as a whole (sha256 against the content
id) before it is moved into place; a mismatch deletes it.

Partial downloads are bounded: a peer that announces a size and then sends
nothing (or aborts) leaves a preallocated file behind for a later resume, so
the partial files may hold at most ``max_partial_bytes`` and number at most
``max_partials``. A new download makes room by deleting the least recently
written partials that no open download uses; if that cannot make room,
:class:`PartialSpaceFull` is raised and nothing is deleted or created.

Complete blobs are bounded too: the store knows the bytes they hold (scanned
once at open, kept current by every put, finished download, adoption and
removal, under one lock) and their use order, least recently used first (at
open: by file mtime; then every write, look-up for a job and serve to a peer
moves a blob to the end; mtimes follow at most once a minute, so a restart
keeps the order roughly). :meth:`BlobStore.collect` deletes least recently
used blobs the caller does not name in ``keep`` until the total is at or
under the low watermark (90 % of ``max_bytes``). A blob used after the
caller's :meth:`BlobStore.mark` is never deleted by that pass, so a caller
that takes the mark in the same step as its ``keep`` snapshot loses no blob
that work begun after the snapshot relies on. Deleted files are first renamed
into ``trash/`` under the lock (cheap), then unlinked outside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from protocol.content import CHUNK_SIZE, ContentId, cid_of

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PARTIALS",
    "DEFAULT_MAX_PARTIAL_BYTES",
    "BlobCorrupt",
    "BlobStore",
    "PartialBlob",
    "PartialSpaceFull",
]

log = logging.getLogger(__name__)

_READ = 8 << 20
#: Disk all partial downloads of one store may hold (two of the largest blobs, 4 GiB).
DEFAULT_MAX_PARTIAL_BYTES = 8 << 30
#: Partial downloads one store keeps at once.
DEFAULT_MAX_PARTIALS = 64
#: Disk the complete blobs of one store may hold before collection deletes the least
#: recently used ones (docs/architecture.md, "Blob store bounds").
DEFAULT_MAX_BYTES = 64 << 30
#: Collection stops once the complete blobs hold at most this share of ``max_bytes``.
LOW_WATERMARK = 0.9
#: A used blob's file mtime is refreshed at most this often (seconds).
_STAMP_EVERY_S = 60.0
_NAME = re.compile(r"^[0-9a-f]{64}$")


@dataclass(slots=True)
class _Entry:
    size: int
    used: int  # use sequence number (higher: more recent)
    stamped: float  # when the file's mtime was last set (time.time())


class BlobCorrupt(Exception):
    """A downloaded blob does not hash to its content id (it was deleted)."""


class PartialSpaceFull(Exception):
    """No room for another partial download (nothing was deleted or created)."""


class BlobStore:
    """See the module docstring."""

    def __init__(
        self,
        root: Path | str,
        *,
        max_partial_bytes: int = DEFAULT_MAX_PARTIAL_BYTES,
        max_partials: int = DEFAULT_MAX_PARTIALS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_partial_bytes < 0 or max_partials < 1 or max_bytes < 1:
            raise ValueError("max_partial_bytes must be >= 0, max_partials >= 1 and max_bytes >= 1")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "partial").mkdir(exist_ok=True)
        self._trash = self.root / "trash"
        self._trash.mkdir(exist_ok=True)
        self.max_partial_bytes = max_partial_bytes
        self.max_partials = max_partials
        self.max_bytes = max_bytes
        self.low_watermark = int(max_bytes * LOW_WATERMARK)
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}  # hex digest -> open PartialBlobs of it
        # complete blobs, least recently used first: hex digest -> size and last use
        self._index: OrderedDict[str, _Entry] = OrderedDict()
        self._total = 0
        self._seq = 0
        self._scan()

    # ------------------------------------------------------------ complete blobs
    def _scan(self) -> None:
        """Index the complete blobs on disk, oldest mtime first; empty the trash a
        crash during a collection may have left."""
        for leftover in self._trash.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        found: list[tuple[float, str, int]] = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not _NAME.match(entry.name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        found.append((st.st_mtime, entry.name, st.st_size))
        found.sort()
        for mtime, name, size in found:
            self._seq += 1
            self._index[name] = _Entry(size, self._seq, mtime)
            self._total += size

    def usage(self) -> tuple[int, int]:
        """(count, bytes) of the complete blobs."""
        with self._lock:
            return len(self._index), self._total

    def over(self) -> bool:
        """True while the complete blobs hold more than ``max_bytes``."""
        return self._total > self.max_bytes

    def mark(self) -> int:
        """The current use sequence: blobs used after it are spared by
        :meth:`collect` (``unused_since``)."""
        with self._lock:
            return self._seq

    def _used(self, name: str, size: int) -> _Entry:
        """Record a use of blob ``name`` of ``size`` bytes (lock held): it becomes the
        most recently used; a blob not indexed yet is added."""
        entry = self._index.get(name)
        self._seq += 1
        if entry is None:
            entry = self._index[name] = _Entry(size, self._seq, time.time())
            self._total += size
        else:
            self._total += size - entry.size
            entry.size, entry.used = size, self._seq
            self._index.move_to_end(name)
        return entry

    def _forget(self, name: str) -> None:
        entry = self._index.pop(name, None)
        if entry is not None:
            self._total -= entry.size

    def _stamp(self, name: str, entry: _Entry) -> None:
        """Refresh the file's mtime (the LRU order a restart rebuilds), at most once
        every :data:`_STAMP_EVERY_S`."""
        now = time.time()
        if now - entry.stamped < _STAMP_EVERY_S:
            return
        entry.stamped = now
        with contextlib.suppress(OSError):
            os.utime(self.root / name)

    def _lookup(self, name: str) -> int | None:
        """The size of complete blob ``name`` (None if absent); marks it used."""
        with self._lock:
            try:
                st = (self.root / name).stat()
            except FileNotFoundError:
                self._forget(name)  # deleted behind our back
                return None
            entry = self._used(name, st.st_size)
        self._stamp(name, entry)
        return st.st_size

    def collect(
        self, keep: Collection[bytes] = (), *, unused_since: int | None = None
    ) -> tuple[int, int]:
        """Delete least recently used complete blobs until they hold at most the low
        watermark; returns (count, bytes) deleted.

        Never deleted: a blob whose digest is in ``keep``, one used after
        ``unused_since`` (a :meth:`mark`; default: now), one being written (it is
        indexed only once in place). A file being served stays readable through its
        open descriptor. Runs in a worker thread; the index lock is held while
        victims are picked and renamed into ``trash/``, not while they are unlinked.
        """
        names = {d.hex() for d in keep}
        doomed: list[tuple[Path, int]] = []
        with self._lock:
            limit = self._seq if unused_since is None else unused_since
            excess = self._total - self.low_watermark
            if excess <= 0:
                return 0, 0
            victims: list[str] = []
            for name, entry in self._index.items():
                if excess <= 0 or entry.used > limit:
                    break  # the rest were used more recently still
                if name in names:
                    continue
                victims.append(name)
                excess -= entry.size
            for name in victims:
                trash = self._trash / name
                try:
                    os.replace(self.root / name, trash)
                except FileNotFoundError:
                    self._forget(name)
                    continue
                except OSError as exc:
                    log.warning("cannot delete blob %s: %s", name, exc)
                    continue
                doomed.append((trash, self._index[name].size))
                self._forget(name)
        for trash, _ in doomed:
            with contextlib.suppress(FileNotFoundError):
                trash.unlink()
        freed = sum(size for _, size in doomed)
        if doomed:
            log.info("collected %d blobs (%d bytes)", len(doomed), freed)
        return len(doomed), freed

    def adopt(self, src: Path, cid: ContentId) -> Path:
        """Move the verified file ``src`` (same file system) into place as ``cid``."""
        target = self.path(cid)
        size = src.stat().st_size
        os.replace(src, target)
        with self._lock:
            self._used(target.name, size)
        return target

    def path(self, cid: ContentId) -> Path:
        """Where ``cid`` lives (whether or not it exists)."""
        return self.root / cid.digest.hex()

    def has(self, cid: ContentId) -> bool:
        """True if the complete blob is here (a use: it becomes the most recent)."""
        return self._lookup(cid.digest.hex()) is not None

    def size(self, cid: ContentId) -> int | None:
        """Size of a stored blob, or None (a use, like :meth:`has`)."""
        return self._lookup(cid.digest.hex())

    def put_bytes(self, data: bytes) -> ContentId:
        """Store ``data``; returns its content id. Thread-safe: concurrent puts of the
        same bytes each write a file of their own and rename it into place."""
        cid = cid_of(data)
        target = self.path(cid)
        if self._lookup(target.name) is None:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            with self._lock:
                self._used(target.name, len(data))
        return cid

    def partial(self, cid: ContentId, total_size: int) -> PartialBlob:
        """The (possibly resumed) partial download of ``cid``; makes room for it first
        (see the module docstring) or raises :class:`PartialSpaceFull`."""
        name = cid.digest.hex()
        with self._lock:
            self._make_room(name, total_size)
            self._open[name] = self._open.get(name, 0) + 1
        try:
            return PartialBlob(self, cid, total_size)
        except BaseException:
            self._release(name)
            raise

    def remove(self, cid: ContentId) -> None:
        """Delete ``cid``'s blob and its partial download, unless a download of it is
        open (then the partial stays)."""
        name = cid.digest.hex()
        with self._lock:
            self.path(cid).unlink(missing_ok=True)
            self._forget(name)
            if name not in self._open:
                base = self.root / "partial" / name
                base.with_suffix(".part").unlink(missing_ok=True)
                base.with_suffix(".chunks").unlink(missing_ok=True)

    def partial_bytes(self) -> tuple[int, int]:
        """(count, bytes) of the partial downloads on disk."""
        count = used = 0
        for part in (self.root / "partial").glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                used += part.stat().st_size
                count += 1
        return count, used

    def _make_room(self, name: str, size: int) -> None:
        """Delete the least recently written idle partials until a ``size``-byte
        download fits; refuse (deleting nothing) when even that would not do."""
        if size > self.max_partial_bytes:
            raise PartialSpaceFull(
                f"a {size}-byte download exceeds the partial space of {self.max_partial_bytes}"
            )
        used = count = 0
        idle: list[tuple[float, int, Path]] = []
        for part in (self.root / "partial").glob("*.part"):
            if part.stem == name:
                continue  # this blob's own file: resumed or restarted in place
            try:
                st = part.stat()
            except FileNotFoundError:
                continue
            used += st.st_size
            count += 1
            if part.stem not in self._open:
                idle.append((st.st_mtime, st.st_size, part))
        idle.sort()
        in_use = used - sum(s for _, s, _ in idle)
        if in_use + size > self.max_partial_bytes or count - len(idle) >= self.max_partials:
            raise PartialSpaceFull(
                f"no room for a {size}-byte download: {count} partial downloads "
                f"({used} bytes) are in progress"
            )
        for _, part_size, part in idle:
            if used + size <= self.max_partial_bytes and count < self.max_partials:
                break
            part.unlink(missing_ok=True)
            part.with_suffix(".chunks").unlink(missing_ok=True)
            used -= part_size
            count -= 1
            log.info("deleted idle partial download %s (%d bytes) to make room", part, part_size)

    def _release(self, name: str) -> None:
        with self._lock:
            left = self._open.get(name, 0) - 1
            if left > 0:
                self._open[name] = left
            else:
                self._open.pop(name, None)


def hash_file(path: Path) -> bytes:
    """sha256 of a file (run it in a worker thread: hashlib releases the GIL)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_READ):
            h.update(block)
    return h.digest()


class PartialBlob:
    """A download in progress; chunks may arrive in any order and across restarts."""

    def __init__(self, store: BlobStore, cid: ContentId, total_size: int) -> None:
        self.store = store
        self.cid = cid
        self.total_size = total_size
        base = store.root / "partial" / cid.digest.hex()
        self.part_path = base.with_suffix(".part")
        self.map_path = base.with_suffix(".chunks")
        self._released = False
        self.n_chunks = (total_size + CHUNK_SIZE - 1) // CHUNK_SIZE
        done = b""
        if self.part_path.exists() and self.map_path.exists():
            done = self.map_path.read_bytes()
            if len(done) != self.n_chunks or self.part_path.stat().st_size != total_size:
                done = b""  # a different size was announced: start over
        self.done = bytearray(done or bytes(self.n_chunks))
        self._fd = os.open(self.part_path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size != total_size:
            os.ftruncate(self._fd, total_size)
        if total_size:
            # allocate blocks up front: writes into a sparse file are much slower; a file
            # system without fallocate just stays sparse
            with contextlib.suppress(OSError):
                os.posix_fallocate(self._fd, 0, total_size)
        self._map_fd = os.open(self.map_path, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self._map_fd, bytes(self.done), 0)
        # bytes arriving in order from offset 0 are hashed as they come (no second pass)
        self._hasher = hashlib.sha256()
        self._hashed = 0 if not any(self.done) else -1

    def missing(self) -> list[tuple[int, int]]:
        """Byte ranges ``(offset, length)`` still to fetch, merged into runs."""
        runs: list[tuple[int, int]] = []
        start = None
        for i in range(self.n_chunks + 1):
            missing = i < self.n_chunks and not self.done[i]
            if missing and start is None:
                start = i
            elif not missing and start is not None:
                off = start * CHUNK_SIZE
                end = min(i * CHUNK_SIZE, self.total_size)
                runs.append((off, end - off))
                start = None
        return runs

    def received_bytes(self) -> int:
        """Bytes already held."""
        full = sum(self.done) * CHUNK_SIZE
        if self.n_chunks and self.done[-1]:
            full -= self.n_chunks * CHUNK_SIZE - self.total_size
        return full

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write received bytes at ``offset`` (no chunk is marked yet)."""
        if offset < 0 or offset + len(data) > self.total_size:
            raise ValueError("write outside the blob")
        os.pwrite(self._fd, data, offset)
        if offset == self._hashed:
            self._hasher.update(data)
            self._hashed += len(data)

    def mark(self, start: int, end: int) -> None:
        """Mark every chunk lying entirely inside the written range ``[start, end)``."""
        first = (start + CHUNK_SIZE - 1) // CHUNK_SIZE
        i = first
        while i < self.n_chunks:
            chunk_end = min((i + 1) * CHUNK_SIZE, self.total_size)
            if chunk_end > end:
                break
            if not self.done[i]:
                self.done[i] = 1
                os.pwrite(self._map_fd, b"\x01", i)
            i += 1

    def complete(self) -> bool:
        """All chunks received."""
        return all(self.done)

    def close(self) -> None:
        """Close the files (the partial state stays for a later resume)."""
        # idempotent: closing a descriptor twice could close someone else's reused number
        fds, self._fd, self._map_fd = (self._fd, self._map_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if not self._released:
            self._released = True
            self.store._release(self.cid.digest.hex())

    def finish(self) -> Path:
        """Verify the whole blob and move it into the store; raise :class:`BlobCorrupt`."""
        self.close()
        if self.store.has(self.cid):
            self.discard()
            return self.store.path(self.cid)
        if self._hashed >= 0:  # hash the rest (out-of-order ranges) from the file
            with self.part_path.open("rb") as f:
                f.seek(self._hashed)
                while block := f.read(_READ):
                    self._hasher.update(block)
            digest = self._hasher.digest()
        else:
            digest = hash_file(self.part_path)
        if digest != self.cid.digest:
            self.discard()
            raise BlobCorrupt(f"blob {self.cid} hashed to sha256:{digest.hex()}; deleted")
        path = self.store.adopt(self.part_path, self.cid)
        self.map_path.unlink(missing_ok=True)
        return path

    def discard(self) -> None:
        """Delete the partial state."""
        self.close()
        self.part_path.unlink(missing_ok=True)
        self.map_path.unlink(missing_ok=True)
