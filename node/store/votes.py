"""A verifier's committee votes, kept until revealed (commit-reveal salts survive a crash).

The vote and its salt are written (and fsynced: the store runs ``synchronous=FULL``)
*before* the commit transaction is sent. A verifier killed between ``commitVote``
and ``revealVote`` reads them back after a restart and reveals the same vote; the
first stored decision for a seat is binding (:meth:`Votes.remember` never
overwrites it), so a restart cannot commit one vote and reveal another.

The salt is a secret until the reveal: anyone who reads it learns the vote. The
store file is mode 0600 in a 0700 directory (:class:`node.store.db.Database`).
"""

from __future__ import annotations

from typing import Any

from node.store.db import Database
from node.store.records import (
    StoredVote,
    StoreError,
    bytes_of,
    check_bytes,
    check_i64,
    check_tx_hash,
    hex_of,
)

__all__ = ["Votes"]


class Votes:
    """The ``committee_votes`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def remember(
        self,
        committee: bytes,
        job_id: int,
        member: bytes,
        *,
        fault: bool,
        salt: bytes,
        commitment: bytes,
    ) -> StoredVote:
        """Record a decided vote; if this seat already has one, return that one unchanged."""
        check_bytes("committee", committee, 20)
        check_bytes("member", member, 20)
        check_bytes("salt", salt, 32)
        check_bytes("commitment", commitment, 32)
        check_i64("job_id", job_id)
        if not isinstance(fault, bool):
            raise StoreError("fault must be a bool")
        with self._db.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO committee_votes"
                " (committee, job_id, member, fault, salt, commitment, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    hex_of(committee),
                    job_id,
                    hex_of(member),
                    int(fault),
                    salt,
                    hex_of(commitment),
                    self._db.now_ms(),
                ),
            )
        vote = self.get(committee, job_id, member)
        assert vote is not None
        return vote

    def get(self, committee: bytes, job_id: int, member: bytes) -> StoredVote | None:
        """The stored vote of ``member`` on ``job_id`` in ``committee``, if any."""
        check_bytes("committee", committee, 20)
        check_bytes("member", member, 20)
        check_i64("job_id", job_id)
        rows = self._db.query(
            "SELECT * FROM committee_votes WHERE committee = ? AND job_id = ? AND member = ?",
            (hex_of(committee), job_id, hex_of(member)),
        )
        return _vote(rows[0]) if rows else None

    def record_commit(self, committee: bytes, job_id: int, member: bytes, tx_hash: str) -> None:
        """Note the commit transaction's hash (for the log; the chain is the authority)."""
        self._update(committee, job_id, member, "commit_tx = ?", check_tx_hash(tx_hash))

    def mark_revealed(self, committee: bytes, job_id: int, member: bytes) -> None:
        """The vote is revealed onchain: the salt is no longer a secret."""
        self._update(committee, job_id, member, "revealed_at = ?", self._db.now_ms())

    def unrevealed(self, committee: bytes, member: bytes, limit: int = 1000) -> list[StoredVote]:
        """Votes of ``member`` in ``committee`` not yet revealed, oldest first."""
        check_bytes("committee", committee, 20)
        check_bytes("member", member, 20)
        rows = self._db.query(
            "SELECT * FROM committee_votes WHERE committee = ? AND member = ?"
            " AND revealed_at IS NULL ORDER BY created_at, job_id LIMIT ?",
            (hex_of(committee), hex_of(member), max(0, min(int(limit), 10_000))),
        )
        return [_vote(r) for r in rows]

    def _update(self, committee: bytes, job_id: int, member: bytes, sets: str, value: Any) -> None:
        check_bytes("committee", committee, 20)
        check_bytes("member", member, 20)
        check_i64("job_id", job_id)
        with self._db.transaction() as db:
            db.execute(
                f"UPDATE committee_votes SET {sets}"  # sets: fixed fragments of this module
                " WHERE committee = ? AND job_id = ? AND member = ?",
                (value, hex_of(committee), job_id, hex_of(member)),
            )


def _vote(r: dict[str, Any]) -> StoredVote:
    return StoredVote(
        committee=bytes_of(r["committee"]),
        job_id=r["job_id"],
        member=bytes_of(r["member"]),
        fault=bool(r["fault"]),
        salt=bytes(r["salt"]),
        commitment=bytes_of(r["commitment"]),
        created_at=r["created_at"],
        commit_tx=r["commit_tx"],
        revealed_at=r["revealed_at"],
    )
