"""Typed, versioned wire messages and their canonical encoding.

Every message is a msgspec ``Struct`` encoded as a MessagePack map whose first
two keys are ``t`` (the message type) and ``v`` (its version), then the fields
in declaration order; maps inside a message have sorted keys. Integers use
their shortest MessagePack form. This encoding is *canonical*: one value has
exactly one byte string, and :func:`decode` rejects any other byte string for
the same value (:class:`NonCanonicalEncoding`), so hashes and signatures over
encoded bytes are stable.

Decoding is strict and bounded (SPEC.md "Bad input"):

1. the byte length is checked against the type's limit before parsing
   (the largest limit first, then the type's own);
2. the header (``t``, ``v``) is read; an unknown type raises
   :class:`UnknownMessageType`, an unknown version :class:`UnsupportedVersion`;
3. the body is decoded against the schema for that version: unknown fields,
   missing fields, wrong types and out-of-range values raise
   :class:`InvalidField`;
4. the value is re-encoded and compared with the input.

All amounts on the wire are unsigned 64-bit integers in the token's smallest
unit; a ``job_id`` is the contract's uint64 job counter.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Annotated, Any, ClassVar, Final, TypeVar, Union

import msgspec
from eth_hash.auto import keccak

from protocol import eip712
from protocol.content import ContentId
from protocol.errors import (
    DecodeError,
    GarbageInput,
    InvalidField,
    MessageTooLarge,
    NonCanonicalEncoding,
    UnknownMessageType,
    UnsupportedVersion,
)
from protocol.identity import Identity

__all__ = [
    "ADVERTISEMENT_CLIENT",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Attestation",
    "BlobRequest",
    "BlobResponse",
    "BlobStatus",
    "Capabilities",
    "DeclineReason",
    "Determinism",
    "JobAccept",
    "JobDecline",
    "JobFormat",
    "JobRequest",
    "JobSpec",
    "Message",
    "ModelRef",
    "Offer",
    "ResultManifest",
    "decode",
    "decode_as",
    "encode",
]

PROTOCOL_VERSION: Final = 1

# ---------------------------------------------------------------- field types
U8 = Annotated[int, msgspec.Meta(ge=0, le=2**8 - 1)]
U16 = Annotated[int, msgspec.Meta(ge=0, le=2**16 - 1)]
U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgpack itself caps integers at 2**64 - 1
Address = Annotated[bytes, msgspec.Meta(min_length=20, max_length=20)]
Hash32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Signature = Annotated[bytes, msgspec.Meta(min_length=65, max_length=65)]
RequestId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@+/-]+$")]
Text = Annotated[str, msgspec.Meta(max_length=256)]
ConfigKey = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")]
ConfigValue = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Chunk = Annotated[bytes, msgspec.Meta(max_length=1 << 20)]

ZERO_ADDRESS: Final = bytes(20)
#: ``Offer.client`` of a gossiped advertisement: nobody holds this address's key,
#: so an advertisement can never be matched onchain; a client sends a JobRequest
#: and matches the client-bound offer in the JobAccept instead.
ADVERTISEMENT_CLIENT: Final = bytes(19) + b"\x01"


class Determinism(enum.IntEnum):
    """Determinism tier of a job; decides how a verifier compares results."""

    EXACT = 0  # CPU, deterministic algorithms: bitwise reproducible per runtime id
    GPU_DETERMINISTIC = 1  # deterministic GPU kernels, same device class and runtime id
    TOLERANCE = 2  # compared within the catalog model's stated relative error


class JobFormat(enum.StrEnum):
    """How a job's model is described."""

    CATALOG_V1 = "catalog-v1"  # allowlisted architecture + safetensors weights
    EXPORT_V2 = "export-v2"  # torch.export .pt2 program, top sandbox tier only


class DeclineReason(enum.StrEnum):
    """Machine-readable reason a provider declines a job request."""

    CAPACITY = "capacity"
    PRICE = "price"
    FORMAT = "format"
    SIZE = "size"
    TIER = "tier"
    UNKNOWN_MODEL = "unknown_model"
    DEADLINE = "deadline"
    DETERMINISM = "determinism"
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"


