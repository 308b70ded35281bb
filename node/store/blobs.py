"""Index of blobs on disk (models, inputs, outputs) and why each is kept.

A blob is pinned until a time, by hand (``pinned_until``) and by each job
that needs it (a provider keeps serving a job's blobs until its challenge
window closes). :meth:`Blobs.collectable` lists blobs no pin protects any
more; deleting the file and then the row is the caller's job.
"""

from __future__ import annotations

from typing import Any, Final

from node.store.db import Database
from node.store.records import MAX_PATH_CHARS, BlobRecord, StoreError, check_i64
from protocol.content import ContentId

__all__ = ["Blobs"]

_MAX_LIST: Final = 1000
_SELECT: Final = """
SELECT b.cid, b.size, b.path, b.created_at,
       max(b.pinned_until, coalesce(max(p.until), 0)) AS pinned_until,
       group_concat(p.job) AS jobs
FROM blobs b LEFT JOIN blob_pins p ON p.cid = b.cid
"""


class Blobs:
    """The ``blobs`` and ``blob_pins`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, cid: ContentId, size: int, path: str, *, pinned_until: int = 0) -> BlobRecord:
        """Index a blob (idempotent for the same cid, size and path; pins only grow)."""
        if not isinstance(cid, ContentId):
            raise StoreError("cid must be a ContentId")
        check_i64("size", size)
        check_i64("pinned_until", pinned_until)
        if not isinstance(path, str) or not 0 < len(path) <= MAX_PATH_CHARS or "\0" in path:
            raise StoreError("path must be a non-empty string of at most 4096 characters")
        with self._db.transaction() as db:
            existing = self.get(cid)
            if existing is not None and (existing.size, existing.path) != (size, path):
                raise StoreError(f"{cid} is already indexed with another size or path")
            db.execute(
                "INSERT INTO blobs (cid, size, path, created_at, pinned_until)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (cid) DO UPDATE SET"
                " pinned_until = max(pinned_until, excluded.pinned_until)",
                (str(cid), size, path, self._db.now_ms(), pinned_until),
            )
            record = self.get(cid)
            assert record is not None
            return record

    def pin(self, cid: ContentId, job: int, until: int) -> None:
        """Keep ``cid`` at least until ``until`` (unix seconds) for local job ``job``."""
        check_i64("until", until)
        with self._db.transaction() as db:
            if self.get(cid) is None:
                raise StoreError(f"{cid} is not indexed")
            if not db.execute("SELECT 1 FROM jobs WHERE id = ?", (int(job),)).fetchone():
                raise StoreError(f"no job with local id {job}")
            db.execute(
                "INSERT INTO blob_pins (cid, job, until) VALUES (?, ?, ?)"
                " ON CONFLICT (cid, job) DO UPDATE SET until = max(until, excluded.until)",
                (str(cid), int(job), until),
            )

    def get(self, cid: ContentId) -> BlobRecord | None:
        """The blob's record, or None."""
        rows = self._db.query(_SELECT + " WHERE b.cid = ? GROUP BY b.cid", (str(cid),))
        return _blob(rows[0]) if rows else None

    def collectable(self, now: int, limit: int = 100) -> list[BlobRecord]:
        """Blobs whose every pin ended before ``now`` (unix seconds), oldest first."""
        check_i64("now", now)
        if not 1 <= limit <= _MAX_LIST:
            raise StoreError(f"limit must be in [1, {_MAX_LIST}]")
        rows = self._db.query(
            f"SELECT * FROM ({_SELECT} GROUP BY b.cid)"
            " WHERE pinned_until < ? ORDER BY created_at, cid LIMIT ?",
            (now, limit),
        )
        return [_blob(r) for r in rows]

    def remove(self, cid: ContentId) -> bool:
        """Drop a blob's row and its pins (after its file is deleted)."""
        with self._db.transaction() as db:
            return db.execute("DELETE FROM blobs WHERE cid = ?", (str(cid),)).rowcount > 0


def _blob(r: dict[str, Any]) -> BlobRecord:
    jobs = tuple(sorted(int(j) for j in r["jobs"].split(","))) if r["jobs"] else ()
    return BlobRecord(
        cid=ContentId.parse(r["cid"]),
        size=r["size"],
        path=r["path"],
        created_at=r["created_at"],
        pinned_until=r["pinned_until"],
        jobs=jobs,
    )
