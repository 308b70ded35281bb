"""Look up a job's past events by its indexed topics (used when a node restarts).

The follower streams new events; after a crash a node asks the chain directly
what happened to the jobs it has in flight: ``JobCreated`` by job id or by
(client, provider), then ``ResultSubmitted`` and the terminal events.
"""

from __future__ import annotations

from eth_abi.abi import encode as abi_encode

from node.chain.escrow import Escrow, EventRecord
from node.chain.jobs import Job
from protocol import eip712

__all__ = [
    "created_for",
    "find_created",
    "job_events",
    "rebuild_job",
    "result_submitted",
    "results_submitted",
]

MAX_BLOCK_RANGE = 100_000


def _topic0(escrow: Escrow, name: str) -> str:
    return "0x" + escrow.abi.events[name].topic0.hex()


def _word(kind: str, value: object) -> str:
    return "0x" + abi_encode([kind], [value]).hex()


def _query(escrow: Escrow, topics: list[object], from_block: int) -> list[EventRecord]:
    latest = escrow.rpc.block_number()
    out: list[EventRecord] = []
    start = max(from_block, 0)
    while start <= latest:
        end = min(start + MAX_BLOCK_RANGE - 1, latest)
        for lg in escrow.rpc.get_logs(escrow.address, start, end, topics):
            if lg.removed or not lg.topics:
                continue
            event = escrow.abi.events_by_topic.get(lg.topics[0])
            if event is not None:
                fields = event.decode(lg.topics[1:], lg.data)
                out.append(EventRecord(event.name, fields, lg.block_number, lg.log_index))
        start = end + 1
    return out


def job_events(escrow: Escrow, job_id: int, from_block: int = 0) -> list[EventRecord]:
    """Every escrow event whose first indexed topic is ``job_id``, in chain order."""
    return _query(escrow, [None, _word("uint64", job_id)], from_block)


def result_submitted(escrow: Escrow, job_id: int, from_block: int = 0) -> EventRecord | None:
    """The ``ResultSubmitted`` event of ``job_id`` at or after ``from_block``, if mined."""
    topics: list[object] = [_topic0(escrow, "ResultSubmitted"), _word("uint64", job_id)]
    found = _query(escrow, topics, from_block)
    return found[-1] if found else None


def results_submitted(
    escrow: Escrow, job_ids: list[int], from_block: int = 0
) -> dict[int, EventRecord]:
    """``ResultSubmitted`` of each of ``job_ids`` mined at or after ``from_block``, by job
    id (one ``eth_getLogs``: the job id topic matches any of them)."""
    if not job_ids:
        return {}
    words = [_word("uint64", j) for j in dict.fromkeys(job_ids)]
    topics: list[object] = [_topic0(escrow, "ResultSubmitted"), words]
    wanted = set(job_ids)
    return {
        int(ev.fields["jobId"]): ev
        for ev in _query(escrow, topics, from_block)
        if int(ev.fields["jobId"]) in wanted
    }


def created_for(
    escrow: Escrow, client: bytes, provider: bytes, from_block: int = 0
) -> list[EventRecord]:
    """``JobCreated`` events between this client and provider."""
    topics: list[object] = [
        _topic0(escrow, "JobCreated"),
        None,
        _word("address", "0x" + client.hex()),
        _word("address", "0x" + provider.hex()),
    ]
    return _query(escrow, topics, from_block)


def find_created(
    escrow: Escrow, client: bytes, provider: bytes, spec_hash: bytes, from_block: int = 0
) -> EventRecord | None:
    """The latest ``JobCreated`` between this client and provider for ``spec_hash``."""
    mine = [
        e
        for e in created_for(escrow, client, provider, from_block)
        if bytes(e.fields["specHash"]) == spec_hash
    ]
    return mine[-1] if mine else None


def rebuild_job(escrow: Escrow, events: list[EventRecord]) -> Job | None:
    """The current ``Job`` struct from a job's events (None without a ``JobCreated``)."""
    job: Job | None = None
    for ev in events:
        if ev.name == "JobCreated":
            job = Job.from_created(ev.fields)
        elif ev.name == "ResultSubmitted" and job is not None:
            # the stored result hash is the attestation digest; recompute it from the event
            digest = eip712.attestation_digest(
                escrow.domain,
                eip712.AttestationData(
                    job_id=job.job_id,
                    provider=job.provider,
                    spec_hash=job.spec_hash,
                    output_hash=bytes(ev.fields["outputHash"]),
                    runtime_id=bytes(ev.fields["runtimeId"]),
                    determinism=int(ev.fields["determinism"]),
                    metered_millis=int(ev.fields["meteredMillis"]),
                ),
            )
            job = job.after_submit(ev.fields, digest)
        elif ev.name == "JobChallenged" and job is not None:
            challenger = ev.fields["challenger"]
            job = job.after_challenge(
                challenger if isinstance(challenger, bytes) else bytes.fromhex(challenger[2:])
            )
    return job
