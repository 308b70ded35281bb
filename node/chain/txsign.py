"""EIP-1559 (type 2) transaction signing: RLP encoding plus one libsecp256k1 call.

Every transaction a node sends is signed here (``Signer``). eth-account produces
the same bytes (tests/chain/test_txsign.py checks them against it), but builds
them through several layers of dict validation and formatters: ~0.41 ms of CPU a
transaction on the benchmark VM against ~0.08 ms here (docs/benchmarks.md, "Chain
client"), and a sequential marketplace job signs three transactions on its
critical path. The signature is libsecp256k1's deterministic (RFC 6979), low-s
ECDSA, through coincurve, as eth-account's own backend does.
"""

from __future__ import annotations

import dataclasses

import coincurve
import rlp
from eth_hash.auto import keccak

_MAX_UINT256 = 2**256 - 1


@dataclasses.dataclass(frozen=True)
class SignedTx:
    """A signed transaction: the bytes ``eth_sendRawTransaction`` takes, and its hash."""

    raw: bytes
    hash: bytes


class TxSigner:
    """Signs type-2 transactions with one private key."""

    def __init__(self, private_key: bytes) -> None:
        self._key = coincurve.PrivateKey(private_key)

    def sign(
        self,
        *,
        chain_id: int,
        nonce: int,
        max_priority_fee: int,
        max_fee: int,
        gas: int,
        to: bytes | None,
        value: int,
        data: bytes,
    ) -> SignedTx:
        """Sign one transaction with an empty access list (``to=None``: a deployment)."""
        for name, n in (
            ("chain_id", chain_id),
            ("nonce", nonce),
            ("max_priority_fee", max_priority_fee),
            ("max_fee", max_fee),
            ("gas", gas),
            ("value", value),
        ):
            if not 0 <= n <= _MAX_UINT256:
                raise ValueError(f"{name} out of range: {n}")
        if to is not None and len(to) != 20:
            raise ValueError(f"to must be 20 bytes, got {len(to)}")
        fields: list[object] = [
            chain_id,
            nonce,
            max_priority_fee,
            max_fee,
            gas,
            b"" if to is None else bytes(to),
            value,
            bytes(data),
            [],
        ]
        sig = self._key.sign_recoverable(keccak(b"\x02" + rlp.encode(fields)), hasher=None)
        r, s, y_parity = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
        raw = b"\x02" + rlp.encode([*fields, y_parity, r, s])
        return SignedTx(raw=raw, hash=keccak(raw))
