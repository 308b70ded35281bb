"""Typed exceptions for chain failures, including one class per custom error.

A revert's data (``selector || abi-encoded args``) is decoded against the escrow
and token ABIs into the matching :class:`ContractRevert` subclass, whose
``fields`` hold the decoded arguments. Reverts with no known selector become a
plain :class:`ContractRevert`; ``Error(string)`` and ``Panic(uint256)`` are
decoded too.
"""

from __future__ import annotations

from typing import Any, ClassVar

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError


class ChainError(Exception):
    """Base class of every error raised by :mod:`node.chain`."""


class RpcError(ChainError):
    """The node answered with a JSON-RPC error or an invalid answer."""

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class RpcUnavailable(RpcError):
    """The node could not be reached after all retries."""


class TransactionTimeout(ChainError):
    """No receipt arrived in time."""


class ContractRevert(ChainError):
    """A contract call reverted; subclasses name the custom error."""

    error_name: ClassVar[str] = ""

    def __init__(self, name: str, fields: dict[str, Any], data: bytes) -> None:
        super().__init__(f"{name}({', '.join(f'{k}={v!r}' for k, v in fields.items())})")
        self.name = name
        self.fields = fields
        self.data = data


class UnknownRevert(ContractRevert):
    """A revert whose data matches no known error (or no data at all)."""


class AttestationMismatch(ContractRevert):
    """The two attestations are not for this job and its provider."""

    error_name = "AttestationMismatch"


class ChallengeWindowClosed(ContractRevert):
    """The challenge window of the result has ended."""

    error_name = "ChallengeWindowClosed"


class ChallengeWindowOpen(ContractRevert):
    """The challenge window has not ended yet."""

    error_name = "ChallengeWindowOpen"


class DeadlineNotPassed(ContractRevert):
    """The job's deadline has not passed yet."""

    error_name = "DeadlineNotPassed"


class DeadlinePassed(ContractRevert):
    """The job's deadline has passed."""

    error_name = "DeadlinePassed"


class EmptyBatch(ContractRevert):
    """A batch call was given no items."""

    error_name = "EmptyBatch"


class InsufficientBalance(ContractRevert):
    """The account's free balance is too small."""

    error_name = "InsufficientBalance"


class InsufficientStake(ContractRevert):
    """The provider's active stake is too small."""

    error_name = "InsufficientStake"


class InvalidDeadline(ContractRevert):
    """The deadline is not in the future."""

    error_name = "InvalidDeadline"


class InvalidShortString(ContractRevert):
    """EIP-712 name/version encoding error (deployment only)."""

    error_name = "InvalidShortString"


class InvalidSignature(ContractRevert):
    """A signature is malformed or not by the expected signer."""

    error_name = "InvalidSignature"


class InvalidState(ContractRevert):
    """The job is not in the state this call needs."""

    error_name = "InvalidState"


class LaneBusy(ContractRevert):
    """The client's lane still holds a live job."""

    error_name = "LaneBusy"


class JobMismatch(ContractRevert):
    """The job struct passed does not match the stored hash."""

    error_name = "JobMismatch"


class NonceUsed(ContractRevert):
    """The offer's nonce was used or cancelled."""

    error_name = "NonceUsed"


class NotClient(ContractRevert):
    """Only the job's client may do this."""

    error_name = "NotClient"


class NotEquivocation(ContractRevert):
    """The two attestations are identical."""

    error_name = "NotEquivocation"


class NotProvider(ContractRevert):
    """Only the job's provider may do this."""

    error_name = "NotProvider"


class NotResolver(ContractRevert):
    """Only the resolver may do this."""

    error_name = "NotResolver"


class NothingUnbonding(ContractRevert):
    """There is no unbonding stake to withdraw."""

    error_name = "NothingUnbonding"


class OfferExpired(ContractRevert):
    """The offer has expired."""

    error_name = "OfferExpired"


class OwnableInvalidOwner(ContractRevert):
    """Invalid owner address."""

    error_name = "OwnableInvalidOwner"


class OwnableUnauthorizedAccount(ContractRevert):
    """Only the owner may do this."""

    error_name = "OwnableUnauthorizedAccount"


class PriceTooHigh(ContractRevert):
    """The offer's price exceeds 2**128 - 1."""

    error_name = "PriceTooHigh"


class ReentrancyGuardReentrantCall(ContractRevert):
    """A reentrant call was refused."""

    error_name = "ReentrancyGuardReentrantCall"


class SafeCastOverflowedUintDowncast(ContractRevert):
    """An amount does not fit its storage width."""

    error_name = "SafeCastOverflowedUintDowncast"


class SafeERC20FailedOperation(ContractRevert):
    """The token transfer failed."""

    error_name = "SafeERC20FailedOperation"


class StakeLocked(ContractRevert):
    """Unbonding stake is still locked."""

    error_name = "StakeLocked"


class StringTooLong(ContractRevert):
    """String too long (deployment only)."""

    error_name = "StringTooLong"


class WrongClient(ContractRevert):
    """The offer is bound to another client."""

    error_name = "WrongClient"


class ZeroAddress(ContractRevert):
    """An address argument is zero."""

    error_name = "ZeroAddress"


class ZeroAmount(ContractRevert):
    """An amount argument is zero."""

    error_name = "ZeroAmount"


class RevertString(ContractRevert):
    """``Error(string)`` (require with a message)."""

    error_name = "Error"


class Panic(ContractRevert):
    """``Panic(uint256)`` (assert, arithmetic, …)."""

    error_name = "Panic"


#: custom error name -> exception class
REVERT_TYPES: dict[str, type[ContractRevert]] = {
    cls.error_name: cls for cls in ContractRevert.__subclasses__() if cls.error_name
}

_ERROR_STRING = bytes.fromhex("08c379a0")
_PANIC = bytes.fromhex("4e487b71")


def decode_revert(data: bytes, errors: dict[bytes, Any]) -> ContractRevert:
    """Turn revert data into a typed exception using ``errors`` (selector -> ErrorDef)."""
    if len(data) < 4:
        return UnknownRevert("revert", {}, data)
    selector = data[:4]
    try:
        if selector == _ERROR_STRING:
            (msg,) = abi_decode(["string"], data[4:])
            return RevertString("Error", {"message": msg}, data)
        if selector == _PANIC:
            (code,) = abi_decode(["uint256"], data[4:])
            return Panic("Panic", {"code": code}, data)
        err = errors.get(selector)
        if err is None:
            return UnknownRevert("revert", {"selector": "0x" + selector.hex()}, data)
        fields = err.decode(data)
    except (DecodingError, ValueError):
        return UnknownRevert("revert", {"data": "0x" + data.hex()}, data)
    cls = REVERT_TYPES.get(err.name, UnknownRevert)
    return cls(err.name, fields, data)
