"""Fresh pools of their own: a cold pool's first jobs (exact tier), refused ISAs, shutdown.

Not the shared ``pool`` fixture: what these check happens only in a zygote that has
run nothing yet, whatever other tests ran before.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from node.runtime import detect, devices, formats, sandbox
from node.runtime.errors import SandboxUnavailable
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool

TEXT = {"vocab": 50, "positions": 16, "dim": 16, "depth": 2, "heads": 2, "mlp": 32}
VIT = {"image": 16, "patch": 4, "dim": 16, "depth": 2, "heads": 2, "mlp": 32, "classes": 3}
JOBS = {  # the first two are the very first jobs of the fresh pool's two slots
    "bert@1": (TEXT, {"input_ids": torch.randint(0, 50, (2, 9))}),
    "gpt2@1": (TEXT, {"input_ids": torch.randint(0, 50, (2, 9))}),
    "vit@1": (VIT, {"x": torch.randn(2, 3, 16, 16)}),
    "resnet18@1": ({"width": 4, "classes": 7, "image": 32}, {"x": torch.randn(2, 3, 32, 32)}),
    "resnet50@1": ({"width": 4, "classes": 7, "image": 32}, {"x": torch.randn(2, 3, 32, 32)}),
    "mlp@1": ({"in": 12, "hidden": 16, "depth": 2, "out": 5}, {"x": torch.randn(3, 12)}),
}


@pytest.fixture
def fresh(host_report: detect.SandboxReport) -> Iterator[PoolConfig]:
    if host_report.tier < 2:
        pytest.skip(f"host gives sandbox tier {host_report.tier}")
    yield PoolConfig(
        slots=2,
        threads=1,
        timeout_s=30.0,
        memory_bytes=1 << 30,
        max_output_bytes=1 << 20,
    )


def _job(arch: str) -> tuple[RunRequest, bytes]:
    """The job and the sha256 of its output run bare in this process (exact tier)."""
    config, tensors = JOBS[arch]
    weights = formats.random_weights(arch, config, seed=11)
    inputs = formats.save_safetensors(tensors)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        model = formats.load_model(arch, config, weights)
        bare = formats.encode_outputs(formats.run(arch, config, model, inputs))[1]
    finally:
        torch.use_deterministic_algorithms(False)
    return RunRequest("catalog-v1", arch, config, weights, inputs), bare


def test_a_cold_pools_first_jobs_match_a_bare_run(fresh: PoolConfig) -> None:
    # A job child cannot read /proc: when torch chose its CPU kernels on the child's
    # first op, cpuinfo failed there and the default kernels ran (BERT/GPT-2/ViT
    # outputs differed in the last bits). Each family's output must equal a bare run.
    jobs = {arch: _job(arch) for arch in JOBS}
    with WorkerPool(fresh) as pool:
        first = ["bert@1", "gpt2@1"]
        with ThreadPoolExecutor(2) as ex:  # both zygotes start with one of them
            results = dict(zip(first, ex.map(pool.run, [jobs[a][0] for a in first]), strict=True))
        for arch in JOBS:
            if arch not in results:
                results[arch] = pool.run(jobs[arch][0])
    for arch, (_, bare) in jobs.items():
        assert results[arch].output_sha256 == bare, arch


def test_a_worker_with_other_cpu_kernels_is_refused(
    fresh: PoolConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the runtime id names the host's kernels (cpu-<isa>): a worker that would run others
    # (here forced through torch's own override) must not start
    if devices.cpu_isa() == "default":
        pytest.skip("the host already runs torch's default CPU kernels")
    monkeypatch.setitem(sandbox.FORK_ENV, "ATEN_CPU_CAPABILITY", "default")
    with pytest.raises(SandboxUnavailable, match="'default' CPU kernels"):
        WorkerPool(dataclasses.replace(fresh, slots=1)).start()


def test_shutdown_is_quiet_and_real_helper_failures_are_not(
    fresh: PoolConfig, caplog: pytest.LogCaptureFixture
) -> None:
    req, bare = _job("mlp@1")
    caplog.set_level(logging.DEBUG, logger="gpunet.runtime")
    with WorkerPool(fresh) as pool:
        assert pool.run(req).output_sha256 == bare
        # a worker that dies while its helper prepares the next child is a real failure:
        # logged as one, and the worker is replaced for the next job
        slot = pool._all[0]
        slot.settle()
        slot.drop_ready()  # so that the helper has a child to prepare
        os.kill(slot.zygote_pid, signal.SIGKILL)
        slot.refill({"model": None})
        slot.settle()
        failed = [r for r in caplog.records if "preparing a child failed" in r.getMessage()]
        assert len(failed) == 1 and failed[0].levelno == logging.WARNING
        caplog.clear()
        assert all(pool.run(req).output_sha256 == bare for _ in range(3))
    # closing right after jobs stops workers whose helpers are still preparing children:
    # expected, not a warning
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]
