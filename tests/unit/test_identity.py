"""One key -> address and peer id; keystores; address parsing."""

from __future__ import annotations

import base58
import coincurve
import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import IdentityError
from protocol.identity import (
    Identity,
    address_from_peer_id,
    checksum_address,
    decrypt_keystore,
    encrypt_keystore,
    parse_address,
    peer_id_from_public_key,
    public_key_from_peer_id,
)

private_keys = st.integers(1, 2**256 - 2**129).map(lambda k: k.to_bytes(32, "big"))


@settings(max_examples=100, deadline=None)
@given(private_keys)
def test_address_matches_eth_account(key: bytes) -> None:
    identity = Identity.from_private_key(key)
    assert identity.checksum_address == Account.from_key(key).address


@settings(max_examples=100, deadline=None)
@given(private_keys)
def test_peer_id_round_trips_to_address(key: bytes) -> None:
    identity = Identity.from_private_key(key)
    assert identity.peer_id.startswith("16Uiu2HA")
    assert address_from_peer_id(identity.peer_id) == identity.address
    assert public_key_from_peer_id(identity.peer_id) == identity.public_key
    # the uncompressed key gives the same peer id (libp2p always uses the compressed form)
    uncompressed = coincurve.PublicKey(identity.public_key).format(compressed=False)
    assert peer_id_from_public_key(uncompressed) == identity.peer_id


def test_peer_id_known_vector() -> None:
    # Layout from the libp2p peer-id spec: identity multihash of the protobuf key.
    identity = Identity.from_private_key(b"\x01" * 32)
    raw = base58.b58decode(identity.peer_id)
    assert raw[:6] == bytes([0x00, 0x25, 0x08, 0x02, 0x12, 0x21])
    assert raw[6:] == identity.public_key
    assert len(raw) == 39


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-base58-0OIl",
        "12D3KooWGzh7sRdx9QRcHqpgTfkbkZ3j1UfRsy8iKTHTCeuyyxj1",  # an Ed25519 peer id
        "16Uiu2HAm" + "1" * 300,
        base58.b58encode(bytes([0x00, 0x25, 0x08, 0x02, 0x12, 0x21]) + b"\x05" * 33).decode(),
    ],
)
def test_bad_peer_ids_are_rejected(bad: str) -> None:
    with pytest.raises(IdentityError):
        address_from_peer_id(bad)


def test_invalid_private_keys_are_rejected() -> None:
    for bad in (b"", b"\x00" * 32, b"\xff" * 32, b"\x01" * 31):
        with pytest.raises(IdentityError):
            Identity.from_private_key(bad)


def test_repr_never_shows_the_private_key() -> None:
    identity = Identity.from_private_key(b"\x42" * 32)
    assert (b"\x42" * 32).hex() not in repr(identity)
    assert identity.checksum_address in repr(identity)


def test_keystore_round_trip_and_wrong_password() -> None:
    identity = Identity.generate()
    document = encrypt_keystore(identity, "correct horse", scrypt_n=2**10)
    assert document["version"] == 3
    assert document["crypto"]["kdf"] == "scrypt"
    assert decrypt_keystore(document, "correct horse") == identity
    # eth-account reads our keystore: it is the standard format
    assert Account.decrypt(document, "correct horse") == identity.private_key
    with pytest.raises(IdentityError):
        decrypt_keystore(document, "wrong")
    with pytest.raises(IdentityError):
        encrypt_keystore(identity, "")


def test_keystore_from_eth_account_loads() -> None:
    account = Account.create()
    document = Account.encrypt(account.key, "pw", kdf="scrypt", iterations=2**10)
    assert decrypt_keystore(document, "pw").checksum_address == account.address


def test_malformed_keystores_are_rejected() -> None:
    identity = Identity.generate()
    good = encrypt_keystore(identity, "pw", scrypt_n=2**10)
    mismatched = {**good, "address": "00" * 20}
    for bad in ({}, {"crypto": {}}, {"version": 3, "crypto": "x"}, mismatched, []):
        with pytest.raises(IdentityError):
            decrypt_keystore(bad, "pw")  # type: ignore[arg-type]


def test_address_parsing() -> None:
    identity = Identity.from_private_key(b"\x07" * 32)
    text = identity.checksum_address
    assert parse_address(text) == identity.address
    assert parse_address(text.lower()) == identity.address
    assert checksum_address(parse_address(text.lower())) == text
    broken = text[:-1] + (text[-1].swapcase() if text[-1].isalpha() else "0")
    if broken != text and broken.lower() == text.lower():
        with pytest.raises(IdentityError, match="checksum"):
            parse_address(broken)
    for bad in ("", "0x", "0x123", text[2:], "0x" + "zz" * 20, 5):
        with pytest.raises(IdentityError):
            parse_address(bad)  # type: ignore[arg-type]
