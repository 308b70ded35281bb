"""Lease mode (the GPU design: context first, then seccomp on every thread), run on CPU."""

from __future__ import annotations

import dataclasses
import time

import pytest
from conftest import code_job, mlp_job

from node.runtime import detect
from node.runtime.errors import JobError
from node.runtime.pool import PoolConfig, WorkerPool


def test_lease_worker_matches_the_fork_path_and_dies_on_timeout(
    pool: WorkerPool, host_report: detect.SandboxReport
) -> None:
    cfg = PoolConfig(mode="lease", timeout_s=3.0, allow_test_code=True)
    with WorkerPool(cfg) as lease:
        res = lease.run(mlp_job(seed=4))
        assert res.output_sha256 == pool.run(mlp_job(seed=4)).output_sha256
        # a batch runs its jobs one by one on the lease worker; a bad one fails alone
        bad = dataclasses.replace(mlp_job(seed=4), inputs=b"junk")
        out = lease.run_batch([mlp_job(seed=4), bad, mlp_job(seed=4)])
        assert [getattr(r, "output_sha256", None) for r in out[::2]] == [res.output_sha256] * 2
        assert isinstance(out[1], JobError) and out[1].code == "bad_inputs"
        assert "seccomp" in res.layers and "landlock" in res.layers
        # seccomp (TSYNC after torch started its threads) holds in the lease worker too
        probe = code_job(
            "import os\ntry:\n    os.fork()\n    ok = 1\nexcept OSError:\n    ok = 0\n"
            "outputs = {'forked': torch.tensor([ok])}"
        )
        from node.runtime.formats import parse_safetensors

        assert int(parse_safetensors(lease.run(probe).output, "x")["forked"]) == 0
        first = lease._all[0].proc
        assert first is not None
        t0 = time.monotonic()
        with pytest.raises(JobError) as info:
            lease.run(code_job("import time\ntime.sleep(10**6)"))
        assert info.value.code == "timeout"
        assert time.monotonic() - t0 < 3.0 + 3.0 + 2.0
        assert first.poll() is not None  # the whole lease worker was killed ...
        assert lease.run(mlp_job(seed=4)).output_sha256 == res.output_sha256  # ... and replaced