class BlobStatus(enum.StrEnum):
    """Outcome of a blob request."""

    OK = "ok"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    BAD_RANGE = "bad_range"
    BUSY = "busy"


class _Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Nested value (no envelope)."""


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="t"):
    """Base of every top-level message: carries ``t`` (tag) and ``v`` (version)."""

    v: int = PROTOCOL_VERSION

    #: encoded-size limit in bytes, checked before parsing
    MAX_BYTES: ClassVar[int] = 4096
    #: versions this node decodes
    VERSIONS: ClassVar[tuple[int, ...]] = (PROTOCOL_VERSION,)

    def __post_init__(self) -> None:
        # Top-level versions are checked before parsing; this catches nested messages.
        if self.v not in self.VERSIONS:
            raise ValueError(f"{type(self).__name__} version {self.v} is not supported")


# ---------------------------------------------------------------- offers
class Capabilities(_Base, frozen=True, kw_only=True):
    """What a provider offers; hashed into the EIP-712 ``capabilitiesHash``."""

    device_class: Name  # e.g. "cpu", "nvidia-h200"
    gpu_model: Annotated[str, msgspec.Meta(max_length=64)]
    gpu_memory_mib: U32
    gpu_count: Annotated[int, msgspec.Meta(ge=0, le=64)]
    sandbox_tier: Annotated[int, msgspec.Meta(ge=0, le=3)]
    formats: Annotated[tuple[JobFormat, ...], msgspec.Meta(min_length=1, max_length=4)]
    determinism: Annotated[tuple[Determinism, ...], msgspec.Meta(min_length=1, max_length=3)]
    runtimes: Annotated[tuple[Name, ...], msgspec.Meta(min_length=1, max_length=8)]
    max_job_bytes: U64
    max_concurrent_jobs: U16 = 1

    def hash(self) -> bytes:
        """keccak256 of the canonical encoding: the offer's ``capabilitiesHash``."""
        return bytes(keccak(_ENCODER.encode(self)))


class Offer(Message, frozen=True, kw_only=True, tag="offer"):
    """A provider's signed offer (gossiped, or bound to one client in a JobAccept)."""

    MAX_BYTES: ClassVar[int] = 2048

    provider: Address
    client: Address = ZERO_ADDRESS  # zero: any client may match it
    chain_id: U64
    contract: Address
    price_per_gpu_second: U64
    nonce: U64
    expiry: U64  # unix seconds
    capabilities: Capabilities
    signature: Signature

    def domain(self) -> eip712.Domain:
        """EIP-712 domain the offer is signed in."""
        return eip712.Domain(self.chain_id, self.contract)

    def signed_data(self) -> eip712.OfferData:
        """The EIP-712 struct the signature covers."""
        return eip712.OfferData(
            provider=self.provider,
            client=self.client,
            capabilities_hash=self.capabilities.hash(),
            price_per_gpu_second=self.price_per_gpu_second,
            nonce=self.nonce,
            expiry=self.expiry,
        )

    def digest(self) -> bytes:
        """EIP-712 digest of the offer."""
        return eip712.offer_digest(self.domain(), self.signed_data())

    def verify(self) -> None:
        """Raise :class:`~protocol.errors.BadSignature` unless ``provider`` signed it."""
        eip712.verify_signer(self.digest(), self.signature, self.provider)

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        chain_id: int,
        contract: bytes,
        price_per_gpu_second: int,
        nonce: int,
        expiry: int,
        capabilities: Capabilities,
        client: bytes = ZERO_ADDRESS,
    ) -> Offer:
        """Build and sign an offer with ``identity``'s key."""
        unsigned = eip712.OfferData(
            provider=identity.address,
            client=client,
            capabilities_hash=capabilities.hash(),
            price_per_gpu_second=price_per_gpu_second,
            nonce=nonce,
            expiry=expiry,
        )
        digest = eip712.offer_digest(eip712.Domain(chain_id, contract), unsigned)
        return cls(
            provider=identity.address,
            client=client,
            chain_id=chain_id,
            contract=contract,
            price_per_gpu_second=price_per_gpu_second,
            nonce=nonce,
            expiry=expiry,
            capabilities=capabilities,
            signature=eip712.sign_digest(identity.private_key, digest),
        )


