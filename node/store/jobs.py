"""Jobs and their history: every state change goes through ``protocol.lifecycle.apply``.

A job is recorded when this node first hears of it (state ``NONE``: a client's
request, a provider's accepted request, a job a verifier samples). Each
transition writes the new state and one history row in the same transaction,
so the history always replays, event by event through ``apply``, to the
state. A transition carrying a transaction hash that is already in the
history is a replay (the chain watcher re-reading a block after a restart)
and changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any, Final

from node.store.db import Database
from node.store.records import (
    HistoryEntry,
    Job,
    NewJob,
    Role,
    StoreError,
    bytes_of,
    check_bytes,
    check_i64,
    check_peer_id,
    check_tx_hash,
    decode_spec,
    encode_spec,
    hex_of,
    truncate_error,
    u64_text,
)
from protocol.content import ContentId, cid_of
from protocol.errors import DecodeError
from protocol.lifecycle import TERMINAL, JobEvent, JobState, apply
from protocol.messages import Attestation, decode_as

__all__ = ["MAX_LIST", "Jobs"]

#: Most rows one listing returns.
MAX_LIST: Final = 1000
#: most bytes of an output kept in its job's row (:meth:`Jobs.set_result`)
MAX_SMALL_OUTPUT: Final = 65536
_TERMINAL_VALUES: Final = tuple(int(s) for s in TERMINAL)


class Jobs:
    """The ``jobs`` and ``job_history`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # ------------------------------------------------------------ writes
    def create(self, new: NewJob) -> Job:
        """Record a job in state ``NONE``; its (role, request id / job id) must be new."""
        role = Role(new.role)
        check_bytes("spec_hash", new.spec_hash, 32)
        if new.spec is not None and new.spec.spec_hash() != new.spec_hash:
            raise StoreError("spec_hash is not the sha256 of the spec")
        if new.request_id is not None:
            check_bytes("request_id", new.request_id, 16)
        if new.counterparty is not None:
            check_bytes("counterparty", new.counterparty, 20)
        if new.job_id is not None:
            check_i64("job_id", new.job_id)
        if new.peer is not None:
            check_peer_id(new.peer)
        check_i64("deadline", new.deadline)
        now = self._db.now_ms()
        row = {
            "role": role.value,
            "request_id": None if new.request_id is None else hex_of(new.request_id),
            "job_id": new.job_id,
            "counterparty": None if new.counterparty is None else hex_of(new.counterparty),
            "peer": new.peer,
            "spec": None if new.spec is None else encode_spec(new.spec),
            "spec_hash": hex_of(new.spec_hash),
            "state": int(JobState.NONE),
            "max_payment": u64_text("max_payment", new.max_payment),
            "price": u64_text("price", new.price),
            "deadline": new.deadline,
            "created_at": now,
            "updated_at": now,
        }
        with self._db.transaction() as db:
            try:
                cursor = db.execute(
                    f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                    tuple(row.values()),
                )
            except sqlite3.IntegrityError:
                raise StoreError(
                    f"a {role.value} job with this request id or job id already exists"
                ) from None
            local_id = cursor.lastrowid
            assert local_id is not None
            return self.get(local_id)

    def bind(self, local_id: int, new: NewJob) -> Job:
        """Fill in a job recorded before its provider was known (an API submission).

        The job must still be in state ``NONE``, of the same role and spec hash;
        its counterparty, request id, price, payment and deadline become ``new``'s.
        """
        if new.counterparty is None or new.request_id is None:
            raise StoreError("binding needs the counterparty and the request id")
        check_bytes("counterparty", new.counterparty, 20)
        check_bytes("request_id", new.request_id, 16)
        check_i64("deadline", new.deadline)
        with self._db.transaction() as db:
            job = self.get(local_id)
            if job.state is not JobState.NONE or job.abandoned_at is not None:
                raise StoreError(f"job {local_id} is no longer open for a provider")
            if job.role is not Role(new.role) or job.spec_hash != new.spec_hash:
                raise StoreError(f"job {local_id} is another job (role or spec differs)")
            updates = {
                "counterparty": hex_of(new.counterparty),
                "request_id": hex_of(new.request_id),
                "price": u64_text("price", new.price),
                "max_payment": u64_text("max_payment", new.max_payment),
                "deadline": new.deadline,
            }
            try:
                self._update(db, local_id, updates)
            except sqlite3.IntegrityError:
                raise StoreError("a job with this request id already exists") from None
            return self.get(local_id)

    def transition(
        self,
        local_id: int,
        event: JobEvent,
        *,
        block: int | None = None,
        tx_hash: str | None = None,
        job_id: int | None = None,
        durable: bool = True,
    ) -> Job:
        """Apply ``event`` (raises ``IllegalTransition``) and append it to the history.

        ``job_id`` (the onchain id) is required with ``CREATE`` unless already known.
        A replay of an event already recorded with the same ``tx_hash`` returns the
        job unchanged. ``durable=False`` for an event the chain holds too: the commit
        does not wait for its fsync (:meth:`node.store.db.Database.transaction`).
        """
        event = JobEvent(event)
        tx = None if tx_hash is None else check_tx_hash(tx_hash)
        if block is not None:
            check_i64("block", block)
        if job_id is not None:
            check_i64("job_id", job_id)
        with self._db.transaction(durable=durable) as db:
            job = self.get(local_id)
            if (
                tx is not None
                and db.execute(
                    "SELECT 1 FROM job_history WHERE job = ? AND event = ? AND tx_hash = ?",
                    (local_id, event.name, tx),
                ).fetchone()
            ):
                return job
            new_state = apply(job.state, event)
            updates: dict[str, Any] = {"state": int(new_state), "updated_at": self._db.now_ms()}
            if job_id is not None and job_id != job.job_id:
                if job.job_id is not None:
                    raise StoreError(f"job {local_id} already has onchain id {job.job_id}")
                updates["job_id"] = job_id
            if event is JobEvent.CREATE and job.job_id is None and job_id is None:
                raise StoreError("createJob needs the onchain job id")
            self._update(db, local_id, updates)
            db.execute(
                "INSERT INTO job_history (job, event, from_state, to_state, block, tx_hash, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    local_id,
                    event.name,
                    int(job.state),
                    int(new_state),
                    block,
                    tx,
                    updates["updated_at"],
                ),
            )
            return self.get(local_id)

    def record_tx(self, local_id: int, event: JobEvent, tx_hash: str) -> Job:
        """Remember a transaction sent for ``event`` before it is mined (for restart)."""
        event = JobEvent(event)
        tx = check_tx_hash(tx_hash)
        with self._db.transaction() as db:
            job = self.get(local_id)
            hashes = dict(job.tx_hashes)
            hashes[event.value] = tx
            self._update(db, local_id, {"tx_hashes": json.dumps(hashes, sort_keys=True)})
            return self.get(local_id)

    def set_result(
        self, local_id: int, output: ContentId, attestation: bytes, *, data: bytes | None = None
    ) -> Job:
        """Record the output and the signed attestation, once.

        Call this *before* sending ``submitResult``: after a restart the same
        attestation is re-sent. A different attestation for the same job is
        refused (signing two is equivocation). ``data``, the output's bytes (at most
        :data:`MAX_SMALL_OUTPUT`), is kept with them, so a small output needs no
        file of its own before the commit (:meth:`small_output` gives it back).
        """
        if not isinstance(output, ContentId):
            raise StoreError("output must be a ContentId")
        if data is not None and (len(data) > MAX_SMALL_OUTPUT or cid_of(data) != output):
            raise StoreError("the output bytes are not that output, or too large to keep here")
        try:
            parsed = decode_as(attestation, Attestation)
        except DecodeError as exc:
            raise StoreError(f"not a valid attestation: {exc}") from None
        if parsed.output_hash != output.digest:
            raise StoreError("the attestation covers another output")
        with self._db.transaction() as db:
            job = self.get(local_id)
            if job.job_id is not None and parsed.job_id != job.job_id:
                raise StoreError(f"the attestation is for job {parsed.job_id}, not {job.job_id}")
            if parsed.spec_hash != job.spec_hash:
                raise StoreError("the attestation is for another job spec")
            if job.attestation is not None:
                if job.attestation != attestation:
                    raise StoreError(f"job {local_id} already has a different attestation")
                return job
            self._update(
                db,
                local_id,
                {
                    "output_cid": str(output),
                    "attestation": bytes(attestation),
                    "output_small": None if data is None else bytes(data),
                },
            )
            return self.get(local_id)

    def small_output(self, local_id: int) -> bytes | None:
        """The output bytes :meth:`set_result` kept with the attestation, if any."""
        rows = self._db.query("SELECT output_small FROM jobs WHERE id = ?", (local_id,))
        if not rows:
            raise StoreError(f"no job {local_id}")
        value = rows[0]["output_small"]
        return None if value is None else bytes(value)

    def set_error(self, local_id: int, message: str | None) -> Job:
        """Record (or clear, with ``None``) the last error seen while working on a job."""
        with self._db.transaction() as db:
            self.get(local_id)
            value = None if message is None else truncate_error(message)
            self._update(db, local_id, {"last_error": value})
            return self.get(local_id)

    def abandon(self, local_id: int, reason: str) -> Job:
        """Close a job that never matched (state ``NONE``), e.g. every provider declined."""
        with self._db.transaction() as db:
            job = self.get(local_id)
            if job.state is not JobState.NONE:
                raise StoreError(
                    f"job {local_id} is {job.state.name}; only unmatched jobs can be abandoned"
                )
            if job.abandoned_at is None:
                now = self._db.now_ms()
                self._update(
                    db, local_id, {"abandoned_at": now, "last_error": truncate_error(reason)}
                )
            return self.get(local_id)

    # ------------------------------------------------------------ reads
    def get(self, local_id: int) -> Job:
        """The job with local id ``local_id``; :class:`StoreError` if unknown."""
        rows = self._db.query("SELECT * FROM jobs WHERE id = ?", (int(local_id),))
        if not rows:
            raise StoreError(f"no job with local id {local_id}")
        return _job(rows[0])

    def find(
        self, role: Role, *, job_id: int | None = None, request_id: bytes | None = None
    ) -> Job | None:
        """The job of ``role`` with this onchain id or request id, if any."""
        if (job_id is None) == (request_id is None):
            raise StoreError("give exactly one of job_id and request_id")
        if job_id is not None:
            check_i64("job_id", job_id)
            rows = self._db.query(
                "SELECT * FROM jobs WHERE role = ? AND job_id = ?", (Role(role).value, job_id)
            )
        else:
            assert request_id is not None
            check_bytes("request_id", request_id, 16)
            rows = self._db.query(
                "SELECT * FROM jobs WHERE role = ? AND request_id = ?",
                (Role(role).value, hex_of(request_id)),
            )
        return _job(rows[0]) if rows else None

    def select(
        self,
        *,
        role: Role | None = None,
        states: Iterable[JobState] | None = None,
        in_flight: bool | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs, newest first; ``before`` (a local id) pages backwards."""
        if not 1 <= limit <= MAX_LIST:
            raise StoreError(f"limit must be in [1, {MAX_LIST}]")
        where, params = self._filters(role, states, in_flight)
        if before is not None:
            where.append("id < ?")
            params.append(int(before))
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._db.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_job(r) for r in rows]

    def in_flight(self, role: Role) -> list[Job]:
        """Every job of ``role`` still owed work (not terminal, not abandoned), oldest first.

        This is what a node resumes after a restart; it is not paged.
        """
        where, params = self._filters(role, None, True)
        rows = self._db.query(
            f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id", tuple(params)
        )
        return [_job(r) for r in rows]

    def history(self, local_id: int) -> list[HistoryEntry]:
        """The job's transitions, oldest first."""
        rows = self._db.query(
            "SELECT * FROM job_history WHERE job = ? ORDER BY seq", (int(local_id),)
        )
        return [
            HistoryEntry(
                seq=r["seq"],
                event=JobEvent[r["event"]],
                from_state=JobState(r["from_state"]),
                to_state=JobState(r["to_state"]),
                block=r["block"],
                tx_hash=r["tx_hash"],
                at=r["at"],
            )
            for r in rows
        ]

    def counts(self) -> dict[tuple[Role, JobState], int]:
        """Number of jobs per (role, state)."""
        rows = self._db.query("SELECT role, state, count(*) AS n FROM jobs GROUP BY role, state")
        return {(Role(r["role"]), JobState(r["state"])): r["n"] for r in rows}

    def count(self) -> int:
        """Number of jobs in the store."""
        return int(self._db.query("SELECT count(*) AS n FROM jobs")[0]["n"])

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _filters(
        role: Role | None, states: Iterable[JobState] | None, in_flight: bool | None
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if role is not None:
            where.append("role = ?")
            params.append(Role(role).value)
        if states is not None:
            values = sorted({int(JobState(s)) for s in states})
            where.append(f"state IN ({', '.join('?' * len(values))})" if values else "0")
            params.extend(values)
        if in_flight is not None:
            marks = ", ".join("?" * len(_TERMINAL_VALUES))
            cond = f"(state NOT IN ({marks}) AND abandoned_at IS NULL)"
            where.append(cond if in_flight else f"NOT {cond}")
            params.extend(_TERMINAL_VALUES)
        return where, params

    def _update(self, db: Any, local_id: int, updates: dict[str, Any]) -> None:
        updates.setdefault("updated_at", self._db.now_ms())
        sets = ", ".join(f"{k} = ?" for k in updates)
        db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*updates.values(), local_id))


def _job(r: dict[str, Any]) -> Job:
    return Job(
        id=r["id"],
        role=Role(r["role"]),
        request_id=None if r["request_id"] is None else bytes_of(r["request_id"]),
        job_id=r["job_id"],
        counterparty=None if r["counterparty"] is None else bytes_of(r["counterparty"]),
        spec=None if r["spec"] is None else decode_spec(r["spec"]),
        spec_hash=bytes_of(r["spec_hash"]),
        state=JobState(r["state"]),
        max_payment=int(r["max_payment"]),
        price=int(r["price"]),
        deadline=r["deadline"],
        output_cid=None if r["output_cid"] is None else ContentId.parse(r["output_cid"]),
        attestation=r["attestation"],
        tx_hashes=json.loads(r["tx_hashes"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        abandoned_at=r["abandoned_at"],
        last_error=r["last_error"],
        peer=r["peer"],
    )
