"""Typed records returned by the store, and the conversions to and from columns.

Records are frozen dataclasses holding protocol types (bytes for addresses and
hashes, :class:`~protocol.content.ContentId`, :class:`~protocol.lifecycle.JobState`).
In the database, addresses and hashes are lowercase ``0x`` hex text, content ids
their ``sha256:<hex>`` form, and u64 amounts (prices, payments, nonces) 20-digit
zero-padded decimal text: sqlite integers are signed 64-bit, u64 amounts of an
18-decimals token pass 2**63 at about 9.2 tokens, and zero padding keeps ``<``
and ``ORDER BY`` correct on the text.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Final

import msgspec

from protocol.content import ContentId
from protocol.lifecycle import JobEvent, JobState, is_terminal
from protocol.messages import JobSpec

__all__ = [
    "MAX_ERROR_CHARS",
    "U64_MAX",
    "BlobRecord",
    "Cursor",
    "HistoryEntry",
    "Job",
    "NewJob",
    "OfferRecord",
    "Role",
    "StoreError",
    "StoredAttestation",
    "StoredVote",
]

U64_MAX: Final = 2**64 - 1
I64_MAX: Final = 2**63 - 1
#: ``last_error`` is truncated to this many characters.
MAX_ERROR_CHARS: Final = 1000
#: Longest path accepted for a blob.
MAX_PATH_CHARS: Final = 4096

_SPEC_ENCODER: Final = msgspec.msgpack.Encoder(order="deterministic")
_SPEC_DECODER: Final = msgspec.msgpack.Decoder(JobSpec)
#: JobSpec travels inside a JobRequest (4096 bytes), so it is never larger.
MAX_SPEC_BYTES: Final = 4096


class StoreError(Exception):
    """A value cannot be stored (out of range, wrong size, conflicting, unknown id)."""


class Role(enum.StrEnum):
    """Which side of a job this node is on."""

    PROVIDER = "provider"
    CLIENT = "client"
    VERIFIER = "verifier"


@dataclasses.dataclass(frozen=True, slots=True)
class NewJob:
    """What is known about a job when this node first records it (state ``NONE``)."""

    role: Role
    spec_hash: bytes
    max_payment: int
    price: int  # price per GPU-second agreed (or offered)
    deadline: int  # unix seconds
    spec: JobSpec | None = None
    request_id: bytes | None = None
    job_id: int | None = None  # the onchain id, when already known (verifiers)
    counterparty: bytes | None = None  # the other party's address
    peer: str | None = None  # the other party's libp2p peer id (base58), when it matters


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """One job as this node sees it."""

    id: int  # local id (stable; the onchain id may be unknown until matched)
    role: Role
    request_id: bytes | None
    job_id: int | None
    counterparty: bytes | None
    spec: JobSpec | None
    spec_hash: bytes
    state: JobState
    max_payment: int
    price: int
    deadline: int
    output_cid: ContentId | None
    attestation: bytes | None  # canonical encoding of the Attestation message
    tx_hashes: dict[str, str]  # contract call (JobEvent value) -> last tx hash sent
    created_at: int  # unix milliseconds
    updated_at: int
    abandoned_at: int | None  # set when a never-matched job is given up
    last_error: str | None
    peer: str | None = None  # the other party's libp2p peer id, if recorded

    @property
    def in_flight(self) -> bool:
        """Not terminal and not abandoned: work is still owed on it."""
        return not is_terminal(self.state) and self.abandoned_at is None


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One recorded transition of a job."""

    seq: int
    event: JobEvent
    from_state: JobState
    to_state: JobState
    block: int | None
    tx_hash: str | None
    at: int  # unix milliseconds


@dataclasses.dataclass(frozen=True, slots=True)
class OfferRecord:
    """An offer seen on the network (the signature was checked by whoever stored it)."""

    provider: bytes
    nonce: int
    price: int
    expiry: int
    device_class: str
    gpu_model: str
    sandbox_tier: int
    client: bytes
    encoded: bytes  # canonical Offer bytes
    received_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class BlobRecord:
    """A blob held on disk and why it is kept."""

    cid: ContentId
    size: int
    path: str
    created_at: int
    pinned_until: int  # unix seconds; the latest of the explicit pin and every job pin
    jobs: tuple[int, ...]  # local job ids that pin it


