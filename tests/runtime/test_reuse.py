"""Warm children kept per tenant (docs/runtime.md §5, "Kept children").

A fork-mode catalog-v1 job with a tenant may run in the child that ran the same
tenant's previous job (same model, same tier). Checked here from the host: which
process ran each job (``RunResult.pid``, the child's host pid), that tenants never
share one, that a kept child expires, dies or fails without the caller seeing more than
its own job's error, that each job on a reused child gets its own CPU budget, and that
its outputs are bitwise those of a fresh child.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import mlp_jobs

from node.runtime import detect, formats
from node.runtime.errors import JobError
from node.runtime.pool import PoolConfig, RunRequest, RunResult, WorkerPool
from node.runtime.workers import cpu_ms

HEAVY = {"in": 1024, "hidden": 2048, "depth": 2, "out": 4}  # seconds at batch 4096
ALICE, BOB = b"\xa1" * 20, b"\xb0" * 20
IDLE_S = 1.0


@pytest.fixture(scope="module")
def kpool(host_report: detect.SandboxReport) -> Iterator[WorkerPool]:
    """Two slots with every layer; kept children live ``IDLE_S`` (not the shared pool:
    its idle time is the default, and these tests count processes)."""
    if host_report.tier < 2:
        pytest.skip(f"host gives sandbox tier {host_report.tier}")
    cfg = PoolConfig(
        slots=2,
        threads=1,
        timeout_s=10.0,
        memory_bytes=1 << 30,
        max_output_bytes=1 << 20,
        keep_idle_s=IDLE_S,
    )
    with WorkerPool(cfg) as p:
        yield p


@pytest.fixture(autouse=True)
def _no_kept_child(kpool: WorkerPool) -> None:
    """Each test starts with no kept child (retired by their slots' helpers)."""
    for slot in kpool._all:
        slot.take_kept(None)


def _ok(res: RunResult | JobError) -> RunResult:
    assert isinstance(res, RunResult), res
    return res


def _gone(pid: int, timeout_s: float = 3.0) -> bool:
    """Whether host process ``pid`` has exited (a zombie counts) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def test_one_tenants_jobs_reuse_its_child_with_fresh_child_outputs(kpool: WorkerPool) -> None:
    reqs = mlp_jobs(8, seed=7, tenant=ALICE)
    fresh = [kpool.run(dataclasses.replace(r, tenant=None)) for r in reqs]  # reference
    assert len({f.pid for f in fresh}) == len(fresh)  # tenant-less: a new child each
    first = kpool.run(reqs[0])
    singles = [kpool.run(r) for r in reqs[1:4]]
    batch = [_ok(r) for r in kpool.run_batch(reqs[4:7])]  # a batch on the same child
    last = kpool.run(reqs[7])
    got = [first, *singles, *batch, last]
    assert {r.pid for r in got} == {first.pid}, [r.pid for r in got]
    assert first.pid not in {f.pid for f in fresh}
    for g, f in zip(got, fresh, strict=True):  # exact tier: bitwise a fresh child's output
        assert g.output == f.output and g.output_sha256 == f.output_sha256
        assert g.runtime == f.runtime
    for r in singles:  # metered per job: this job's CPU, not the child's whole life
        assert 1 <= r.metered_millis <= 2 * r.wall_millis + 5
        assert r.peak_memory_bytes > 0


def test_tenants_never_share_a_child_and_prefer_their_slot(kpool: WorkerPool) -> None:
    a, b = mlp_jobs(3, seed=8, tenant=ALICE), mlp_jobs(3, seed=8, tenant=BOB)  # same model
    pa = kpool.run(a[0]).pid
    pb = kpool.run(b[0]).pid
    assert pb != pa  # Bob got a fresh child (on the other slot: Alice's is kept)
    assert kpool.run(a[1]).pid == pa  # each tenant back on the slot holding its child
    assert kpool.run(b[1]).pid == pb
    # a tenant-less job takes a slot and retires the child kept there (helper, off-path)
    anon = kpool.run(dataclasses.replace(a[2], tenant=None)).pid
    assert anon not in (pa, pb)
    deadline = time.monotonic() + 3.0
    while not (_gone(pa, 0) or _gone(pb, 0)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(pa, 0) != _gone(pb, 0)  # exactly one of them was retired
    survivor = pb if _gone(pa, 0) else pa
    again = kpool.run(a[2] if survivor == pa else b[2]).pid
    assert again == survivor


def test_the_helper_retires_an_idle_child(kpool: WorkerPool) -> None:
    reqs = mlp_jobs(2, seed=9, tenant=ALICE)
    pid = kpool.run(reqs[0]).pid
    assert not _gone(pid, timeout_s=IDLE_S / 4)  # kept...
    assert _gone(pid, timeout_s=IDLE_S + 2.0)  # ...until idle over keep_idle_s
    assert all(s.kept is None for s in kpool._all)
    assert kpool.run(reqs[1]).pid != pid


def test_a_kept_child_killed_while_idle_is_replaced_silently(kpool: WorkerPool) -> None:
    reqs = mlp_jobs(2, seed=10, tenant=ALICE)
    pid = kpool.run(reqs[0]).pid
    fd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGKILL)
        assert select.select([fd], [], [], 3.0)[0]  # it has exited
    finally:
        os.close(fd)
    res = kpool.run(reqs[1])  # no error: a fresh child
    assert res.pid != pid
    assert res.output == kpool.run(dataclasses.replace(reqs[1], tenant=None)).output


def test_a_kept_child_killed_just_before_its_next_job_is_replaced_silently(
    kpool: WorkerPool,
) -> None:
    """The kill races the next job: the frame may reach a child that is dying. A kept
    child acknowledges each frame before it starts on it, so a job whose frame was
    never taken runs in a fresh child instead of failing."""
    for seed in range(6):
        reqs = mlp_jobs(2, seed=20 + seed, tenant=ALICE)
        pid = kpool.run(reqs[0]).pid
        os.kill(pid, signal.SIGKILL)  # no waiting for the exit this time
        res = kpool.run(reqs[1])
        assert res.pid != pid
        assert res.output == kpool.run(dataclasses.replace(reqs[1], tenant=None)).output


def test_a_spinning_job_on_a_reused_child_is_stopped_and_the_next_runs(
    kpool: WorkerPool,
) -> None:
    w = formats.random_weights("mlp@1", HEAVY, seed=12)

    def job(batch: int, **kw: object) -> RunRequest:
        x = formats.save_safetensors({"x": torch.randn(batch, HEAVY["in"])})
        return RunRequest("catalog-v1", "mlp@1", HEAVY, w, x, tenant=ALICE, **kw)  # type: ignore[arg-type]

    pid = kpool.run(job(2)).pid
    cpu0 = cpu_ms(pid)
    errors: list[BaseException] = []

    def spin() -> None:  # seconds of CPU, 0.3 s of wall clock
        try:
            kpool.run(job(4096, timeout_s=0.3))
        except JobError as exc:
            errors.append(exc)

    t0 = time.monotonic()
    runner = threading.Thread(target=spin)
    runner.start()
    busy = 0.0
    while runner.is_alive():  # the kept child itself runs it (its CPU time grows)
        busy = max(busy, cpu_ms(pid) - cpu0)
        time.sleep(0.01)
    runner.join()
    assert busy > 50, busy
    assert len(errors) == 1 and isinstance(errors[0], JobError)
    assert errors[0].code == "timeout"
    assert time.monotonic() - t0 < 3.0
    assert _gone(pid)  # that child was killed at once, not kept
    res = kpool.run(job(2))
    assert res.pid != pid and res.output_sha256


def test_each_job_on_a_kept_child_gets_its_own_cpu_budget(tmp_path: Path) -> None:
    """RLIMIT_CPU counts a process's life: ``set_job_budget`` (what a kept child runs
    before each frame) gives the next job its budget on top of the CPU already used."""
    code = """
