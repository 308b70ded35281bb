"""One secp256k1 key: Ethereum address, libp2p peer id and keystore JSON.

A node has exactly one private key. From it come the Ethereum address (pays,
stakes, signs EIP-712) and the libp2p peer id, so a peer id proves which
onchain account stands behind a peer with no registry lookup.

Peer ids follow the libp2p peer-id spec: the public key is wrapped in the
``PublicKey`` protobuf (``KeyType = Secp256k1 (2)``, ``Data`` = the 33-byte
compressed point); because that encoding is 37 bytes (<= 42), the peer id is the
*identity* multihash of it (``0x00 0x25 || protobuf``), shown in base58btc
(``16Uiu2HA…``). :func:`address_from_peer_id` reverses it.

Keystores are the standard Ethereum JSON keystore (v3, scrypt), encrypted and
decrypted here as pure data; reading and writing the file (mode 0600) and
asking for the password are the node's job (``node/keys.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
from typing import Any, Final

import base58
import coincurve
from eth_hash.auto import keccak
from eth_keyfile.keyfile import create_keyfile_json, decode_keyfile_json

from protocol.errors import IdentityError

__all__ = [
    "Identity",
    "address_from_peer_id",
    "address_from_public_key",
    "checksum_address",
    "decrypt_keystore",
    "encrypt_keystore",
    "parse_address",
    "peer_id_bytes_from_public_key",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
]

# protobuf: field 1 (Type, varint) = 2 (Secp256k1); field 2 (Data, bytes) of length 33
_PB_SECP256K1_PREFIX: Final = bytes([0x08, 0x02, 0x12, 0x21])
# multihash: code 0x00 (identity), length 37
_MH_IDENTITY_PREFIX: Final = bytes([0x00, 0x25])
_PEER_ID_PREFIX: Final = _MH_IDENTITY_PREFIX + _PB_SECP256K1_PREFIX
_PEER_ID_LEN: Final = len(_PEER_ID_PREFIX) + 33
_MAX_PEER_ID_TEXT: Final = 128
_KEYSTORE_MAX_BYTES: Final = 16 * 1024


def _compressed(public_key: bytes) -> bytes:
    try:
        return coincurve.PublicKey(public_key).format(compressed=True)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"not a secp256k1 public key: {exc}") from None


def address_from_public_key(public_key: bytes) -> bytes:
    """20-byte Ethereum address of a (compressed or uncompressed) public key."""
    try:
        point = coincurve.PublicKey(public_key).format(compressed=False)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"not a secp256k1 public key: {exc}") from None
    return keccak(point[1:])[12:]


def peer_id_bytes_from_public_key(public_key: bytes) -> bytes:
    """Binary libp2p peer id (identity multihash of the protobuf public key)."""
    return _PEER_ID_PREFIX + _compressed(public_key)


def peer_id_from_public_key(public_key: bytes) -> str:
    """Textual libp2p peer id (base58btc), e.g. ``16Uiu2HAm…``."""
    return base58.b58encode(peer_id_bytes_from_public_key(public_key)).decode("ascii")


def public_key_from_peer_id(peer_id: str | bytes) -> bytes:
    """The compressed secp256k1 public key inside a peer id; raise :class:`IdentityError`."""
    if isinstance(peer_id, str):
        if len(peer_id) > _MAX_PEER_ID_TEXT:
            raise IdentityError("peer id text is too long")
        try:
            raw = base58.b58decode(peer_id)
        except ValueError as exc:
            raise IdentityError(f"peer id is not base58: {exc}") from None
    else:
        raw = bytes(peer_id)
    if len(raw) != _PEER_ID_LEN or not raw.startswith(_PEER_ID_PREFIX):
        raise IdentityError("peer id is not an identity-multihashed secp256k1 key")
    key = raw[len(_PEER_ID_PREFIX) :]
    _compressed(key)  # validates the point
    return key


@functools.lru_cache(maxsize=4096)
def address_from_peer_id(peer_id: str | bytes) -> bytes:
    """The Ethereum address that stands behind a secp256k1 peer id (memoised: every
    message from a peer asks again; a bad id raises and is not remembered)."""
    return address_from_public_key(public_key_from_peer_id(peer_id))


def checksum_address(address: bytes) -> str:
    """EIP-55 mixed-case hex form of a 20-byte address."""
    if len(address) != 20:
        raise IdentityError(f"an address is 20 bytes, got {len(address)}")
    lower = address.hex()
    digest = keccak(lower.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(lower))


def parse_address(text: str) -> bytes:
    """Parse ``0x``-prefixed hex; a mixed-case address must carry a valid EIP-55 checksum."""
    if not isinstance(text, str) or len(text) != 42 or not text.startswith(("0x", "0X")):
        raise IdentityError(f"not a 0x-prefixed 20-byte address: {text!r:.60}")
    body = text[2:]
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise IdentityError(f"address is not hex: {text!r}") from None
    if body != body.lower() and body != body.upper() and checksum_address(raw) != text:
        raise IdentityError(f"address checksum does not match: {text}")
    return raw


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Identity:
    """A node's secp256k1 key with everything derived from it.

    ``repr`` never shows the private key.
    """

    private_key: bytes
    public_key: bytes  # 33-byte compressed
    address: bytes  # 20 bytes
    peer_id: str

    @classmethod
    def from_private_key(cls, private_key: bytes) -> Identity:
        """Derive address and peer id from a 32-byte private key."""
        if len(private_key) != 32:
            raise IdentityError("a secp256k1 private key is 32 bytes")
        try:
            key = coincurve.PrivateKey(private_key)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"invalid private key: {exc}") from None
        public = key.public_key.format(compressed=True)
        return cls(
            private_key=bytes(private_key),
            public_key=public,
            address=address_from_public_key(public),
            peer_id=peer_id_from_public_key(public),
        )

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity (OS CSPRNG)."""
        while True:
            candidate = secrets.token_bytes(32)
            if 0 < int.from_bytes(candidate, "big") < 2**256 - 2**128:
                try:
                    return cls.from_private_key(candidate)
                except IdentityError:
                    continue

    @property
    def checksum_address(self) -> str:
        """EIP-55 form of :attr:`address`."""
        return checksum_address(self.address)

    def __repr__(self) -> str:
        return f"Identity(address={self.checksum_address}, peer_id={self.peer_id})"


def encrypt_keystore(
    identity: Identity, password: str, *, scrypt_n: int = 262144
) -> dict[str, Any]:
    """Standard Ethereum v3 keystore JSON (scrypt) for ``identity``."""
    if not password:
        raise IdentityError("refusing to encrypt a keystore with an empty password")
    result: dict[str, Any] = create_keyfile_json(
        identity.private_key, password.encode(), kdf="scrypt", iterations=scrypt_n
    )
    return result


def decrypt_keystore(keystore: dict[str, Any], password: str) -> Identity:
    """Decrypt a v3 keystore; raise :class:`IdentityError` on a wrong password or bad file."""
    if not isinstance(keystore, dict):
        raise IdentityError("keystore must be a JSON object")
    if len(repr(keystore)) > _KEYSTORE_MAX_BYTES:
        raise IdentityError("keystore is too large")
    try:
        private_key = decode_keyfile_json(keystore, password.encode())
    except ValueError as exc:
        raise IdentityError(f"cannot decrypt keystore: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise IdentityError(f"malformed keystore: {exc!r}") from None
    identity = Identity.from_private_key(bytes(private_key))
    declared = keystore.get("address")
    if isinstance(declared, str) and declared.lower().removeprefix("0x") != identity.address.hex():
        raise IdentityError("keystore address does not match its key")
    return identity
