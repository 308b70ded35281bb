"""Fail-closed policy: a pool never starts below its minimum tier without the override."""

from __future__ import annotations

import pytest
from conftest import mlp_job

from node.runtime import detect
from node.runtime.errors import JobError, SandboxUnavailable
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool


def test_refuses_a_tier_the_host_cannot_give(host_report: detect.SandboxReport) -> None:
    with pytest.raises(SandboxUnavailable, match="below the required 3"):
        WorkerPool(PoolConfig(min_tier=3))


def test_refuses_when_layers_are_switched_off() -> None:
    with pytest.raises(SandboxUnavailable, match="missing"):
        WorkerPool(PoolConfig(layers=frozenset({"bwrap"})))


def test_insecure_override_runs_and_advertises_tier_0(
    host_report: detect.SandboxReport,
) -> None:
    if not host_report.layers["bwrap"].ok:
        pytest.skip("bubblewrap is not available on this host")
    cfg = PoolConfig(layers=frozenset({"bwrap", "rlimits"}), insecure=True, timeout_s=20)
    with WorkerPool(cfg) as pool:
        assert pool.tier == 0
        res = pool.run(mlp_job())
        assert res.tier == 0 and "seccomp" not in res.layers and "landlock" not in res.layers
        job = mlp_job()
        v2 = RunRequest("export-v2", "export", {}, b"PK", job.inputs)
        with pytest.raises(JobError) as info:
            pool.run(v2)
        assert info.value.code == "refused"
