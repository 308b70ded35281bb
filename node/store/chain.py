"""The chain watcher's cursor and the recent block hashes used to detect reorgs.

The watcher processes a block's events and advances the cursor in one
:meth:`~node.store.Store.transaction`, so after a crash it resumes exactly
after the last block whose effects were committed. Hashes of the last
``keep`` processed blocks are kept: when the chain's hash for a recorded
block differs, the watcher walks back to the newest block that still
matches and :meth:`ChainCursor.rewind` s there.
"""

from __future__ import annotations

from node.store.db import Database
from node.store.records import Cursor, StoreError, bytes_of, check_bytes, check_i64, hex_of

__all__ = ["DEFAULT_CURSOR", "ChainCursor"]

DEFAULT_CURSOR = "escrow"


class ChainCursor:
    """The ``chain_cursor`` and ``chain_blocks`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, name: str = DEFAULT_CURSOR) -> Cursor | None:
        """The last processed block, or None before the first."""
        rows = self._db.query("SELECT block, block_hash FROM chain_cursor WHERE name = ?", (name,))
        return Cursor(rows[0]["block"], bytes_of(rows[0]["block_hash"])) if rows else None

    def advance(
        self, block: int, block_hash: bytes, *, name: str = DEFAULT_CURSOR, keep: int = 64
    ) -> Cursor:
        """Mark ``block`` processed; it must be after the current cursor."""
        check_i64("block", block)
        check_bytes("block_hash", block_hash, 32)
        if keep < 1:
            raise StoreError("keep must be at least 1")
        with self._db.transaction() as db:
            current = self.get(name)
            if current is not None and block <= current.block:
                raise StoreError(
                    f"cursor {name!r} is at block {current.block}; cannot move to {block}"
                )
            db.execute(
                "INSERT INTO chain_cursor (name, block, block_hash, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET block = excluded.block,"
                " block_hash = excluded.block_hash, updated_at = excluded.updated_at",
                (name, block, hex_of(block_hash), self._db.now_ms()),
            )
            db.execute(
                "INSERT OR REPLACE INTO chain_blocks (name, number, hash) VALUES (?, ?, ?)",
                (name, block, hex_of(block_hash)),
            )
            db.execute(
                "DELETE FROM chain_blocks WHERE name = ? AND number <= ?", (name, block - keep)
            )
            return Cursor(block, block_hash)

    def set(
        self, block: int, block_hash: bytes, *, name: str = DEFAULT_CURSOR, keep: int = 64
    ) -> Cursor:
        """Put the cursor at ``block`` whether that is forward or back (a follower that
        finds reorgs itself, e.g. ``node.chain.follower``); recorded hashes above it go."""
        check_i64("block", block)
        check_bytes("block_hash", block_hash, 32)
        with self._db.transaction() as db:
            db.execute("DELETE FROM chain_blocks WHERE name = ? AND number > ?", (name, block))
            db.execute("DELETE FROM chain_cursor WHERE name = ?", (name,))
            return self.advance(block, block_hash, name=name, keep=keep)

    def clear(self, name: str = DEFAULT_CURSOR) -> None:
        """Forget the cursor and its recorded blocks (start again from the first block)."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM chain_cursor WHERE name = ?", (name,))
            db.execute("DELETE FROM chain_blocks WHERE name = ?", (name,))

    def block_hash(self, number: int, name: str = DEFAULT_CURSOR) -> bytes | None:
        """The recorded hash of processed block ``number``, if still kept."""
        rows = self._db.query(
            "SELECT hash FROM chain_blocks WHERE name = ? AND number = ?", (name, number)
        )
        return bytes_of(rows[0]["hash"]) if rows else None

    def rewind(self, block: int, name: str = DEFAULT_CURSOR) -> Cursor:
        """Move the cursor back to recorded block ``block`` (after a reorg)."""
        with self._db.transaction() as db:
            block_hash = self.block_hash(block, name)
            if block_hash is None:
                raise StoreError(
                    f"block {block} is not among the recorded blocks; the reorg is deeper "
                    "than reorg_depth"
                )
            db.execute(
                "UPDATE chain_cursor SET block = ?, block_hash = ?, updated_at = ? WHERE name = ?",
                (block, hex_of(block_hash), self._db.now_ms(), name),
            )
            db.execute("DELETE FROM chain_blocks WHERE name = ? AND number > ?", (name, block))
            return Cursor(block, block_hash)
