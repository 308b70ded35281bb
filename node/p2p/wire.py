"""Small node-level frames that are not part of ``protocol/messages.py``.

They travel only on our own libp2p streams (documented in ``docs/p2p.md``):

* :class:`ResultAck` — the client's answer to a delivered ``ResultManifest``.
* :class:`JobCreatedNotice` — client -> provider on ``/gpunet/job-created/1.0.0``:
  "my ``createJob`` for your accept is mined in this transaction"; a hint the
  provider checks against the transaction's receipt, so it need not wait for
  its chain follower.
* :class:`TicketRequest` / :class:`Ticket` — a short-lived token for the blob
  data plane, obtained over the Noise-authenticated libp2p stream
  ``/gpunet/blob-ticket/1.0.0``.

Same rules as the protocol messages: MessagePack, strict schema, size cap
checked before parsing.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, TypeVar

import msgspec

from protocol.errors import GarbageInput, InvalidField, MessageTooLarge

__all__ = [
    "JobCreatedNotice",
    "ResultAck",
    "Ticket",
    "TicketRequest",
    "decode_frame",
    "encode_frame",
]

Hash32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Token = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Text = Annotated[str, msgspec.Meta(max_length=256)]
U64 = Annotated[int, msgspec.Meta(ge=0)]


class _Frame(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="t"):
    MAX_BYTES: ClassVar[int] = 512


class ResultAck(_Frame, frozen=True, kw_only=True, tag="result_ack"):
    """Client -> provider after a ResultManifest: accepted it, or why not."""

    job_id: U64
    ok: bool
    reason: Text = ""


class JobCreatedNotice(_Frame, frozen=True, kw_only=True, tag="job_created"):
    """Client -> provider: job ``job_id`` was created by transaction ``tx_hash``."""

    job_id: U64
    tx_hash: Hash32


class TicketRequest(_Frame, frozen=True, kw_only=True, tag="ticket_request"):
    """Ask for a data-plane ticket for blob ``cid`` on behalf of job ``job_id``."""

    cid: Hash32
    job_id: U64


class Ticket(_Frame, frozen=True, kw_only=True, tag="ticket"):
    """A data-plane ticket (status "ok") or a refusal (any other status, no token)."""

    cid: Hash32
    status: Annotated[str, msgspec.Meta(max_length=32)]
    token: bytes = b""
    host: Annotated[str, msgspec.Meta(max_length=64)] = ""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    total_size: U64 = 0
    expires_in: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 0


F = TypeVar("F", bound=_Frame)
_ENCODER = msgspec.msgpack.Encoder(order="deterministic")


def encode_frame(frame: _Frame) -> bytes:
    """MessagePack bytes of ``frame``."""
    return _ENCODER.encode(frame)


def decode_frame(data: bytes, cls: type[F]) -> F:
    """Strictly decode ``data`` as ``cls``; protocol DecodeError subclasses on failure."""
    if len(data) > cls.MAX_BYTES:
        raise MessageTooLarge(cls.__name__, len(data), cls.MAX_BYTES)
    try:
        return msgspec.msgpack.decode(data, type=cls)
    except msgspec.ValidationError as exc:
        raise InvalidField(f"{cls.__name__}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise GarbageInput(f"{cls.__name__}: {exc}") from None
