"""The store's schema as an ordered list of migrations.

The database's ``PRAGMA user_version`` is the number of migrations applied.
Opening a store applies the missing ones in order, each in its own
transaction together with the version bump, so a crash during an upgrade
leaves the previous version intact. A database written by a newer gpunet
(version above :data:`SCHEMA_VERSION`) is refused rather than guessed at.

Never edit a released migration; append a new one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Final

import sqlite_utils

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "SchemaError", "migrate", "version_of"]


class SchemaError(Exception):
    """The database's schema cannot be used by this version of gpunet."""


@dataclasses.dataclass(frozen=True)
class Migration:
    """One schema step: SQL statements, then an optional data step."""

    version: int
    description: str
    statements: tuple[str, ...]
    data: Callable[[sqlite_utils.Database], None] | None = None


_V1 = (
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('provider', 'client', 'verifier')),
        request_id TEXT CHECK (request_id IS NULL OR length(request_id) = 34),
        job_id INTEGER CHECK (job_id IS NULL OR job_id >= 0),
        counterparty TEXT CHECK (counterparty IS NULL OR length(counterparty) = 42),
        spec BLOB CHECK (spec IS NULL OR length(spec) <= 4096),
        spec_hash TEXT NOT NULL CHECK (length(spec_hash) = 66),
        state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 6),
        max_payment TEXT NOT NULL CHECK (length(max_payment) = 20),
        price TEXT NOT NULL CHECK (length(price) = 20),
        deadline INTEGER NOT NULL CHECK (deadline >= 0),
        output_cid TEXT CHECK (output_cid IS NULL OR length(output_cid) = 71),
        attestation BLOB CHECK (attestation IS NULL OR length(attestation) <= 1024),
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_error TEXT CHECK (last_error IS NULL OR length(last_error) <= 1000)
    ) STRICT""",
    "CREATE UNIQUE INDEX jobs_role_job ON jobs(role, job_id) WHERE job_id IS NOT NULL",
    "CREATE UNIQUE INDEX jobs_role_request ON jobs(role, request_id) WHERE request_id IS NOT NULL",
    "CREATE INDEX jobs_role_state ON jobs(role, state)",
    """CREATE TABLE job_history (
        seq INTEGER PRIMARY KEY,
        job INTEGER NOT NULL REFERENCES jobs(id),
        event TEXT NOT NULL,
        from_state INTEGER NOT NULL CHECK (from_state BETWEEN 0 AND 6),
        to_state INTEGER NOT NULL CHECK (to_state BETWEEN 0 AND 6),
        block INTEGER CHECK (block IS NULL OR block >= 0),
        tx_hash TEXT CHECK (tx_hash IS NULL OR length(tx_hash) = 66),
        at INTEGER NOT NULL
    ) STRICT""",
    "CREATE INDEX job_history_job ON job_history(job, seq)",
    """CREATE TABLE offers (
        provider TEXT NOT NULL CHECK (length(provider) = 42),
        nonce TEXT NOT NULL CHECK (length(nonce) = 20),
        price TEXT NOT NULL CHECK (length(price) = 20),
        expiry INTEGER NOT NULL,
        device_class TEXT NOT NULL,
        gpu_model TEXT NOT NULL,
        sandbox_tier INTEGER NOT NULL,
        client TEXT NOT NULL CHECK (length(client) = 42),
        offer BLOB NOT NULL CHECK (length(offer) <= 2048),
        received_at INTEGER NOT NULL,
        PRIMARY KEY (provider, nonce)
    ) STRICT""",
    "CREATE INDEX offers_expiry ON offers(expiry)",
    """CREATE TABLE blobs (
        cid TEXT PRIMARY KEY CHECK (length(cid) = 71),
        size INTEGER NOT NULL CHECK (size >= 0),
        path TEXT NOT NULL CHECK (length(path) <= 4096),
        created_at INTEGER NOT NULL,
        pinned_until INTEGER NOT NULL DEFAULT 0
    ) STRICT""",
    """CREATE TABLE chain_cursor (
        name TEXT PRIMARY KEY,
        block INTEGER NOT NULL CHECK (block >= 0),
        block_hash TEXT NOT NULL CHECK (length(block_hash) = 66),
        updated_at INTEGER NOT NULL
    ) STRICT""",
)

_V2 = (
    # Transactions sent but maybe not yet mined, so a restarted node can look
    # up their receipts instead of sending them again.
    "ALTER TABLE jobs ADD COLUMN tx_hashes TEXT NOT NULL DEFAULT '{}'"
    " CHECK (json_valid(tx_hashes))",
    # A job that never matched (every provider declined) is closed without a
    # lifecycle state of its own: the lifecycle starts at createJob.
    "ALTER TABLE jobs ADD COLUMN abandoned_at INTEGER",
    # Replaying the same chain event is a no-op, not a second transition.
    "CREATE UNIQUE INDEX job_history_tx ON job_history(job, event, tx_hash) "
    "WHERE tx_hash IS NOT NULL",
    """CREATE TABLE attestations (
        digest TEXT PRIMARY KEY CHECK (length(digest) = 66),
        job_id INTEGER NOT NULL CHECK (job_id >= 0),
        provider TEXT NOT NULL CHECK (length(provider) = 42),
        output_hash TEXT NOT NULL CHECK (length(output_hash) = 66),
        attestation BLOB NOT NULL CHECK (length(attestation) <= 1024),
        source TEXT NOT NULL CHECK (length(source) <= 128),
        received_at INTEGER NOT NULL
    ) STRICT""",
    "CREATE INDEX attestations_job ON attestations(job_id, provider)",
)

_V3 = (
    """CREATE TABLE blob_pins (
        cid TEXT NOT NULL REFERENCES blobs(cid) ON DELETE CASCADE,
        job INTEGER NOT NULL REFERENCES jobs(id),
        until INTEGER NOT NULL CHECK (until >= 0),
        PRIMARY KEY (cid, job)
    ) STRICT""",
    "CREATE INDEX blob_pins_job ON blob_pins(job)",
    # Recent block hashes, so a reorg is found by walking back to the last
    # block whose hash still matches the chain.
    """CREATE TABLE chain_blocks (
        name TEXT NOT NULL,
        number INTEGER NOT NULL CHECK (number >= 0),
        hash TEXT NOT NULL CHECK (length(hash) = 66),
        PRIMARY KEY (name, number)
    ) STRICT""",
)


def _v3_data(db: sqlite_utils.Database) -> None:
    """Seed the recent-blocks table with each cursor's last processed block."""
    db.execute(
        "INSERT INTO chain_blocks (name, number, hash)"
        " SELECT name, block, block_hash FROM chain_cursor"
    )


