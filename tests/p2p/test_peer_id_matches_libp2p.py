"""protocol.identity's peer-id derivation agrees with py-libp2p's for random keys."""

from __future__ import annotations

import secrets

from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.peer.id import ID

from node.p2p.host import key_pair_from_identity
from protocol.identity import (
    Identity,
    address_from_peer_id,
    peer_id_from_public_key,
    public_key_from_peer_id,
)


def test_random_keys_derive_the_same_peer_id() -> None:
    for _ in range(200):
        secret = secrets.token_bytes(32)
        identity = Identity.from_private_key(secret)
        libp2p_pair = create_new_key_pair(secret)
        libp2p_id = ID.from_pubkey(libp2p_pair.public_key)
        assert libp2p_id.to_base58() == identity.peer_id
        assert libp2p_id.to_bytes() == ID.from_base58(identity.peer_id).to_bytes()
        assert peer_id_from_public_key(libp2p_pair.public_key.to_bytes()) == identity.peer_id
        assert public_key_from_peer_id(libp2p_id.to_bytes()) == identity.public_key
        assert address_from_peer_id(libp2p_id.to_base58()) == identity.address


def test_host_key_pair_is_the_node_key() -> None:
    identity = Identity.generate()
    pair = key_pair_from_identity(identity)
    assert pair.private_key.to_bytes() == identity.private_key
    assert pair.public_key.to_bytes() == identity.public_key
    assert ID.from_pubkey(pair.public_key).to_base58().startswith("16Uiu2HA")
