"""Typed exceptions raised by the protocol layer.

Every failure to decode, verify or apply something that came from outside is one
of these, so a caller can answer the sender with a precise reason and never
crashes on bad input.
"""

from __future__ import annotations

__all__ = [
    "BadSignature",
    "DecodeError",
    "GarbageInput",
    "IdentityError",
    "IllegalTransition",
    "InvalidField",
    "MessageTooLarge",
    "NonCanonicalEncoding",
    "PricingError",
    "ProtocolError",
    "UnknownMessageType",
    "UnsupportedVersion",
]


class ProtocolError(Exception):
    """Base class of every error raised by ``protocol``."""


class DecodeError(ProtocolError):
    """Bytes could not be turned into a valid message."""


class MessageTooLarge(DecodeError):
    """The encoded message exceeds the limit for its type (checked before parsing)."""

    def __init__(self, kind: str, size: int, limit: int) -> None:
        super().__init__(f"{kind}: {size} bytes exceeds the limit of {limit}")
        self.kind = kind
        self.size = size
        self.limit = limit


class GarbageInput(DecodeError):
    """The bytes are not a well-formed message envelope at all."""


class UnknownMessageType(DecodeError):
    """The envelope names a message type this node does not know."""


class UnsupportedVersion(DecodeError):
    """The message's version is not one this node speaks."""

    def __init__(self, kind: str, version: int, supported: tuple[int, ...]) -> None:
        super().__init__(f"{kind}: version {version} not supported (supported: {supported})")
        self.kind = kind
        self.version = version
        self.supported = supported


class InvalidField(DecodeError):
    """A field is missing, unknown, of the wrong type or out of range."""


class NonCanonicalEncoding(DecodeError):
    """The bytes decode, but are not the canonical encoding of their value."""


class BadSignature(ProtocolError):
    """A signature is malformed or does not recover to the expected signer."""


class IdentityError(ProtocolError):
    """A key, keystore, peer id or address is malformed or does not match."""


class IllegalTransition(ProtocolError):
    """A lifecycle event is not allowed in the job's current state."""

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"event {event!r} is not allowed in state {state}")
        self.state = state
        self.event = event


class PricingError(ProtocolError):
    """An amount is negative, overflows uint256 or violates a cap."""