# ---------------------------------------------------------------- jobs
class ModelRef(_Base, frozen=True, kw_only=True):
    """The model of a job: a catalog architecture (v1) or an exported program (v2)."""

    arch: Name  # catalog entry, e.g. "resnet18@1"; "export" for v2
    config: dict[ConfigKey, ConfigValue] = {}
    weights: Hash32  # content id (sha256) of the safetensors file / .pt2 archive
    weights_size: U64

    def __post_init__(self) -> None:
        if len(self.config) > 32:
            raise ValueError("config has more than 32 keys")


class JobSpec(_Base, frozen=True, kw_only=True):
    """What to run: hashed (sha256 of the canonical encoding) into the onchain ``specHash``."""

    format: JobFormat = JobFormat.CATALOG_V1
    model: ModelRef
    inputs: Hash32  # content id of the safetensors inputs (the exact batch)
    inputs_size: U64
    determinism: Determinism = Determinism.EXACT
    min_sandbox_tier: Annotated[int, msgspec.Meta(ge=0, le=3)] = 0
    max_output_bytes: U64 = 64 << 20
    max_gpu_millis: U64 = 60_000

    def spec_hash(self) -> bytes:
        """sha256 of the canonical encoding: the job's ``specHash``."""
        return hashlib.sha256(_ENCODER.encode(self)).digest()


#: Largest inputs (or output) a JobRequest (ResultManifest) may carry inline.
MAX_INLINE_BYTES: Final = 1024


class JobRequest(Message, frozen=True, kw_only=True, tag="job_request"):
    """Client -> provider: please run this job under these terms.

    Inputs of at most :data:`MAX_INLINE_BYTES` may travel ``inputs_inline``; they
    must then be the whole inputs blob (size and content id checked here).
    """

    MAX_BYTES: ClassVar[int] = 4096 + MAX_INLINE_BYTES

    request_id: RequestId
    client: Address
    spec: JobSpec
    max_price_per_gpu_second: U64
    max_payment: U64
    deadline: U64  # unix seconds by which the result must be onchain
    inputs_inline: Annotated[bytes, msgspec.Meta(max_length=MAX_INLINE_BYTES)] = b""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inputs_inline and (
            len(self.inputs_inline) != self.spec.inputs_size
            or hashlib.sha256(self.inputs_inline).digest() != self.spec.inputs
        ):
            raise ValueError("inline inputs are not the spec's inputs")


class JobAccept(Message, frozen=True, kw_only=True, tag="job_accept"):
    """Provider -> client: accepted; here is an offer bound to you for ``createJob``."""

    MAX_BYTES: ClassVar[int] = 3072

    request_id: RequestId
    spec_hash: Hash32
    offer: Offer
    estimated_gpu_millis: U64 = 0
    queue_position: U32 = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.offer.client in (ZERO_ADDRESS, ADVERTISEMENT_CLIENT):
            raise ValueError("the offer in a JobAccept must be bound to the client")


class JobDecline(Message, frozen=True, kw_only=True, tag="job_decline"):
    """Provider -> client: declined, with a machine-readable reason (never silence)."""

    MAX_BYTES: ClassVar[int] = 512

    request_id: RequestId
    reason: DeclineReason
    message: Text = ""
    retry_after: U32 = 0  # seconds; 0 = do not retry this provider for this job


