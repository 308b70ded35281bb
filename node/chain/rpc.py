"""JSON-RPC transport: validated answers, retries, local signing, nonces, receipts.

Fast paths (measured on anvil, see shared/notes/evm-toolchain.md): requests go
over a keep-alive ``http.client`` connection per thread
(:mod:`node.chain.transport`; no web3 middleware, ~0.1 ms of CPU a call instead
of ~0.6 ms through web3's ``HTTPProvider``), the chain id is asked once, transactions are signed
locally (:mod:`node.chain.txsign`: ~0.09 ms against eth-account's ~0.43) and sent with gas,
fees and nonce set here, with
``eth_sendRawTransactionSync`` (EIP-7966: the receipt comes back with the send)
where the node has it, else with ``eth_sendRawTransaction`` and a receipt polled
every 0.5 ms at first instead of every 100 ms.

Every answer is untrusted: its type and size are checked before use, and a bad
answer raises :class:`~node.chain.errors.RpcError` instead of propagating junk.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.chain.errors import ChainError, RpcError, RpcUnavailable, TransactionTimeout
from node.chain.transport import BadAnswer, HttpTransport, TransportError
from node.chain.txsign import SignedTx, TxSigner

log = logging.getLogger(__name__)

_MAX_HEX_CHARS = 2 * 1024 * 1024  # 1 MiB of bytes in one hex field
MAX_LOGS = 50_000  # per eth_getLogs answer
_T = TypeVar("_T")


def parse_quantity(value: Any, what: str) -> int:
    """A JSON-RPC QUANTITY (``0x``-hex, at most 256 bits) as int."""
    if not isinstance(value, str) or not value.startswith("0x") or not 3 <= len(value) <= 66:
        raise RpcError(f"{what}: expected a hex quantity, got {str(value)[:80]!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise RpcError(f"{what}: not hex: {value[:80]!r}") from None


def parse_data(value: Any, what: str, size: int | None = None) -> bytes:
    """A JSON-RPC DATA field (``0x``-hex) as bytes, optionally of an exact size."""
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > _MAX_HEX_CHARS:
        raise RpcError(f"{what}: expected hex data, got {str(value)[:80]!r}")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise RpcError(f"{what}: not hex: {value[:80]!r}") from None
    if size is not None and len(raw) != size:
        raise RpcError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


@dataclasses.dataclass(frozen=True, slots=True)
class Log:
    """One validated event log."""

    address: bytes
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int
    removed: bool

    @classmethod
    def parse(cls, raw: Any) -> Log:
        """Validate one ``eth_getLogs`` / receipt log entry."""
        if not isinstance(raw, dict):
            raise RpcError("log: expected an object")
        topics = raw.get("topics")
        if not isinstance(topics, list) or len(topics) > 4:
            raise RpcError("log: bad topics")
        return cls(
            address=parse_data(raw.get("address"), "log.address", 20),
            topics=tuple(parse_data(t, "log.topic", 32) for t in topics),
            data=parse_data(raw.get("data"), "log.data"),
            block_number=parse_quantity(raw.get("blockNumber"), "log.blockNumber"),
            block_hash=parse_data(raw.get("blockHash"), "log.blockHash", 32),
            tx_hash=parse_data(raw.get("transactionHash"), "log.transactionHash", 32),
            log_index=parse_quantity(raw.get("logIndex"), "log.logIndex"),
            removed=bool(raw.get("removed", False)),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Receipt:
    """The parts of a transaction receipt the node uses."""

    tx_hash: bytes
    status: int
    block_number: int
    block_hash: bytes
    gas_used: int
    contract_address: bytes | None
    logs: tuple[Log, ...]

    @classmethod
    def parse(cls, raw: Any) -> Receipt:
        """Validate an ``eth_getTransactionReceipt`` answer."""
        if not isinstance(raw, dict):
            raise RpcError("receipt: expected an object")
        logs = raw.get("logs")
        if not isinstance(logs, list) or len(logs) > 100_000:
            raise RpcError("receipt: bad logs")
        created = raw.get("contractAddress")
        return cls(
            tx_hash=parse_data(raw.get("transactionHash"), "receipt.transactionHash", 32),
            status=parse_quantity(raw.get("status"), "receipt.status"),
            block_number=parse_quantity(raw.get("blockNumber"), "receipt.blockNumber"),
            block_hash=parse_data(raw.get("blockHash"), "receipt.blockHash", 32),
            gas_used=parse_quantity(raw.get("gasUsed"), "receipt.gasUsed"),
            contract_address=None
            if created is None
            else parse_data(created, "receipt.contractAddress", 20),
            logs=tuple(Log.parse(x) for x in logs),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for transport failures (not for reverts)."""

    attempts: int = 5
    initial_delay: float = 0.05
    max_delay: float = 2.0


