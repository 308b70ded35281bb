"""EIP-712 domain and the two structs the escrow contract checks: Offer and Attestation.

The digests are built by hand (fixed-width ABI words, keccak256) and signatures
are recovered with coincurve: this is the hot path of every node and verifier.
Tests check the digests equal eth-account's ``encode_typed_data`` for random
inputs, so the two can never drift apart.

Solidity type strings (also in SPEC.md and in the contract):

    EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
    Offer(address provider,address client,bytes32 capabilitiesHash,
          uint256 pricePerGpuSecond,uint64 nonce,uint64 expiry)
    Attestation(uint64 jobId,address provider,bytes32 specHash,bytes32 outputHash,
                bytes32 runtimeId,uint8 determinism,uint64 meteredMillis)

Signatures are 65 bytes ``r || s || v`` with ``v`` in {27, 28} and ``s`` in the
lower half of the curve order (as OpenZeppelin's ``ECDSA.recover`` requires).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import coincurve
from eth_hash.auto import keccak

from protocol.errors import BadSignature, InvalidField

__all__ = [
    "ATTESTATION_TYPE",
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "OFFER_TYPE",
    "SECP256K1_N",
    "AttestationData",
    "Domain",
    "OfferData",
    "attestation_digest",
    "offer_digest",
    "recover_signer",
    "sign_digest",
    "typed_data",
    "verify_signer",
]

DOMAIN_NAME: Final = "gpunet"
DOMAIN_VERSION: Final = "1"

DOMAIN_TYPE: Final = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
OFFER_TYPE: Final = (
    "Offer(address provider,address client,bytes32 capabilitiesHash,"
    "uint256 pricePerGpuSecond,uint64 nonce,uint64 expiry)"
)
ATTESTATION_TYPE: Final = (
    "Attestation(uint64 jobId,address provider,bytes32 specHash,bytes32 outputHash,"
    "bytes32 runtimeId,uint8 determinism,uint64 meteredMillis)"
)

_DOMAIN_TYPEHASH: Final = keccak(DOMAIN_TYPE.encode())
_OFFER_TYPEHASH: Final = keccak(OFFER_TYPE.encode())
_ATTESTATION_TYPEHASH: Final = keccak(ATTESTATION_TYPE.encode())

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N: Final = SECP256K1_N // 2
_U64: Final = 2**64
_U256: Final = 2**256
_ZERO12: Final = bytes(12)


def _address_word(value: bytes, name: str) -> bytes:
    if len(value) != 20:
        raise InvalidField(f"{name}: an address is 20 bytes, got {len(value)}")
    return _ZERO12 + value


def _bytes32_word(value: bytes, name: str) -> bytes:
    if len(value) != 32:
        raise InvalidField(f"{name}: bytes32 is 32 bytes, got {len(value)}")
    return value


def _uint_word(value: int, bound: int, name: str) -> bytes:
    if not 0 <= value < bound:
        raise InvalidField(f"{name}: {value} is out of range [0, {bound})")
    return value.to_bytes(32, "big")


@dataclasses.dataclass(frozen=True, slots=True)
class Domain:
    """The EIP-712 domain: binds a signature to one chain and one escrow contract."""

    chain_id: int
    verifying_contract: bytes
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION

    @property
    def separator(self) -> bytes:
        """``keccak256(abi.encode(typehash, name, version, chainId, contract))`` (cached)."""
        cached: bytes | None = _SEPARATORS.get(self)
        if cached is None:
            cached = keccak(
                _DOMAIN_TYPEHASH
                + keccak(self.name.encode())
                + keccak(self.version.encode())
                + _uint_word(self.chain_id, _U256, "chainId")
                + _address_word(self.verifying_contract, "verifyingContract")
            )
            if len(_SEPARATORS) > 64:
                _SEPARATORS.clear()
            _SEPARATORS[self] = cached
        return cached

    def as_eip712(self) -> dict[str, Any]:
        """The domain as eth-account's ``domain_data`` dict."""
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": "0x" + self.verifying_contract.hex(),
        }