class Attestation(Message, frozen=True, kw_only=True, tag="attestation"):
    """A provider's signed statement of the result of one job (checked onchain)."""

    MAX_BYTES: ClassVar[int] = 1024

    chain_id: U64
    contract: Address
    job_id: U64
    provider: Address
    spec_hash: Hash32
    output_hash: Hash32  # sha256 of the output safetensors
    runtime: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    determinism: Determinism
    metered_millis: U64
    signature: Signature

    @property
    def runtime_id(self) -> bytes:
        """sha256 of the runtime descriptor (torch version, device class, catalog, tier)."""
        return hashlib.sha256(self.runtime.encode()).digest()

    def domain(self) -> eip712.Domain:
        """EIP-712 domain the attestation is signed in."""
        return eip712.Domain(self.chain_id, self.contract)

    def signed_data(self) -> eip712.AttestationData:
        """The EIP-712 struct the signature covers."""
        return eip712.AttestationData(
            job_id=self.job_id,
            provider=self.provider,
            spec_hash=self.spec_hash,
            output_hash=self.output_hash,
            runtime_id=self.runtime_id,
            determinism=int(self.determinism),
            metered_millis=self.metered_millis,
        )

    def digest(self) -> bytes:
        """EIP-712 digest of the attestation."""
        return eip712.attestation_digest(self.domain(), self.signed_data())

    def verify(self) -> None:
        """Raise :class:`~protocol.errors.BadSignature` unless ``provider`` signed it."""
        eip712.verify_signer(self.digest(), self.signature, self.provider)

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        chain_id: int,
        contract: bytes,
        job_id: int,
        spec_hash: bytes,
        output_hash: bytes,
        runtime: str,
        determinism: Determinism,
        metered_millis: int,
    ) -> Attestation:
        """Build and sign an attestation with ``identity``'s key."""
        draft = cls(
            chain_id=chain_id,
            contract=contract,
            job_id=job_id,
            provider=identity.address,
            spec_hash=spec_hash,
            output_hash=output_hash,
            runtime=runtime,
            determinism=determinism,
            metered_millis=metered_millis,
            signature=bytes(65),
        )
        return msgspec.structs.replace(
            draft, signature=eip712.sign_digest(identity.private_key, draft.digest())
        )


#: Largest output a ResultManifest may carry inline (smaller outputs skip a blob fetch).
MAX_INLINE_OUTPUT: Final = MAX_INLINE_BYTES


class ResultManifest(Message, frozen=True, kw_only=True, tag="result"):
    """Provider -> client (and verifiers): where the output is and what was attested.

    An output of at most :data:`MAX_INLINE_OUTPUT` bytes may travel ``inline``;
    it must then be the whole output (its size and content id are checked here).
    """

    MAX_BYTES: ClassVar[int] = 2048 + MAX_INLINE_OUTPUT

    job_id: U64
    output: Hash32  # content id of the output safetensors
    output_size: U64
    attestation: Attestation
    peak_memory_bytes: U64 = 0
    wall_millis: U64 = 0
    inline: Annotated[bytes, msgspec.Meta(max_length=MAX_INLINE_OUTPUT)] = b""
    #: ``challengeEnd`` of the job's mined ``ResultSubmitted`` as the provider saw it
    #: (0: not given). A hint: the client may accept with it instead of looking the
    #: event up, since ``acceptResult`` reverts unless the chain holds exactly that job.
    challenge_end: U64 = 0
    #: hash of the provider's ``submitResult(s)`` transaction for this job, sent as
    #: soon as it is signed, possibly before it is mined (empty: not given). A hint:
    #: the client reads that transaction's receipt from its own chain node.
    submit_tx: Annotated[bytes, msgspec.Meta(max_length=32)] = b""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.submit_tx and len(self.submit_tx) != 32:
            raise ValueError("submit_tx is a 32-byte transaction hash or empty")
        if self.attestation.job_id != self.job_id:
            raise ValueError("attestation is for another job")
        if self.attestation.output_hash != self.output:
            raise ValueError("attestation covers another output")
        if self.inline and (
            len(self.inline) != self.output_size
            or hashlib.sha256(self.inline).digest() != self.output
        ):
            raise ValueError("inline output is not the output")


