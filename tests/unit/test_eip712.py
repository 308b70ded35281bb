"""The hand-built EIP-712 digests equal eth-account's, and signatures recover correctly."""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import eip712
from protocol.errors import BadSignature, InvalidField
from protocol.identity import Identity
from tests import strategies as S

U256 = st.integers(min_value=0, max_value=2**256 - 1)

domains = st.builds(eip712.Domain, chain_id=U256, verifying_contract=S.ADDRESS)
offer_data = st.builds(
    eip712.OfferData,
    provider=S.ADDRESS,
    client=S.ADDRESS,
    capabilities_hash=S.HASH,
    price_per_gpu_second=U256,
    nonce=S.U64,
    expiry=S.U64,
)
attestation_data = st.builds(
    eip712.AttestationData,
    job_id=S.U64,
    provider=S.ADDRESS,
    spec_hash=S.HASH,
    output_hash=S.HASH,
    runtime_id=S.HASH,
    determinism=st.integers(0, 255),
    metered_millis=S.U64,
)


def _reference_digest(
    domain: eip712.Domain, value: eip712.OfferData | eip712.AttestationData
) -> bytes:
    signable = encode_typed_data(full_message=eip712.typed_data(domain, value))
    return bytes(b"\x19" + signable.version + signable.header + signable.body)


def _keccak(data: bytes) -> bytes:
    from eth_hash.auto import keccak

    return bytes(keccak(data))


@settings(max_examples=150, deadline=None)
@given(domains, offer_data)
def test_offer_digest_equals_eth_account(domain: eip712.Domain, offer: eip712.OfferData) -> None:
    assert eip712.offer_digest(domain, offer) == _keccak(_reference_digest(domain, offer))


@settings(max_examples=150, deadline=None)
@given(domains, attestation_data)
def test_attestation_digest_equals_eth_account(
    domain: eip712.Domain, att: eip712.AttestationData
) -> None:
    assert eip712.attestation_digest(domain, att) == _keccak(_reference_digest(domain, att))


@settings(max_examples=40, deadline=None)
@given(S.identities, domains, attestation_data)
def test_signature_matches_eth_account_and_recovers(
    identity: Identity, domain: eip712.Domain, att: eip712.AttestationData
) -> None:
    digest = eip712.attestation_digest(domain, att)
    ours = eip712.sign_digest(identity.private_key, digest)
    theirs = Account.sign_typed_data(
        identity.private_key, full_message=eip712.typed_data(domain, att)
    )
    assert ours == bytes(theirs.signature)  # RFC 6979: deterministic, identical bytes
    assert eip712.recover_signer(digest, ours) == identity.address
    eip712.verify_signer(digest, ours, identity.address)
    other = S.IDENTITIES[(S.IDENTITIES.index(identity) + 1) % len(S.IDENTITIES)]
    with pytest.raises(BadSignature):
        eip712.verify_signer(digest, ours, other.address)
    tampered = bytes([digest[0] ^ 1]) + digest[1:]
    assert eip712.recover_signer(tampered, ours) != identity.address


def test_malformed_signatures_are_rejected() -> None:
    identity = S.IDENTITIES[0]
    digest = b"\x07" * 32
    good = eip712.sign_digest(identity.private_key, digest)
    high_s = eip712.SECP256K1_N - int.from_bytes(good[32:64], "big")
    flipped_v = 55 - good[64]
    malleable = good[:32] + high_s.to_bytes(32, "big") + bytes([flipped_v])
    cases = {
        "short": good[:64],
        "long": good + b"\x00",
        "v=0": good[:64] + b"\x00",
        "v=29": good[:64] + b"\x1d",
        "s=0": good[:32] + bytes(32) + good[64:],
        "r=0": bytes(32) + good[32:],
        "r=n": eip712.SECP256K1_N.to_bytes(32, "big") + good[32:],
        "high s (malleable twin)": malleable,
    }
    for name, sig in cases.items():
        with pytest.raises(BadSignature):
            eip712.recover_signer(digest, sig)
        assert name


def test_out_of_range_fields_are_rejected() -> None:
    base = eip712.AttestationData(1, b"\x01" * 20, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, 0, 5)
    domain = eip712.Domain(1, b"\x05" * 20)
    for bad in [
        {"job_id": 2**64},
        {"job_id": -1},
        {"determinism": 256},
        {"provider": b"\x01" * 19},
        {"spec_hash": b"\x02" * 31},
    ]:
        value = dataclasses.replace(base, **bad)
        with pytest.raises(InvalidField):
            eip712.attestation_digest(domain, value)
    with pytest.raises(InvalidField):
        eip712.Domain(1, b"\x05" * 21).separator  # noqa: B018


def test_type_strings_match_the_solidity_declarations() -> None:
    # These exact strings are what the contract hashes; a change here breaks every signature.
    assert eip712.OFFER_TYPE == (
        "Offer(address provider,address client,bytes32 capabilitiesHash,"
        "uint256 pricePerGpuSecond,uint64 nonce,uint64 expiry)"
    )
    assert eip712.ATTESTATION_TYPE == (
        "Attestation(uint64 jobId,address provider,bytes32 specHash,bytes32 outputHash,"
        "bytes32 runtimeId,uint8 determinism,uint64 meteredMillis)"
    )