import time
from node.runtime import lockdown
lockdown.set_rlimits({"cpu": 6})  # the child's life limit (soft = hard)
def spin(until):
    while time.process_time() < until:
        pass
soft, _ = lockdown.set_job_budget(cpu_s=1, fsize=1 << 20)  # job 1: 1 s, uses ~1.1 s
assert soft <= 2, soft
spin(1.1)
soft, _ = lockdown.set_job_budget(cpu_s=1, fsize=1 << 20)  # job 2: 1 s more, spins forever
assert soft == 3, soft
with open(MARK, "w") as f:
    f.write(str(time.process_time()))
spin(1e9)
""".replace("MARK", repr(str(tmp_path / "job2_start")))
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = status
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU, status
    job2_start = float((tmp_path / "job2_start").read_text())
    job2_cpu = ru.ru_utime + ru.ru_stime - job2_start
    assert 1.0 <= job2_cpu <= 2.5, job2_cpu  # its own budget, not the life's remainder


def test_the_hard_limit_still_bounds_a_kept_childs_life() -> None:
    code = """
from node.runtime import lockdown
lockdown.set_rlimits({"cpu": 4})
soft, fs = lockdown.set_job_budget(cpu_s=100, fsize=1 << 40)
print(soft, fs)
"""
    root = Path(__file__).resolve().parents[2]
    lim = (1 << 30) + 5
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({lim}, {lim}))\n" + code,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [int(x) for x in out] == [4, lim]


def test_keep_idle_zero_disables_reuse(host_report: detect.SandboxReport) -> None:
    if host_report.tier < 2:
        pytest.skip(f"host gives sandbox tier {host_report.tier}")
    cfg = PoolConfig(slots=1, spares=1, timeout_s=10.0, memory_bytes=1 << 30, keep_idle_s=0)
    reqs = mlp_jobs(2, seed=13, tenant=ALICE)
    with WorkerPool(cfg) as p:
        pids = [p.run(r).pid for r in reqs]
        assert p._all[0].kept is None
    assert pids[0] != pids[1]


def test_a_batch_must_carry_one_tenant(kpool: WorkerPool) -> None:
    a, b = mlp_jobs(1, seed=7, tenant=ALICE)[0], mlp_jobs(1, seed=7, tenant=BOB)[0]
    for case in ([a, b], [a, dataclasses.replace(b, tenant=None)]):
        with pytest.raises(ValueError, match="tenant"):
            kpool.run_batch(case)
