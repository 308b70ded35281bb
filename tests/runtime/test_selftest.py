"""``selftest.run_catalog``: every catalog family through a real pool, against bare runs
(what ``gpunet runtime check --run-catalog`` prints)."""

from __future__ import annotations

import pytest

from node.runtime import catalog, detect, selftest
from node.runtime.pool import PoolConfig, WorkerPool


def test_every_family_runs_sandboxed_and_equals_a_bare_run(pool: WorkerPool) -> None:
    checks = selftest.run_catalog(pool)
    assert [c.arch for c in checks] == [t[0] for t in catalog.TINY]
    assert len({c.arch.split("@")[0] for c in checks}) == 6  # mlp, resnet18/50, vit, gpt2, bert
    failed = [c for c in checks if not c.ok]
    assert not failed, failed
    assert all(c.detail == "bitwise equal to a bare run" and c.sandbox_ms > 0 for c in checks)


def test_a_pool_that_cannot_run_the_jobs_is_reported(host_report: detect.SandboxReport) -> None:
    if host_report.tier < 2:
        pytest.skip(f"host gives sandbox tier {host_report.tier}")
    # a 16-byte output cap: every family's output is refused (a real failure, not a fake;
    # a 1 MiB memory limit is test_pool.py's, where some jobs die before they start)
    with WorkerPool(PoolConfig(max_output_bytes=16, timeout_s=10.0)) as capped:
        checks = selftest.run_catalog(capped)
    assert len(checks) == len(catalog.TINY)
    assert not any(c.ok for c in checks)
    assert all(c.detail.startswith("output_too_large:") for c in checks), checks
