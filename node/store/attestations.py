"""Attestations seen by this node: its own, its providers', and those read from the chain.

Keyed by EIP-712 digest (the signed content, not the signature bytes). Two
stored attestations of one provider for one job with different digests are
a self-contained equivocation proof (:meth:`Attestations.equivocations`).
Signatures are checked by the caller before :meth:`Attestations.add`.
"""

from __future__ import annotations

import re
from typing import Any, Final

from node.store.db import Database
from node.store.records import (
    StoredAttestation,
    StoreError,
    bytes_of,
    check_bytes,
    check_i64,
    hex_of,
)
from protocol.messages import Attestation, encode

__all__ = ["Attestations"]

_SOURCE: Final = re.compile(r"^[A-Za-z0-9._:/+-]{1,128}$")


class Attestations:
    """The ``attestations`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, attestation: Attestation, source: str) -> bool:
        """Store an attestation; False if one with the same digest is already stored.

        ``source`` says where it came from, e.g. ``self``, ``chain``, ``peer:<id>``.
        """
        if not isinstance(source, str) or not _SOURCE.match(source):
            raise StoreError("source must be 1-128 characters of [A-Za-z0-9._:/+-]")
        encoded = encode(attestation)
        check_i64("job_id", attestation.job_id)
        with self._db.transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO attestations"
                " (digest, job_id, provider, output_hash, attestation, source, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    hex_of(attestation.digest()),
                    attestation.job_id,
                    hex_of(attestation.provider),
                    hex_of(attestation.output_hash),
                    encoded,
                    source,
                    self._db.now_ms(),
                ),
            )
            return cursor.rowcount > 0

    def for_job(self, job_id: int, provider: bytes | None = None) -> list[StoredAttestation]:
        """Attestations for onchain job ``job_id`` (optionally of one provider), oldest first."""
        check_i64("job_id", job_id)
        sql = "SELECT * FROM attestations WHERE job_id = ?"
        params: list[Any] = [job_id]
        if provider is not None:
            check_bytes("provider", provider, 20)
            sql += " AND provider = ?"
            params.append(hex_of(provider))
        rows = self._db.query(sql + " ORDER BY received_at, digest LIMIT 64", tuple(params))
        return [_attestation(r) for r in rows]

    def equivocations(self, job_id: int) -> dict[bytes, list[StoredAttestation]]:
        """Providers that signed more than one attestation for ``job_id``, with them."""
        by_provider: dict[bytes, list[StoredAttestation]] = {}
        for att in self.for_job(job_id):
            by_provider.setdefault(att.provider, []).append(att)
        return {p: atts for p, atts in by_provider.items() if len(atts) > 1}


def _attestation(r: dict[str, Any]) -> StoredAttestation:
    return StoredAttestation(
        digest=bytes_of(r["digest"]),
        job_id=r["job_id"],
        provider=bytes_of(r["provider"]),
        output_hash=bytes_of(r["output_hash"]),
        encoded=r["attestation"],
        source=r["source"],
        received_at=r["received_at"],
    )
