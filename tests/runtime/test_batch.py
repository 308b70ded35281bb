"""Same-tenant batches (``WorkerPool.run_batch``): several jobs in one prepared child.

Each job's result must be exactly what ``run`` gives for it (exact tier, bitwise), a
failing job gets its own error while the others succeed, and a batch that may not share
a child is refused before anything runs.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import MLP, mlp_job, mlp_jobs

from node.runtime import formats
from node.runtime.errors import JobError
from node.runtime.pool import MAX_BATCH, RunRequest, RunResult, WorkerPool

RESNET = {"width": 4, "classes": 7, "image": 32}


def _resnet_jobs(n: int, batch: int = 2, image: int = 32) -> list[RunRequest]:
    cfg = {**RESNET, "image": image}
    w = formats.random_weights("resnet18@1", cfg, seed=5)
    g = torch.Generator().manual_seed(6)
    return [
        RunRequest(
            "catalog-v1",
            "resnet18@1",
            cfg,
            w,
            formats.save_safetensors({"x": torch.randn(batch, 3, image, image, generator=g)}),
        )
        for _ in range(n)
    ]


def _ok(res: RunResult | JobError) -> RunResult:
    assert isinstance(res, RunResult), res
    return res


@pytest.mark.parametrize("kind", ["mlp", "resnet18"])
def test_batch_outputs_equal_single_runs_bitwise(pool: WorkerPool, kind: str) -> None:
    reqs = mlp_jobs(6, seed=11) if kind == "mlp" else _resnet_jobs(3)
    t0 = time.monotonic()
    batch = [_ok(r) for r in pool.run_batch(reqs)]
    elapsed_ms = (time.monotonic() - t0) * 1000
    singles = [pool.run(r) for r in reqs]
    assert len(batch) == len(reqs)
    for b, s in zip(batch, singles, strict=True):
        assert b.output == s.output and b.output_sha256 == s.output_sha256
        assert b.inputs_via == s.inputs_via == "file"  # fork mode: a file in the job's dir
        assert b.runtime == s.runtime and b.tier == s.tier and b.layers == s.layers
    assert len({b.output_sha256 for b in batch}) == len(reqs)  # distinct inputs, distinct outputs
    # per-job metering: present, and within what the whole batch could have used
    walls = [b.wall_millis for b in batch]
    assert walls == sorted(walls) and walls[-1] <= elapsed_ms + 1
    for b in batch:
        assert b.metered_millis >= 1 and b.peak_memory_bytes > 0
        assert b.metered_millis <= 2 * elapsed_ms + 5  # at most threads + 1 cores busy
        assert b.infer_ms > 0
    assert sum(b.metered_millis for b in batch) <= 2 * elapsed_ms + 5 * len(batch)
    assert len({b.peak_memory_bytes for b in batch}) == 1  # the batch's peak, on each


def test_metering_follows_each_jobs_own_work(pool: WorkerPool) -> None:
    small, large = _resnet_jobs(1, batch=1, image=160)[0], _resnet_jobs(1, batch=16, image=160)[0]
    out = [_ok(r) for r in pool.run_batch([small, large, small])]
    # the large job does 16x the work of each small one; the batch's overhead is shared
    assert out[1].metered_millis > 2 * max(out[0].metered_millis, out[2].metered_millis)
    assert out[1].infer_ms > out[0].infer_ms


def test_a_bad_item_fails_alone(pool: WorkerPool) -> None:
    good = mlp_jobs(4, seed=21)
    reqs = [
        good[0],
        dataclasses.replace(good[1], inputs=b"junk"),
        dataclasses.replace(good[2], max_output_bytes=16),  # its own output cap
        dataclasses.replace(good[3], min_sandbox_tier=3),  # refused at admission
        good[3],
    ]
    out = pool.run_batch(reqs)
    assert len(out) == 5
    for i, code in ((1, "bad_inputs"), (2, "output_too_large"), (3, "refused")):
        assert isinstance(out[i], JobError) and out[i].code == code, out[i]  # type: ignore[union-attr]
    assert _ok(out[0]).output == pool.run(good[0]).output
    assert _ok(out[4]).output == pool.run(good[3]).output


def _scratch_entries(pool: WorkerPool) -> set[str]:
    return {f"{s.index}/{p.name}" for s in pool._all for p in s.scratch.iterdir()}


def test_batches_that_may_not_share_a_child_are_refused_before_running(pool: WorkerPool) -> None:
    reqs = mlp_jobs(2, seed=11)
    other_weights = dataclasses.replace(
        reqs[1], weights=formats.random_weights("mlp@1", MLP, seed=99)
    )
    wide = {**MLP, "hidden": 8}
    other_config = RunRequest(
        "catalog-v1", "mlp@1", wide, formats.random_weights("mlp@1", wide), reqs[1].inputs
    )
    cases = [
        [],
        [reqs[0]] * (MAX_BATCH + 1),
        [reqs[0], other_weights],
        [reqs[0], other_config],
        [reqs[0], dataclasses.replace(reqs[1], determinism=2)],
        [reqs[0], dataclasses.replace(reqs[1], weights_sha256=b"\x01" * 32)],
        [reqs[0], dataclasses.replace(reqs[1], test_code="outputs = {}")],
        [reqs[0], dataclasses.replace(reqs[1], format="export-v2")],
    ]
    before = _scratch_entries(pool)
    for case in cases:
        with pytest.raises(ValueError):
            pool.run_batch(case)
    # nothing ran: no job or batch directory appeared (the pool keeps them for inspection)
    new = {e for e in _scratch_entries(pool) - before if e.split("/")[1][0] in "bj"}
    assert not new
    assert pool.run(mlp_job(seed=3)).output_sha256  # and a valid job still runs


def test_a_timed_out_job_keeps_the_others(pool: WorkerPool) -> None:
    reqs = mlp_jobs(3, seed=31)
    # 0.1 ms cannot cover a frame, a forward and a report: the wall clock kills the child
    out = pool.run_batch([dataclasses.replace(reqs[0], timeout_s=1e-4), *reqs[1:]])
    assert isinstance(out[0], JobError) and out[0].code == "timeout"
    for got, req in zip(out[1:], reqs[1:], strict=True):  # run again in a fresh child
        assert _ok(got).output == pool.run(req).output


def _nspid(pid: int) -> str | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((ln.split()[-1] for ln in status.splitlines() if ln[:6] == "NSpid:"), None)


def _batch_child(pool: WorkerPool, seen: dict[tuple[int, int], str]) -> int | None:
    """Host pid of the child that holds a batch once its first job has an output, else None.

    A prepared child's dir ``n<nspid>`` is renamed to the batch's ``b<id>`` (same
    inode): ``seen`` remembers which inode belonged to which child.
    """
    for slot in pool._all:
        for entry in slot.scratch.iterdir():
            try:
                ino = entry.stat().st_ino
            except OSError:
                continue
            if entry.name[0] == "n":
                seen[slot.index, ino] = entry.name[1:]
            elif entry.name[0] == "b" and (slot.index, ino) in seen:
                if not any(entry.glob("*/output.safetensors")):
                    continue
                for cg in slot.job_cgs:
                    for pid in cg.pids():
                        if _nspid(pid) == seen[slot.index, ino]:
                            return pid
    return None


def test_a_child_killed_mid_batch_fails_one_job_only(pool: WorkerPool) -> None:
    reqs = _resnet_jobs(6, batch=16, image=160)
    expected = [pool.run(r).output for r in reqs]
    out: list[RunResult | JobError] = []
    seen: dict[tuple[int, int], str] = {}
    _batch_child(pool, seen)  # the prepared children's dirs, before the batch takes one
    runner = threading.Thread(target=lambda: out.extend(pool.run_batch(reqs)))
    runner.start()
    try:
        pid = None
        while pid is None and runner.is_alive():
            pid = _batch_child(pool, seen)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # while a later job runs
    finally:
        runner.join()
    errors = [i for i, r in enumerate(out) if isinstance(r, JobError)]
    assert len(errors) == 1 and errors[0] > 0, out
    assert out[errors[0]].code in ("oom", "killed", "crashed")  # type: ignore[union-attr]
    for got, want in zip(out, expected, strict=True):  # before it, and run again after it
        if isinstance(got, RunResult):
            assert got.output == want
