"""A shared warm pool with every layer this host has (tier 2 required here, else skip)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from node.runtime import detect, formats
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool

MLP = {"in": 12, "hidden": 16, "depth": 2, "out": 5}


@pytest.fixture(scope="session")
def host_report() -> detect.SandboxReport:
    return detect.check()


@pytest.fixture(scope="session")
def fake_keystore(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A fake keystore with a random secret, in the node's home and world-readable."""
    secret = secrets.token_hex(24).encode()
    home = Path.home() / ".gpunet-test"
    home.mkdir(exist_ok=True)
    path = home / f"keystore-{secrets.token_hex(4)}.json"
    path.write_bytes(b'{"crypto": {"ciphertext": "' + secret + b'"}}')
    path.chmod(0o644)  # even world-readable, it must stay out of reach
    yield path, secret
    path.unlink()


@pytest.fixture(scope="session")
def pool(
    host_report: detect.SandboxReport, fake_keystore: tuple[Path, bytes]
) -> Iterator[WorkerPool]:
    if host_report.tier < 2:
        missing = [k for k, v in host_report.layers.items() if not v.ok]
        pytest.skip(f"host gives sandbox tier {host_report.tier}; missing {missing}")
    cfg = PoolConfig(
        slots=2,
        threads=1,
        timeout_s=6.0,
        memory_bytes=1 << 30,
        max_output_bytes=1 << 20,
        allow_test_code=True,
        enable_v2=True,
        keep_scratch=True,
        keystores=(str(fake_keystore[0]),),
    )
    with WorkerPool(cfg) as p:
        yield p


def mlp_job(seed: int = 0, **kw: object) -> RunRequest:
    """A valid small MLP job."""
    g = torch.Generator().manual_seed(seed)
    x = formats.save_safetensors({"x": torch.randn(3, 12, generator=g)})
    w = formats.random_weights("mlp@1", MLP, seed=seed)
    return RunRequest("catalog-v1", "mlp@1", MLP, w, x, **kw)  # type: ignore[arg-type]


def mlp_jobs(n: int, *, seed: int, tenant: bytes | None = None) -> list[RunRequest]:
    """``n`` jobs of one MLP (same weights), each with its own inputs and batch size (1-4)."""
    w = formats.random_weights("mlp@1", MLP, seed=seed)
    g = torch.Generator().manual_seed(seed)
    return [
        RunRequest(
            "catalog-v1",
            "mlp@1",
            MLP,
            w,
            formats.save_safetensors({"x": torch.randn(1 + i % 4, MLP["in"], generator=g)}),
            tenant=tenant,
        )
        for i in range(n)
    ]


def code_job(code: str, **kw: object) -> RunRequest:
    """A job that runs ``code`` in the child after lockdown (the attacker model)."""
    x = formats.save_safetensors({"x": torch.zeros(1)})
    return RunRequest("catalog-v1", "test", {}, b"", x, test_code=code, **kw)  # type: ignore[arg-type]