@dataclasses.dataclass(frozen=True, slots=True)
class StoredVote:
    """A verifier's committee vote and its salt (secret until revealed)."""

    committee: bytes
    job_id: int
    member: bytes
    fault: bool
    salt: bytes
    commitment: bytes
    created_at: int
    commit_tx: str | None
    revealed_at: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class StoredAttestation:
    """An attestation this node has seen (its own, from a peer, or from the chain)."""

    digest: bytes
    job_id: int
    provider: bytes
    output_hash: bytes
    encoded: bytes
    source: str
    received_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Cursor:
    """How far the chain watcher has processed."""

    block: int
    block_hash: bytes


# ---------------------------------------------------------------- column codecs
def hex_of(value: bytes) -> str:
    """Column form of an address or hash."""
    return "0x" + value.hex()


def bytes_of(text: str) -> bytes:
    """Inverse of :func:`hex_of`."""
    return bytes.fromhex(text[2:])


def u64_text(name: str, value: int) -> str:
    """Column form of a u64 amount (20-digit zero-padded decimal)."""
    check_u64(name, value)
    return f"{value:020d}"


def check_u64(name: str, value: int) -> None:
    """Raise :class:`StoreError` unless ``value`` is an int in ``[0, 2**64)``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
        raise StoreError(f"{name} must be an integer in [0, 2**64), got {value!r:.40}")


def check_i64(name: str, value: int) -> None:
    """Raise :class:`StoreError` unless ``value`` fits a non-negative sqlite integer."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= I64_MAX:
        raise StoreError(f"{name} must be an integer in [0, 2**63), got {value!r:.40}")


def check_bytes(name: str, value: bytes, size: int) -> None:
    """Raise :class:`StoreError` unless ``value`` is exactly ``size`` bytes."""
    if not isinstance(value, bytes) or len(value) != size:
        raise StoreError(f"{name} must be {size} bytes")


_PEER_ID = re.compile(r"[1-9A-HJ-NP-Za-km-z]{1,128}")


def check_peer_id(value: str) -> None:
    """A libp2p peer id as text: base58, 1 to 128 characters."""
    if not isinstance(value, str) or not _PEER_ID.fullmatch(value):
        raise StoreError(f"peer must be a base58 peer id of at most 128 characters: {value!r:.60}")


def check_tx_hash(value: str) -> str:
    """Normalise a ``0x`` + 64 hex transaction hash (lowercase)."""
    text = value.lower() if isinstance(value, str) else ""
    if len(text) != 66 or not text.startswith("0x"):
        raise StoreError(f"not a transaction hash: {value!r:.80}")
    try:
        bytes.fromhex(text[2:])
    except ValueError:
        raise StoreError(f"not a transaction hash: {value!r:.80}") from None
    return text


def encode_spec(spec: JobSpec) -> bytes:
    """Canonical bytes of a JobSpec (what ``spec_hash`` is the sha256 of)."""
    try:
        data = _SPEC_ENCODER.encode(spec)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StoreError(f"invalid job spec: {exc}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise StoreError(f"job spec is {len(data)} bytes, over the limit of {MAX_SPEC_BYTES}")
    try:  # structs are not validated when built in Python: prove a reader accepts it
        _SPEC_DECODER.decode(data)
    except (msgspec.ValidationError, ValueError) as exc:
        raise StoreError(f"invalid job spec: {exc}") from None
    return data


def decode_spec(data: bytes) -> JobSpec:
    """Inverse of :func:`encode_spec`."""
    return _SPEC_DECODER.decode(data)


def truncate_error(message: str) -> str:
    """Bound an error message to :data:`MAX_ERROR_CHARS` characters."""
    text = str(message)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
