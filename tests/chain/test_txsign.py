"""The hand-built type-2 transaction signer against eth-account's, byte for byte."""

from __future__ import annotations

import random

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address

from node.chain.txsign import TxSigner


def _eth_account(key: bytes, tx: dict[str, object]) -> tuple[bytes, bytes]:
    signed = Account.from_key(key).sign_transaction(tx)
    return bytes(signed.raw_transaction), bytes(signed.hash)


@pytest.mark.parametrize("seed", range(40))
def test_same_bytes_as_eth_account(seed: int) -> None:
    rng = random.Random(seed)
    key = rng.randbytes(31) + b"\x01"
    to = None if seed % 10 == 0 else rng.randbytes(20)
    fields = {
        "chain_id": rng.choice([1, 31337, 2**40 + 7]),
        "nonce": rng.choice([0, 1, rng.randrange(2**64)]),
        "max_priority_fee": rng.choice([0, 1, 10**9]),
        "max_fee": rng.choice([10**9, 2 * 10**9 + 17, rng.randrange(2**128)]),
        "gas": rng.choice([21_000, 300_000, 30_000_000]),
        "value": rng.choice([0, 1, rng.randrange(2**200)]),
        "data": rng.randbytes(rng.choice([0, 1, 4, 68, 1500])),
    }
    tx: dict[str, object] = {
        "chainId": fields["chain_id"],
        "nonce": fields["nonce"],
        "maxPriorityFeePerGas": fields["max_priority_fee"],
        "maxFeePerGas": fields["max_fee"],
        "gas": fields["gas"],
        "value": fields["value"],
        "data": fields["data"],
        "type": 2,
    }
    if to is not None:
        tx["to"] = to_checksum_address(to)
    ours = TxSigner(key).sign(to=to, **fields)  # type: ignore[arg-type]
    raw, tx_hash = _eth_account(key, tx)
    assert ours.raw == raw
    assert ours.hash == tx_hash
    # and it recovers to the key's address
    assert Account.recover_transaction(ours.raw) == Account.from_key(key).address


@pytest.mark.parametrize(
    ("field", "value"), [("nonce", -1), ("gas", 2**256), ("value", -5), ("chain_id", 2**256)]
)
def test_out_of_range_fields_are_refused(field: str, value: int) -> None:
    fields = dict(chain_id=1, nonce=0, max_priority_fee=1, max_fee=1, gas=21000, value=0)
    fields[field] = value
    with pytest.raises(ValueError, match=field):
        TxSigner(b"\x01" * 32).sign(to=b"\x02" * 20, data=b"", **fields)


def test_to_must_be_an_address() -> None:
    with pytest.raises(ValueError, match="20 bytes"):
        TxSigner(b"\x01" * 32).sign(
            chain_id=1,
            nonce=0,
            max_priority_fee=1,
            max_fee=1,
            gas=1,
            to=b"\x02" * 19,
            value=0,
            data=b"",
        )
