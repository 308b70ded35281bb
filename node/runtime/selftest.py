"""Every catalog family through a real pool, checked against a bare in-process run.

The sandbox's layers were measured on a few hosts only; in particular the CPU job
processes' seccomp allowlist was traced on one libc/torch build (docs/runtime.md §3),
and a build that makes other system calls would see them fail with ``ENOSYS``. This
runs one tiny job of each family (:data:`catalog.TINY`) through the operator's own
pool, with every layer this host gives, and compares each output with the same job
run bare in this process: bit for bit on the bitwise tiers (``exact`` on a CPU,
``gpu-deterministic`` on a GPU). ``gpunet runtime check --run-catalog`` prints it.
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch

from . import catalog, formats
from .errors import JobError
from .pool import RunRequest, WorkerPool

__all__ = ["FamilyCheck", "run_catalog"]


@dataclasses.dataclass(frozen=True)
class FamilyCheck:
    """One family's sandboxed run: ``ok`` when it ran and equals the bare run."""

    arch: str
    ok: bool
    detail: str
    sandbox_ms: float


def _inputs(kind: str, shape: tuple[int, ...], config: dict[str, int], seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    if kind == "ids":
        ids = torch.randint(0, config["vocab"], shape, generator=g)
        return formats.save_safetensors({"input_ids": ids})
    return formats.save_safetensors({"x": torch.randn(shape, generator=g)})


def _bare(req: RunRequest, device: str, threads: int) -> bytes:
    """The job's output sha256 run in this process with the tier's flags."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    if device.startswith("cuda"):  # the gpu-deterministic settings (docs/runtime.md §7)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        model = formats.load_model(req.arch, req.config, req.weights, device=device)
        out = formats.run(req.arch, req.config, model, req.inputs, device=device)
        return formats.encode_outputs(out)[1]
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(before)


def run_catalog(pool: WorkerPool) -> list[FamilyCheck]:
    """Run :data:`catalog.TINY` through ``pool`` and compare with bare runs."""
    device = pool.config.device
    tier = 1 if device.startswith("cuda") else 0
    checks = []
    for seed, (arch, config, kind, shape) in enumerate(catalog.TINY):
        req = RunRequest(
            "catalog-v1",
            arch,
            config,
            formats.random_weights(arch, config, seed=seed),
            _inputs(kind, shape, config, seed),
            determinism=tier,
        )
        t0 = time.perf_counter()
        try:
            res = pool.run(req)
        except JobError as exc:
            checks.append(FamilyCheck(arch, False, f"{exc.code}: {exc.message}"[:300], 0.0))
            continue
        ms = (time.perf_counter() - t0) * 1000
        if res.output_sha256 != _bare(req, device, pool.config.threads):
            checks.append(FamilyCheck(arch, False, "output differs from a bare run", ms))
        else:
            checks.append(FamilyCheck(arch, True, "bitwise equal to a bare run", ms))
    return checks