_SEPARATORS: dict[Domain, bytes] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class OfferData:
    """The signed part of an offer, exactly as the contract sees it."""

    provider: bytes
    client: bytes
    capabilities_hash: bytes
    price_per_gpu_second: int
    nonce: int
    expiry: int

    def struct_hash(self) -> bytes:
        """``hashStruct(Offer)``."""
        return keccak(
            _OFFER_TYPEHASH
            + _address_word(self.provider, "provider")
            + _address_word(self.client, "client")
            + _bytes32_word(self.capabilities_hash, "capabilitiesHash")
            + _uint_word(self.price_per_gpu_second, _U256, "pricePerGpuSecond")
            + _uint_word(self.nonce, _U64, "nonce")
            + _uint_word(self.expiry, _U64, "expiry")
        )

    def as_eip712(self) -> dict[str, Any]:
        """The message dict for eth-account."""
        return {
            "provider": "0x" + self.provider.hex(),
            "client": "0x" + self.client.hex(),
            "capabilitiesHash": self.capabilities_hash,
            "pricePerGpuSecond": self.price_per_gpu_second,
            "nonce": self.nonce,
            "expiry": self.expiry,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class AttestationData:
    """The signed part of an attestation, exactly as the contract sees it."""

    job_id: int
    provider: bytes
    spec_hash: bytes
    output_hash: bytes
    runtime_id: bytes
    determinism: int
    metered_millis: int

    def struct_hash(self) -> bytes:
        """``hashStruct(Attestation)``."""
        return keccak(
            _ATTESTATION_TYPEHASH
            + _uint_word(self.job_id, _U64, "jobId")
            + _address_word(self.provider, "provider")
            + _bytes32_word(self.spec_hash, "specHash")
            + _bytes32_word(self.output_hash, "outputHash")
            + _bytes32_word(self.runtime_id, "runtimeId")
            + _uint_word(self.determinism, 256, "determinism")
            + _uint_word(self.metered_millis, _U64, "meteredMillis")
        )

    def as_eip712(self) -> dict[str, Any]:
        """The message dict for eth-account."""
        return {
            "jobId": self.job_id,
            "provider": "0x" + self.provider.hex(),
            "specHash": self.spec_hash,
            "outputHash": self.output_hash,
            "runtimeId": self.runtime_id,
            "determinism": self.determinism,
            "meteredMillis": self.metered_millis,
        }


def _digest(domain: Domain, struct_hash: bytes) -> bytes:
    return keccak(b"\x19\x01" + domain.separator + struct_hash)


def offer_digest(domain: Domain, offer: OfferData) -> bytes:
    """The 32-byte EIP-712 digest a provider signs for an offer."""
    return _digest(domain, offer.struct_hash())


def attestation_digest(domain: Domain, attestation: AttestationData) -> bytes:
    """The 32-byte EIP-712 digest a provider signs for an attestation."""
    return _digest(domain, attestation.struct_hash())


_TYPE_FIELDS: Final[dict[str, list[dict[str, str]]]] = {
    "Offer": [
        {"name": "provider", "type": "address"},
        {"name": "client", "type": "address"},
        {"name": "capabilitiesHash", "type": "bytes32"},
        {"name": "pricePerGpuSecond", "type": "uint256"},
        {"name": "nonce", "type": "uint64"},
        {"name": "expiry", "type": "uint64"},
    ],
    "Attestation": [
        {"name": "jobId", "type": "uint64"},
        {"name": "provider", "type": "address"},
        {"name": "specHash", "type": "bytes32"},
        {"name": "outputHash", "type": "bytes32"},
        {"name": "runtimeId", "type": "bytes32"},
        {"name": "determinism", "type": "uint8"},
        {"name": "meteredMillis", "type": "uint64"},
    ],
}


def typed_data(domain: Domain, value: OfferData | AttestationData) -> dict[str, Any]:
    """The full EIP-712 typed-data document (for wallets and eth-account)."""
    primary = "Offer" if isinstance(value, OfferData) else "Attestation"
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            primary: _TYPE_FIELDS[primary],
        },
        "primaryType": primary,
        "domain": domain.as_eip712(),
        "message": value.as_eip712(),
    }


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """Sign a 32-byte digest: 65 bytes ``r || s || v`` (v = 27/28, low s)."""
    if len(digest) != 32:
        raise InvalidField("digest must be 32 bytes")
    raw = coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    return raw[:64] + bytes([raw[64] + 27])


def recover_signer(digest: bytes, signature: bytes) -> bytes:
    """Recover the 20-byte address that signed ``digest``; raise :class:`BadSignature`."""
    if len(signature) != 65:
        raise BadSignature(f"a signature is 65 bytes, got {len(signature)}")
    v = signature[64]
    if v not in (27, 28):
        raise BadSignature(f"signature v must be 27 or 28, got {v}")
    s = int.from_bytes(signature[32:64], "big")
    if s > _HALF_N or s == 0:
        raise BadSignature("signature s is not in the lower half of the curve order")
    r = int.from_bytes(signature[0:32], "big")
    if r == 0 or r >= SECP256K1_N:
        raise BadSignature("signature r is out of range")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([v - 27]), digest, hasher=None
        )
    except (ValueError, TypeError) as exc:
        raise BadSignature(f"signature does not recover: {exc}") from None
    return keccak(pub.format(compressed=False)[1:])[12:]


def verify_signer(digest: bytes, signature: bytes, expected: bytes) -> None:
    """Raise :class:`BadSignature` unless ``signature`` over ``digest`` is by ``expected``."""
    signer = recover_signer(digest, signature)
    if signer != expected:
        raise BadSignature(f"signed by 0x{signer.hex()}, expected 0x{expected.hex()}")