_V4 = (
    # A verifier's committee votes: the salt must outlive a crash between commitVote
    # and revealVote (a lost salt cannot be revealed, and costs the no-vote penalty).
    # Written before the commit transaction is sent; one row per (committee, job, member).
    """CREATE TABLE committee_votes (
        committee TEXT NOT NULL CHECK (length(committee) = 42),
        job_id INTEGER NOT NULL CHECK (job_id >= 0),
        member TEXT NOT NULL CHECK (length(member) = 42),
        fault INTEGER NOT NULL CHECK (fault IN (0, 1)),
        salt BLOB NOT NULL CHECK (length(salt) = 32),
        commitment TEXT NOT NULL CHECK (length(commitment) = 66),
        created_at INTEGER NOT NULL,
        commit_tx TEXT CHECK (commit_tx IS NULL OR length(commit_tx) = 66),
        revealed_at INTEGER,
        PRIMARY KEY (committee, job_id, member)
    ) STRICT""",
    "CREATE INDEX committee_votes_open ON committee_votes(committee, member)"
    " WHERE revealed_at IS NULL",
)

_V5 = (
    # A provider's client peer per job, committed with the job's row (it used to be a
    # separate append-only file: a second fsync before every accept, and a file that
    # only grew). A libp2p peer id in base58.
    "ALTER TABLE jobs ADD COLUMN peer TEXT CHECK (peer IS NULL OR"
    " (length(peer) BETWEEN 1 AND 128 AND peer NOT GLOB '*[^1-9A-HJ-NP-Za-km-z]*'))",
)

_V6 = (
    # A provider's small output (at most MAX_SMALL_OUTPUT bytes), committed with its
    # attestation in the one durable commit before the result leaves the node: its blob
    # file is written after (off the job's path) and rebuilt from here after a crash.
    "ALTER TABLE jobs ADD COLUMN output_small BLOB CHECK (output_small IS NULL OR"
    " length(output_small) <= 65536)",
)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "jobs, history, offers, blobs, chain cursor", _V1),
    Migration(2, "job tx hashes, abandoned jobs, idempotent history, attestations", _V2),
    Migration(3, "blob pins per job, recent block hashes", _V3, _v3_data),
    Migration(4, "verifier committee votes (salts survive a restart)", _V4),
    Migration(5, "the counterparty's peer id per job", _V5),
    Migration(6, "a provider's small output with its attestation", _V6),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1].version


def version_of(db: sqlite_utils.Database) -> int:
    """The schema version recorded in the database (0 for a new file)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database, target: int = SCHEMA_VERSION) -> int:
    """Apply the missing migrations up to ``target``; return the resulting version."""
    if not 0 <= target <= SCHEMA_VERSION:
        raise SchemaError(f"no schema version {target}")
    current = version_of(db)
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"the store has schema version {current}, newer than this gpunet supports "
            f"({SCHEMA_VERSION}); upgrade gpunet or use another data_dir"
        )
    for migration in MIGRATIONS:
        if current < migration.version <= target:
            db.execute("BEGIN IMMEDIATE")
            try:
                if version_of(db) >= migration.version:  # another process got here first
                    db.execute("COMMIT")
                    current = migration.version
                    continue
                for statement in migration.statements:
                    db.execute(statement)
                if migration.data is not None:
                    migration.data(db)
                db.execute(f"PRAGMA user_version = {migration.version:d}")
                db.execute("COMMIT")
            except BaseException:
                db.rollback()
                raise
            current = migration.version
    return current
