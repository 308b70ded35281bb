"""Plumbing shared by the typed contract wrappers: calls, transactions, events, reverts.

A subclass sets ``abi`` (and optionally ``_revert_errors``: selector -> error
definition, for errors of other contracts its calls can bubble up). Transactions
are encoded with cached selectors and ``eth_abi``; gas is estimated (which also
surfaces reverts as typed exceptions before anything is sent) unless the caller
passes ``gas=``. A transaction mined with status 0 is replayed with ``eth_call``
on its parent block to recover the custom error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from eth_abi.exceptions import DecodingError

from node.chain.abi import Abi
from node.chain.errors import ChainError, RpcError, UnknownRevert, decode_revert
from node.chain.rpc import Log, Receipt, Rpc, Signer, revert_data

GAS_MARGIN_PERCENT = 25


@dataclasses.dataclass(frozen=True, slots=True)
class EventRecord:
    """A decoded contract event from a receipt or a log query."""

    name: str
    fields: dict[str, Any]
    block_number: int
    log_index: int


@dataclasses.dataclass(frozen=True, slots=True)
class TxResult:
    """A mined, successful transaction and the contract's events it emitted."""

    receipt: Receipt
    events: tuple[EventRecord, ...]

    @property
    def gas_used(self) -> int:
        """Gas used by the whole transaction."""
        return self.receipt.gas_used

    def named(self, name: str) -> list[dict[str, Any]]:
        """Fields of every event called ``name``, in log order."""
        return [e.fields for e in self.events if e.name == name]


class BoundContract:
    """A deployed contract at ``address``, optionally with a signer for transactions."""

    abi: ClassVar[Abi]
    _revert_errors: ClassVar[dict[bytes, Any]]

    def __init__(self, rpc: Rpc, address: bytes, signer: Signer | None = None) -> None:
        if len(address) != 20:
            raise ValueError("contract address must be 20 bytes")
        self.rpc = rpc
        self.address = address
        self.signer = signer

    def _call(self, name: str, *args: Any) -> tuple[Any, ...]:
        fn = self.abi.functions[name]
        try:
            raw = self.rpc.call(self.address, fn.encode(*args))
        except RpcError as exc:
            raise self._revert(exc) from None
        try:
            return fn.decode(raw)
        except DecodingError as exc:  # e.g. empty data: no contract (of this kind) there
            raise ChainError(
                f"{name}: undecodable answer from 0x{self.address.hex()} "
                f"({len(raw)} bytes; is a {type(self).__name__} deployed there?)"
            ) from exc

    def _revert(self, exc: RpcError) -> ChainError:
        data = revert_data(exc)
        if data is None:
            return exc
        return decode_revert(data, self._revert_errors)

    def decode_events(self, receipt: Receipt) -> tuple[EventRecord, ...]:
        """This contract's events in a receipt."""
        return tuple(ev for lg in receipt.logs if (ev := self.decode_log(lg)) is not None)

    def decode_log(self, lg: Log) -> EventRecord | None:
        """The event a log of this contract records (None for another contract's log or
        an unknown event); :class:`RpcError` if its data does not decode as that event."""
        if lg.address != self.address or not lg.topics:
            return None
        ev = self.abi.events_by_topic.get(lg.topics[0])
        if ev is None:
            return None
        try:
            fields = ev.decode(lg.topics[1:], lg.data)
        except (DecodingError, ValueError, IndexError, OverflowError) as exc:
            raise RpcError(f"undecodable {ev.name} log: {exc}") from None
        return EventRecord(ev.name, fields, lg.block_number, lg.log_index)

    def transact(
        self,
        name: str,
        *args: Any,
        gas: int | None = None,
        on_signed: Callable[[bytes], None] | None = None,
    ) -> TxResult:
        """Send ``name(*args)`` and wait; raise a typed :class:`ContractRevert` on revert.
        ``on_signed`` gets the transaction hash just before it is sent."""
        if self.signer is None:
            raise ChainError(f"this {type(self).__name__} has no signer")
        data = self.abi.functions[name].encode(*args)
        if gas is None:
            try:
                estimate = self.signer.estimate_gas(self.address, data)
            except RpcError as exc:
                raise self._revert(exc) from None
            gas = estimate + estimate * GAS_MARGIN_PERCENT // 100
        receipt = self.signer.transact(self.address, data, gas=gas, on_signed=on_signed)
        if receipt.status != 1:
            raise self._replay_revert(data, receipt)
        return TxResult(receipt, self.decode_events(receipt))

    def _replay_revert(self, data: bytes, receipt: Receipt) -> ChainError:
        assert self.signer is not None
        tx = {"from": self.signer.account.address, "to": "0x" + self.address.hex()}
        tx["data"] = "0x" + data.hex()
        try:
            self.rpc.request("eth_call", [tx, hex(max(receipt.block_number - 1, 0))])
        except RpcError as exc:
            return self._revert(exc)
        return UnknownRevert("revert", {"tx": "0x" + receipt.tx_hash.hex()}, b"")
