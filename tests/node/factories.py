"""Small builders of real protocol values for the node tests (store, API)."""

from __future__ import annotations

import hashlib

from protocol.identity import Identity
from protocol.messages import (
    Attestation,
    Capabilities,
    Determinism,
    JobFormat,
    JobSpec,
    ModelRef,
    Offer,
)

PROVIDERS = [Identity.from_private_key(bytes([i + 1]) * 32) for i in range(3)]
CONTRACT = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")


def h(label: str) -> bytes:
    """A deterministic 32-byte hash for ``label``."""
    return hashlib.sha256(label.encode()).digest()


def spec(label: str = "x", arch: str = "mlp@1") -> JobSpec:
    return JobSpec(
        model=ModelRef(arch=arch, config={"hidden": 64}, weights=h("w" + label), weights_size=4096),
        inputs=h("i" + label),
        inputs_size=1024,
    )


def capabilities(tier: int = 2, device_class: str = "cpu") -> Capabilities:
    return Capabilities(
        device_class=device_class,
        gpu_model="",
        gpu_memory_mib=0,
        gpu_count=0,
        sandbox_tier=tier,
        formats=(JobFormat.CATALOG_V1,),
        determinism=(Determinism.EXACT,),
        runtimes=("torch-2.13.0-cpu",),
        max_job_bytes=1 << 30,
    )


def offer(
    provider: int = 0,
    *,
    nonce: int = 1,
    price: int = 1000,
    expiry: int = 2_000_000_000,
    tier: int = 2,
    device_class: str = "cpu",
) -> Offer:
    return Offer.create(
        PROVIDERS[provider],
        chain_id=31337,
        contract=CONTRACT,
        price_per_gpu_second=price,
        nonce=nonce,
        expiry=expiry,
        capabilities=capabilities(tier, device_class),
    )


def attestation(
    job_id: int, spec_hash: bytes, output: bytes, *, provider: int = 0, millis: int = 1234
) -> Attestation:
    return Attestation.create(
        PROVIDERS[provider],
        chain_id=31337,
        contract=CONTRACT,
        job_id=job_id,
        spec_hash=spec_hash,
        output_hash=output,
        runtime="torch-2.13.0-cpu",
        determinism=Determinism.EXACT,
        metered_millis=millis,
    )