# ---------------------------------------------------------------- blobs
class BlobRequest(Message, frozen=True, kw_only=True, tag="blob_request"):
    """Ask for ``length`` bytes of a blob from ``offset`` (resumable, chunked)."""

    MAX_BYTES: ClassVar[int] = 256

    cid: Hash32
    offset: U64 = 0
    length: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)] = 1 << 20
    job_id: U64  # the job that gives the requester a reason to have this blob

    @property
    def content_id(self) -> ContentId:
        """The requested blob's content id."""
        return ContentId(self.cid)


class BlobResponse(Message, frozen=True, kw_only=True, tag="blob_response"):
    """One chunk of a blob (or a status saying why not)."""

    MAX_BYTES: ClassVar[int] = (1 << 20) + 256

    cid: Hash32
    status: BlobStatus
    offset: U64 = 0
    total_size: U64 = 0
    data: Chunk = b""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.status is not BlobStatus.OK and self.data:
            raise ValueError("only an OK response carries data")
        if self.offset + len(self.data) > self.total_size and self.status is BlobStatus.OK:
            raise ValueError("chunk extends past the blob's total size")


# ---------------------------------------------------------------- codec
AnyMessage = Union[  # noqa: UP007 - msgspec needs a runtime Union object
    Offer, JobRequest, JobAccept, JobDecline, Attestation, ResultManifest, BlobRequest, BlobResponse
]

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    "offer": Offer,
    "job_request": JobRequest,
    "job_accept": JobAccept,
    "job_decline": JobDecline,
    "attestation": Attestation,
    "result": ResultManifest,
    "blob_request": BlobRequest,
    "blob_response": BlobResponse,
}
_MAX_ANY: Final = max(t.MAX_BYTES for t in MESSAGE_TYPES.values())


_HEADER_PEEK: Final = 320


def _peek_header(head: bytes) -> tuple[str, int]:
    """Read ``t`` and ``v`` from the start of an envelope without parsing the rest.

    The envelope is a map whose first two keys are ``t`` (a string) and ``v``
    (an unsigned integer); anything else is :class:`GarbageInput`. Integer
    widths are accepted here so that a non-canonical width is reported as
    :class:`NonCanonicalEncoding` by the full decode.
    """
    try:
        pos = 0
        first = head[pos]
        if 0x80 <= first <= 0x8F:
            pos += 1
        elif first == 0xDE:
            pos += 3
        elif first == 0xDF:
            pos += 5
        else:
            raise GarbageInput("a message is a MessagePack map")
        if head[pos : pos + 2] != b"\xa1t":
            raise GarbageInput("a message's first key must be 't'")
        pos += 2
        kind = head[pos]
        if 0xA0 <= kind <= 0xBF:
            length, pos = kind & 0x1F, pos + 1
        elif kind == 0xD9:
            length, pos = head[pos + 1], pos + 2
        else:
            raise GarbageInput("a message's type must be a short string")
        raw_tag = head[pos : pos + length]
        if len(raw_tag) != length:
            raise GarbageInput("truncated message header")
        tag = raw_tag.decode("utf-8")
        pos += length
        if head[pos : pos + 2] != b"\xa1v":
            raise GarbageInput("a message's second key must be 'v'")
        pos += 2
        kind = head[pos]
        if kind <= 0x7F:
            return tag, kind
        width = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}.get(kind)
        if width is None:
            raise GarbageInput("a message's version must be an unsigned integer")
        raw_v = head[pos + 1 : pos + 1 + width]
        if len(raw_v) != width:
            raise GarbageInput("truncated message header")
        return tag, int.from_bytes(raw_v, "big")
    except IndexError:
        raise GarbageInput("truncated message header") from None
    except UnicodeDecodeError:
        raise GarbageInput("message type is not UTF-8") from None


_ENCODER: Final = msgspec.msgpack.Encoder(order="deterministic")
_DECODERS: Final[dict[str, msgspec.msgpack.Decoder[Any]]] = {
    tag: msgspec.msgpack.Decoder(cls) for tag, cls in MESSAGE_TYPES.items()
}

