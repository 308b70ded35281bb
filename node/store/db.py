"""The sqlite connection: file creation, pragmas, and transactions.

Durability choice: WAL with ``synchronous=FULL``. In WAL mode ``NORMAL`` is
already safe against a killed *process* (committed pages sit in the OS page
cache), but a power loss or kernel crash can drop the last commits. The store
records facts that must not be forgotten: an attestation this provider has
signed (signing a different one for the same job after a restart is
equivocation, which is slashable), a transaction hash that was sent, a
payment a client locked. So every commit is fsynced (FULL): a transaction
returns only once the WAL is on disk. Callers that write several rows for one
step group them in one :meth:`Database.transaction`, which is also what makes
the step atomic.

Facts the chain also holds (a job's ``createJob``, ``submitResult`` or
finalization, each with its transaction in the chain's own log) may be
committed with ``durable=False``: the commit returns without waiting for the
fsync. A killed process still loses nothing (the page cache keeps the WAL); a
power loss may drop such a last commit, and the restart reconciles the job
with the chain as it does for any job a crash caught mid-step. What the chain
does not know (a job's spec and peer before ``createJob``, a signed
attestation before it leaves the node) is always durable first.

Group commit: in ``FULL`` mode sqlite itself runs with ``synchronous=NORMAL``
(no fsync inside ``COMMIT``, so the connection lock is not held across the
disk flush) and each outermost transaction then waits, outside the lock, for
a WAL fsync that began after its ``COMMIT``. Commits that arrive while one
fsync is running share the next one, so concurrent jobs do not queue one
fsync each (~4 ms on the benchmark VM) behind one lock. With ``NORMAL`` sqlite
still syncs the WAL before every checkpoint, so the database file stays
consistent as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from node.store.schema import SCHEMA_VERSION, migrate

__all__ = ["Database", "Synchronous"]

Synchronous = Literal["FULL", "NORMAL"]


class Database:
    """One sqlite file (mode 0600, WAL), shared by the repositories of a :class:`Store`.

    Thread-safe: every operation holds one re-entrant lock, and a transaction
    holds it from ``BEGIN`` to ``COMMIT``.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "FULL",
        clock: Callable[[], float] = time.time,
        migrate_to: int = SCHEMA_VERSION,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = path
        self.clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self._owner: object = None
        self._sync = _GroupSync(Path(str(path) + "-wal")) if synchronous == "FULL" else None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        try:
            self.db.execute("PRAGMA busy_timeout = 10000")
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous = NORMAL")  # FULL: see _GroupSync
            self.db.execute("PRAGMA foreign_keys = ON")
            self.version = migrate(self.db, migrate_to)
            if self._sync is not None:
                self._sync.wait(self._sync.committed())
        except BaseException:
            conn.close()
            raise

    def now_ms(self) -> int:
        """The clock, in unix milliseconds."""
        return int(self.clock() * 1000)

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite_utils.Database]:
        """All writes inside commit together or not at all; nested blocks are savepoints.

        Never ``await`` inside: the lock is per thread, so another task on the
        same event loop would silently join the transaction (this is checked).
        ``durable=False`` (outermost block only) returns after ``COMMIT`` without
        waiting for the WAL fsync (see the module docstring: for facts the chain
        holds too); the next durable commit's fsync covers it.
        """
        seq = 0
        with self._lock:
            if self._depth:
                if _current_task() is not self._owner:
                    raise RuntimeError(
                        "a store transaction is open in another asyncio task; "
                        "do not await inside Store.transaction()"
                    )
                self._depth += 1
                try:
                    with self.db.atomic():
                        yield self.db
                finally:
                    self._depth -= 1
                return
            self.db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            self._owner = _current_task()
            try:
                yield self.db
            except BaseException:
                self.db.rollback()
                raise
            else:
                try:
                    self.db.execute("COMMIT")
                except BaseException:
                    self.db.rollback()
                    raise
                if self._sync is not None:
                    seq = self._sync.committed() if durable else 0
            finally:
                self._depth = 0
                self._owner = None
        if seq:
            assert self._sync is not None
            self._sync.wait(seq)  # durable before the caller goes on

    def query(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """Rows of a read-only query, as dicts."""
        with self._lock:
            cursor = self.db.execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        """Close the connection (a checkpoint leaves the WAL small)."""
        with self._lock:
            self.db.close()
            if self._sync is not None:
                self._sync.close()


class _GroupSync:
    """Makes commits durable with one WAL fsync per group of concurrent commits.

    ``committed()`` numbers a commit (call it right after ``COMMIT``);
    ``wait(n)`` returns once an fsync that started after commit ``n`` finished.
    One thread flushes at a time; the others wait for it, and whoever finds
    their commit not yet covered starts the next flush.
    """

    def __init__(self, wal: Path) -> None:
        self.wal = wal
        self._cond = threading.Condition()
        self._committed = 0
        self._synced = 0
        self._flushing = False
        self._fd: int | None = None

    def committed(self) -> int:
        """Number the commit that just returned."""
        with self._cond:
            self._committed += 1
            return self._committed

    def wait(self, seq: int) -> None:
        """Block until commit ``seq`` is on disk (raises OSError if the flush fails)."""
        with self._cond:
            while self._synced < seq:
                if self._flushing:
                    self._cond.wait()
                    continue
                self._flushing, target = True, self._committed
                try:
                    self._cond.release()
                    try:
                        self._flush()
                    finally:
                        self._cond.acquire()
                    self._synced = max(self._synced, target)
                finally:
                    self._flushing = False
                    self._cond.notify_all()

    def _flush(self) -> None:
        # the WAL keeps its inode while a connection is open; reopen if it was replaced
        try:
            if self._fd is not None and os.fstat(self._fd).st_ino != os.stat(self.wal).st_ino:
                os.close(self._fd)
                self._fd = None
            if self._fd is None:
                self._fd = os.open(self.wal, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # no WAL (nothing written yet): nothing to flush
            return
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the WAL descriptor."""
        with self._cond:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _current_task() -> object:
    """The running asyncio task, or None outside a loop."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