class Rpc:
    """Thin, validated JSON-RPC client (:mod:`node.chain.transport` moves the bytes).

    ``on_error(method)`` is called once for every failed request: each transport
    failure (retries included), each error answer (reverts included) and each
    malformed answer. A node passes :meth:`node.metrics.Metrics.rpc_error`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.retry = retry or RetryPolicy()
        self.on_error = on_error
        self._transport = HttpTransport(url, timeout=timeout)
        self._chain_id: int | None = None

    def request(self, method: str, params: list[Any]) -> Any:
        """Send one request; retry transport failures with backoff; raise on RPC errors."""
        try:
            return self._request(method, params)
        except RpcError:
            self._failed(method)
            raise

    def _failed(self, method: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(method)
            except Exception:  # a metrics hook must never break a chain call
                log.exception("rpc on_error hook failed")

    def _request(self, method: str, params: list[Any]) -> Any:
        delay = self.retry.initial_delay
        for attempt in range(1, self.retry.attempts + 1):
            try:
                answer = self._transport.call(method, params)
            except TransportError as exc:
                if attempt < self.retry.attempts:
                    self._failed(method)  # the last attempt is counted by request()
                if attempt == self.retry.attempts:
                    raise RpcUnavailable(f"{method}: {self.url} unreachable: {exc}") from exc
                log.warning("rpc %s failed (%s); retry %d in %.2fs", method, exc, attempt, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.retry.max_delay)
                continue
            except BadAnswer as exc:
                raise RpcError(f"{method}: bad answer from {self.url}: {str(exc)[:300]}") from exc
            return self._result(method, answer)
        raise AssertionError("unreachable")

    def start(self, method: str, params: list[Any]) -> Callable[[], Any]:
        """Send one request now, without retries; the returned function reads and
        checks its answer (once, from this thread). Failures raise as from
        :meth:`request`: :class:`RpcUnavailable` if the request may not have been
        processed, :class:`RpcError` for an error answer."""

        def failed(exc: TransportError | BadAnswer) -> RpcError:
            self._failed(method)
            if isinstance(exc, BadAnswer):
                return RpcError(f"{method}: bad answer from {self.url}: {str(exc)[:300]}")
            return RpcUnavailable(f"{method}: {self.url} unreachable: {exc}")

        try:
            read = self._transport.start(method, params)
        except TransportError as exc:
            raise failed(exc) from exc

        def finish() -> Any:
            try:
                answer = read()
            except (TransportError, BadAnswer) as exc:
                raise failed(exc) from exc
            try:
                return self._result(method, answer)
            except RpcError:
                self._failed(method)
                raise

        return finish

    @staticmethod
    def _result(method: str, answer: Any) -> Any:
        """The ``result`` of a JSON-RPC answer; :class:`RpcError` for an error answer."""
        if not isinstance(answer, dict):
            raise RpcError(f"{method}: answer is not a JSON object")
        error = answer.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise RpcError(f"{method}: malformed error {str(error)[:200]}")
            raise RpcError(
                f"{method}: {str(error.get('message'))[:500]}",
                code=error.get("code") if isinstance(error.get("code"), int) else None,
                data=error.get("data"),
            )
        if "result" not in answer:
            raise RpcError(f"{method}: answer has no result")
        return answer["result"]

    # ------------------------------------------------------------- typed reads
    def chain_id(self) -> int:
        """``eth_chainId`` (cached)."""
        if self._chain_id is None:
            self._chain_id = parse_quantity(self.request("eth_chainId", []), "chainId")
        return self._chain_id

    def block_number(self) -> int:
        """``eth_blockNumber``."""
        return parse_quantity(self.request("eth_blockNumber", []), "blockNumber")

    def block(self, number: int | str = "latest") -> dict[str, Any]:
        """Header fields of a block: number, hash, parentHash, timestamp, baseFeePerGas."""
        tag = hex(number) if isinstance(number, int) else number
        raw = self.request("eth_getBlockByNumber", [tag, False])
        if not isinstance(raw, dict):
            raise RpcError(f"block {number} not found")
        return {
            "number": parse_quantity(raw.get("number"), "block.number"),
            "hash": parse_data(raw.get("hash"), "block.hash", 32),
            "parentHash": parse_data(raw.get("parentHash"), "block.parentHash", 32),
            "timestamp": parse_quantity(raw.get("timestamp"), "block.timestamp"),
            "baseFeePerGas": parse_quantity(raw.get("baseFeePerGas", "0x0"), "block.baseFee"),
        }

    def next_block_time(self) -> int:
        """Earliest timestamp the next block can carry: the later of the latest block's
        time and the wall clock. A chain that mines on demand (anvil) has a latest block
        as old as its last transaction, so deadlines and windows are judged by this."""
        return max(int(self.block("latest")["timestamp"]), int(time.time()))

    def call(self, to: bytes, data: bytes, *, sender: bytes | None = None) -> bytes:
        """``eth_call`` at latest; raises :class:`RpcError` with revert data on revert."""
        tx: dict[str, str] = {"to": "0x" + to.hex(), "data": "0x" + data.hex()}
        if sender is not None:
            tx["from"] = "0x" + sender.hex()
        return parse_data(self.request("eth_call", [tx, "latest"]), "eth_call")

    def get_logs(
        self, address: bytes, from_block: int, to_block: int, topics: list[Any] | None = None
    ) -> list[Log]:
        """``eth_getLogs`` for one contract and an inclusive block range."""
        flt: dict[str, Any] = {
            "address": "0x" + address.hex(),
            "fromBlock": hex(from_block),
            "toBlock": hex(to_block),
        }
        if topics:
            flt["topics"] = topics
        raw = self.request("eth_getLogs", [flt])
        if not isinstance(raw, list):
            raise RpcError("eth_getLogs: expected a list")
        if len(raw) > MAX_LOGS:
            raise RpcError(f"eth_getLogs: {len(raw)} logs exceeds {MAX_LOGS}; use a smaller range")
        return [Log.parse(x) for x in raw]

    def receipt(self, tx_hash: bytes) -> Receipt | None:
        """``eth_getTransactionReceipt`` or None while pending."""
        raw = self.request("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
        return None if raw is None else Receipt.parse(raw)


def revert_data(exc: RpcError) -> bytes | None:
    """Revert data carried by a JSON-RPC error (anvil: ``error.data`` hex), if any."""
    data = exc.data
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return parse_data(data, "revert data")
        except RpcError:
            return None
    return None


class NonceManager:
    """Hands out consecutive nonces for one account so many threads can send at once.

    The next nonce comes from ``eth_getTransactionCount(pending)`` once, then from a
    local counter; :meth:`resync` re-reads it after a send that may not have landed.
    """

    def __init__(self, rpc: Rpc, address: bytes) -> None:
        self._rpc = rpc
        self._address = address
        self._next: int | None = None
        self.lock = threading.Lock()

    def _fetch(self) -> int:
        raw = self._rpc.request("eth_getTransactionCount", ["0x" + self._address.hex(), "pending"])
        return parse_quantity(raw, "transactionCount")

    def take(self) -> int:
        """Next nonce (call with :attr:`lock` held so nonce order equals send order)."""
        if self._next is None:
            self._next = self._fetch()
        nonce = self._next
        self._next += 1
        return nonce

    def resync(self) -> None:
        """Forget the local counter; the next :meth:`take` re-reads the chain."""
        self._next = None


@dataclasses.dataclass
class FeePolicy:
    """EIP-1559 fees: ``maxFee = base_multiplier * baseFee + tip``, cached for ``ttl``."""

    tip: int = 1_000_000_000
    base_multiplier: int = 2
    ttl: float = 2.0


class Signer:
    """One local account: signs and sends transactions, waits for receipts."""

    def __init__(
        self,
        rpc: Rpc,
        private_key: bytes,
        *,
        fees: FeePolicy | None = None,
        receipt_timeout: float = 60.0,
        sync_send: bool | None = None,
    ) -> None:
        self.rpc = rpc
        self.account: LocalAccount = Account.from_key(private_key)
        self._signer = TxSigner(private_key)
        self.address = bytes.fromhex(self.account.address[2:])
        self.nonces = NonceManager(rpc, self.address)
        self.fees = fees or FeePolicy()
        self.receipt_timeout = receipt_timeout
        self._fee_cache: tuple[float, int] | None = None
        #: whether the node has ``eth_sendRawTransactionSync``; None until the first try
        self.sync_send: bool | None = sync_send

    def _max_fee(self) -> int:
        now = time.monotonic()
        if self._fee_cache is None or now - self._fee_cache[0] > self.fees.ttl:
            base = self.rpc.block("latest")["baseFeePerGas"]
            self._fee_cache = (now, base * self.fees.base_multiplier + self.fees.tip)
        return self._fee_cache[1]

    def estimate_gas(self, to: bytes | None, data: bytes, value: int = 0) -> int:
        """``eth_estimateGas`` from this account (raises RpcError with revert data)."""
        tx: dict[str, str] = {"from": self.account.address, "data": "0x" + data.hex()}
        if to is not None:
            tx["to"] = "0x" + to.hex()
        if value:
            tx["value"] = hex(value)
        return parse_quantity(self.rpc.request("eth_estimateGas", [tx]), "estimateGas")

    def _sign(self, to: bytes | None, data: bytes, gas: int, value: int, max_fee: int) -> SignedTx:
        """Sign with the next nonce (hold :attr:`NonceManager.lock`)."""
        return self._signer.sign(
            chain_id=self.rpc.chain_id(),
            nonce=self.nonces.take(),
            max_priority_fee=min(self.fees.tip, max_fee),
            max_fee=max_fee,
            gas=gas,
            to=to,
            value=value,
            data=data,
        )

    def send(
        self,
        to: bytes | None,
        data: bytes,
        *,
        gas: int,
        value: int = 0,
        on_signed: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Sign and send; returns the transaction hash. Thread-safe. ``on_signed``
        gets the hash just before the transaction is sent."""
        max_fee = self._max_fee()
        with self.nonces.lock:
            signed = self._sign(to, data, gas, value, max_fee)
            _tell(on_signed, signed.hash)
            raw = "0x" + signed.raw.hex()
            try:
                answer = self.rpc.request("eth_sendRawTransaction", [raw])
            except RpcError as exc:
                if "already known" in str(exc).lower():
                    return signed.hash
                self.nonces.resync()
                raise
        tx_hash = parse_data(answer, "transaction hash", 32)
        if tx_hash != signed.hash:
            raise RpcError("node returned a different transaction hash")
        return tx_hash

    def transact(
        self,
        to: bytes | None,
        data: bytes,
        *,
        gas: int,
        value: int = 0,
        on_signed: Callable[[bytes], None] | None = None,
    ) -> Receipt:
        """Sign, send and wait for the receipt (of a success or a revert). Thread-safe.

        Where the node has ``eth_sendRawTransactionSync`` (EIP-7966; anvil does) the
        receipt comes back with the send, in one round trip: no receipt polling, no
        sleep between polls (0.5 ms less a transaction on anvil, docs/benchmarks.md).
        Only the sending holds the nonce lock, so concurrent transactions of this
        account still go out together. A node without the method is remembered and
        the transaction is sent again the plain way; a timeout at the node, or an
        answer lost on the way back, falls back to polling for the receipt.
        """
        if self.sync_send is False:
            return self.wait(self.send(to, data, gas=gas, value=value, on_signed=on_signed))
        max_fee = self._max_fee()
        with self.nonces.lock:
            signed = self._sign(to, data, gas, value, max_fee)
            tx_hash, raw = signed.hash, "0x" + signed.raw.hex()
            _tell(on_signed, tx_hash)
            try:  # the node's own wait applies (anvil 1.7 refuses a timeout argument)
                finish = self.rpc.start("eth_sendRawTransactionSync", [raw])
            except RpcError:  # not sent: the nonce is unused
                self.nonces.resync()
                raise
        try:
            receipt = Receipt.parse(finish())
        except RpcUnavailable:  # sent, but the answer was lost: send again, then poll
            self._resend(raw, tx_hash)
            return self.wait(tx_hash)
        except RpcError as exc:
            if _unsupported(exc):
                self.sync_send = False
                log.info("the node lacks eth_sendRawTransactionSync: polling for receipts")
                self._resend(raw, tx_hash)
                return self.wait(tx_hash)
            if exc.code == SYNC_SEND_TIMEOUT or "already known" in str(exc).lower():
                return self.wait(tx_hash)  # in the pool, not mined within the wait
            self.nonces.resync()
            raise
        if receipt.tx_hash != tx_hash:
            raise RpcError("node returned the receipt of a different transaction")
        self.sync_send = True
        return receipt

    def _resend(self, raw: str, tx_hash: bytes) -> None:
        """Send a signed transaction again (the same bytes: at most one of them lands)."""
        try:
            answer = self.rpc.request("eth_sendRawTransaction", [raw])
        except RpcError as exc:
            text = str(exc).lower()
            if "already known" in text or "nonce too low" in text:
                return  # the first one arrived (``wait`` finds it, or times out)
            self.nonces.resync()
            raise
        if parse_data(answer, "transaction hash", 32) != tx_hash:
            raise RpcError("node returned a different transaction hash")

    def wait(self, tx_hash: bytes, timeout: float | None = None) -> Receipt:
        """Poll for the receipt: 0.5 ms at first, backing off to 50 ms."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.receipt_timeout)
        delay = 0.0005
        while True:
            receipt = self.rpc.receipt(tx_hash)
            if receipt is not None:
                return receipt
            if time.monotonic() > deadline:
                raise TransactionTimeout(f"no receipt for 0x{tx_hash.hex()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


#: EIP-7966's error code: the transaction is in the pool but was not mined in the wait.
SYNC_SEND_TIMEOUT = 4
#: method not found; invalid params (a node whose method differs); method not supported
_UNSUPPORTED_CODES = (-32601, -32602, -32004)


def _tell(on_signed: Callable[[bytes], None] | None, tx_hash: bytes) -> None:
    """Call an ``on_signed`` hook; its failure must not stop a transaction whose nonce
    is taken (a gap would hold back every later one)."""
    if on_signed is None:
        return
    try:
        on_signed(tx_hash)
    except Exception:
        log.exception("on_signed hook failed for 0x%s", tx_hash.hex())


def _unsupported(exc: RpcError) -> bool:
    """Whether an error answer says the node lacks the method (codes vary by node)."""
    text = str(exc).lower()
    return exc.code in _UNSUPPORTED_CODES or any(
        phrase in text
        for phrase in ("method not found", "not supported", "does not exist", "unknown method")
    )


def with_retries(fn: Callable[[], _T], policy: RetryPolicy) -> _T:
    """Run ``fn``, retrying :class:`RpcUnavailable` with backoff (for whole operations)."""
    delay = policy.initial_delay
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except RpcUnavailable:
            if attempt == policy.attempts:
                raise
            time.sleep(delay)
            delay = min(delay * 2, policy.max_delay)
    raise ChainError("unreachable")
