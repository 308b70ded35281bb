"""Shared fixtures of the p2p tests: configs, signed offers, job requests."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from collections.abc import Iterator

import pytest

from node.p2p.config import Limits, P2PConfig
from protocol.identity import Identity
from protocol.messages import (
    Capabilities,
    Determinism,
    JobFormat,
    JobRequest,
    JobSpec,
    ModelRef,
    Offer,
)

sys.path.insert(0, os.path.dirname(__file__))

CHAIN_ID = 31337
CONTRACT = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")


def make_config(**overrides: object) -> P2PConfig:
    """A loopback config: IP-diversity protections off (every peer is 127.0.0.1)."""
    limits = overrides.pop("limits", Limits(read_timeout=3.0))
    return P2PConfig(
        chain_id=CHAIN_ID,
        contract=CONTRACT,
        eclipse_protection=False,
        limits=limits,  # type: ignore[arg-type]
        **overrides,  # type: ignore[arg-type]
    )


def make_caps(device_class: str = "cpu", memory: int = 0, tier: int = 1) -> Capabilities:
    return Capabilities(
        device_class=device_class,
        gpu_model="none" if device_class == "cpu" else device_class,
        gpu_memory_mib=memory,
        gpu_count=0 if device_class == "cpu" else 1,
        sandbox_tier=tier,
        formats=(JobFormat.CATALOG_V1,),
        determinism=(Determinism.EXACT,),
        runtimes=("torch-2.13.0",),
        max_job_bytes=1 << 30,
    )


def make_offer(
    identity: Identity,
    *,
    nonce: int = 1,
    price: int = 100,
    expiry: int | None = None,
    chain_id: int = CHAIN_ID,
    contract: bytes = CONTRACT,
    caps: Capabilities | None = None,
    client: bytes | None = None,
) -> Offer:
    kwargs: dict[str, object] = {}
    if client is not None:
        kwargs["client"] = client
    return Offer.create(
        identity,
        chain_id=chain_id,
        contract=contract,
        price_per_gpu_second=price,
        nonce=nonce,
        expiry=expiry if expiry is not None else int(time.time()) + 600,
        capabilities=caps or make_caps(),
        **kwargs,  # type: ignore[arg-type]
    )


def make_request(client: Identity) -> JobRequest:
    spec = JobSpec(
        model=ModelRef(arch="mlp-1", weights=secrets.token_bytes(32), weights_size=1000),
        inputs=secrets.token_bytes(32),
        inputs_size=100,
    )
    return JobRequest(
        request_id=secrets.token_bytes(16),
        client=client.address,
        spec=spec,
        max_price_per_gpu_second=1000,
        max_payment=10**9,
        deadline=int(time.time()) + 3600,
    )


@pytest.fixture(autouse=True)
def _quiet_libp2p() -> Iterator[None]:
    """py-libp2p logs teardown noise at WARNING/ERROR; keep test output readable."""
    logger = logging.getLogger("libp2p")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)