M = TypeVar("M", bound=Message)


def encode(message: Message, *, validate: bool = True) -> bytes:
    """Canonical bytes of ``message``.

    Structs are not validated when built in Python, so by default the bytes are
    decoded once more to prove the receiver will accept them (raising the same
    :class:`DecodeError` it would). Hot paths that build messages from already
    validated values may pass ``validate=False``.
    """
    try:
        data = _ENCODER.encode(message)
    except (OverflowError, TypeError, ValueError) as exc:
        raise InvalidField(f"{type(message).__name__}: cannot encode: {exc}") from None
    if len(data) > message.MAX_BYTES:
        raise MessageTooLarge(type(message).__name__, len(data), message.MAX_BYTES)
    if validate:
        decode(data)
    return data


def decode(data: bytes | bytearray | memoryview, *, expect: tuple[str, ...] = ()) -> Message:
    """Strictly decode one message; every failure is a :class:`DecodeError` subclass.

    ``expect`` optionally restricts the accepted types (tags), e.g. ``("offer",)``.
    """
    size = len(data)
    if size > _MAX_ANY:
        raise MessageTooLarge("message", size, _MAX_ANY)
    tag, version = _peek_header(bytes(data[:_HEADER_PEEK]))
    cls = MESSAGE_TYPES.get(tag)
    if cls is None or (expect and tag not in expect):
        raise UnknownMessageType(f"unexpected message type {tag[:40]!r}")
    if size > cls.MAX_BYTES:
        raise MessageTooLarge(cls.__name__, size, cls.MAX_BYTES)
    if version not in cls.VERSIONS:
        raise UnsupportedVersion(cls.__name__, version, cls.VERSIONS)
    try:
        message: Message = _DECODERS[tag].decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidField(f"{cls.__name__}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise GarbageInput(f"{cls.__name__}: {exc}") from None
    except (ValueError, TypeError) as exc:  # __post_init__ checks
        raise InvalidField(f"{cls.__name__}: {exc}") from None
    if _ENCODER.encode(message) != bytes(data):
        raise NonCanonicalEncoding(f"{cls.__name__}: bytes are not the canonical encoding")
    return message


#: Largest canonical JobSpec a node accepts when it fetches one as a blob (SPEC.md §9).
MAX_SPEC_BYTES: Final = 4096
_SPEC_DECODER: Final = msgspec.msgpack.Decoder(JobSpec)


def spec_bytes(spec: JobSpec) -> bytes:
    """Canonical bytes of a job spec: sha256 of them is the onchain ``specHash``, so a
    provider serves them as a blob whose content id is the spec hash."""
    return _ENCODER.encode(spec)


def decode_spec(data: bytes | bytearray | memoryview, spec_hash: bytes) -> JobSpec:
    """Strictly decode a spec fetched by its hash: bounded, canonical, hash checked."""
    if len(data) > MAX_SPEC_BYTES:
        raise MessageTooLarge("JobSpec", len(data), MAX_SPEC_BYTES)
    if hashlib.sha256(data).digest() != spec_hash:
        raise InvalidField("JobSpec: bytes do not hash to the spec hash")
    try:
        spec = _SPEC_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidField(f"JobSpec: {exc}") from None
    except msgspec.DecodeError as exc:
        raise GarbageInput(f"JobSpec: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidField(f"JobSpec: {exc}") from None
    if _ENCODER.encode(spec) != bytes(data):
        raise NonCanonicalEncoding("JobSpec: bytes are not the canonical encoding")
    return spec


def decode_as(data: bytes | bytearray | memoryview, cls: type[M]) -> M:
    """Decode and require a specific message type."""
    tag = cls.__struct_config__.tag
    if not isinstance(tag, str):
        raise DecodeError(f"{cls.__name__} is not a top-level message")
    message = decode(data, expect=(tag,))
    assert isinstance(message, cls)
    return message
