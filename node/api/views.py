"""Store records as JSON-ready dicts (the shapes ``docs/openapi.yaml`` describes).

Addresses are EIP-55 checksummed, hashes ``0x`` hex, content ids ``sha256:<hex>``,
states and roles lowercase names, u64 amounts decimal strings (they exceed 2**53,
the largest integer every JSON parser keeps exactly), times unix milliseconds
(``*_at``) or seconds (``deadline``, ``expiry``).
"""

from __future__ import annotations

from typing import Any

from node.store import HistoryEntry, Job, OfferRecord
from protocol.errors import DecodeError
from protocol.identity import checksum_address
from protocol.messages import Attestation, Determinism, JobSpec, Offer, decode_as

__all__ = ["history_json", "job_json", "offer_json", "spec_json"]

_DETERMINISM = {
    Determinism.EXACT: "exact",
    Determinism.GPU_DETERMINISTIC: "gpu-deterministic",
    Determinism.TOLERANCE: "tolerance",
}


def _addr(value: bytes | None) -> str | None:
    return None if value is None else checksum_address(value)


def spec_json(spec: JobSpec) -> dict[str, Any]:
    """A JobSpec as JSON."""
    return {
        "format": spec.format.value,
        "model": {
            "arch": spec.model.arch,
            "config": dict(spec.model.config),
            "weights": "sha256:" + spec.model.weights.hex(),
            "weights_size": spec.model.weights_size,
        },
        "inputs": "sha256:" + spec.inputs.hex(),
        "inputs_size": spec.inputs_size,
        "determinism": _DETERMINISM[spec.determinism],
        "min_sandbox_tier": spec.min_sandbox_tier,
        "max_output_bytes": spec.max_output_bytes,
        "max_gpu_millis": spec.max_gpu_millis,
    }


def _attestation_json(encoded: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"encoded": "0x" + encoded.hex()}
    try:
        att = decode_as(encoded, Attestation)
    except DecodeError:
        return out
    out.update(
        provider=checksum_address(att.provider),
        output_hash="0x" + att.output_hash.hex(),
        runtime=att.runtime,
        determinism=_DETERMINISM[att.determinism],
        metered_millis=att.metered_millis,
        signature="0x" + att.signature.hex(),
    )
    return out


def job_json(job: Job) -> dict[str, Any]:
    """A job as JSON (without history)."""
    return {
        "id": job.id,
        "role": job.role.value,
        "request_id": None if job.request_id is None else "0x" + job.request_id.hex(),
        "job_id": job.job_id,
        "counterparty": _addr(job.counterparty),
        "state": job.state.name.lower(),
        "in_flight": job.in_flight,
        "spec_hash": "0x" + job.spec_hash.hex(),
        "spec": None if job.spec is None else spec_json(job.spec),
        "max_payment": str(job.max_payment),
        "price_per_gpu_second": str(job.price),
        "deadline": job.deadline,
        "output": None if job.output_cid is None else str(job.output_cid),
        "attestation": None if job.attestation is None else _attestation_json(job.attestation),
        "tx_hashes": dict(job.tx_hashes),
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "abandoned_at": job.abandoned_at,
        "last_error": job.last_error,
    }


def history_json(entries: list[HistoryEntry]) -> list[dict[str, Any]]:
    """A job's history as JSON."""
    return [
        {
            "seq": e.seq,
            "event": e.event.value,
            "from": e.from_state.name.lower(),
            "to": e.to_state.name.lower(),
            "block": e.block,
            "tx_hash": e.tx_hash,
            "at": e.at,
        }
        for e in entries
    ]


def offer_json(record: OfferRecord) -> dict[str, Any]:
    """An offer as JSON."""
    out: dict[str, Any] = {
        "provider": checksum_address(record.provider),
        "nonce": str(record.nonce),
        "price_per_gpu_second": str(record.price),
        "expiry": record.expiry,
        "client": None if record.client == bytes(20) else checksum_address(record.client),
        "device_class": record.device_class,
        "gpu_model": record.gpu_model,
        "sandbox_tier": record.sandbox_tier,
        "received_at": record.received_at,
        "encoded": "0x" + record.encoded.hex(),
    }
    try:
        caps = decode_as(record.encoded, Offer).capabilities
    except DecodeError:
        return out
    out["capabilities"] = {
        "gpu_memory_mib": caps.gpu_memory_mib,
        "gpu_count": caps.gpu_count,
        "formats": [f.value for f in caps.formats],
        "determinism": [_DETERMINISM[d] for d in caps.determinism],
        "runtimes": list(caps.runtimes),
        "max_job_bytes": str(caps.max_job_bytes),
        "max_concurrent_jobs": caps.max_concurrent_jobs,
    }
    return out
