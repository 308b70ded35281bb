"""A lease worker's inputs through its shared-memory inbox (node/runtime/inbox.py): the
same outputs as a bare run, the file path for inputs over the inbox's size, and a
worker that attacks the region (shrink, grow, seal, overwrite, punch holes) harms
neither the supervisor nor its next job."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import MLP, code_job

from node.runtime import detect, formats
from node.runtime.errors import JobError
from node.runtime.inbox import Inbox
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool

#: Runs in the lease worker: finds the inbox among its descriptors and tries what a
#: compromised worker could; every outcome goes back in the output, checked host-side.
ATTACK = """
import errno, fcntl, mmap, os
fd = None
for name in os.listdir("/proc/self/fd"):
    try:
        if "gpunet-inbox" in os.readlink(f"/proc/self/fd/{name}"):
            fd = int(name)
    except OSError:
        pass
size = os.fstat(fd).st_size
tries = {}
for what, call in (
    ("shrink", lambda: os.ftruncate(fd, 0)),
    ("grow", lambda: os.ftruncate(fd, size * 2)),
    ("seal", lambda: fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)),
):
    try:
        call()
        tries[what] = 0
    except OSError as exc:
        tries[what] = exc.errno
m = mmap.mmap(fd, size)
m[:4096] = b"\\xff" * 4096  # garbage over the start, where the next inputs go
m.close()
os.pwrite(fd, b"\\x00" * 65536, 0)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
punched = libc.fallocate(fd, 3, 0, 8192) == 0  # PUNCH_HOLE | KEEP_SIZE: pages dropped
outputs = {
    "punched": torch.tensor([punched]),
    "found": torch.tensor([fd is not None]),
    "size_seen": torch.tensor([size]),
    "errnos": torch.tensor([tries["shrink"], tries["grow"], tries["seal"]]),
}
"""


def _mlp(seed: int, rows: int) -> RunRequest:
    g = torch.Generator().manual_seed(seed)
    x = formats.save_safetensors({"x": torch.randn(rows, MLP["in"], generator=g)})
    w = formats.random_weights("mlp@1", MLP, seed=seed)
    return RunRequest("catalog-v1", "mlp@1", MLP, w, x)


def _bare(req: RunRequest) -> bytes:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = formats.load_model(req.arch, req.config, req.weights)
    out = formats.run(req.arch, req.config, model, req.inputs)
    return formats.encode_outputs(out)[0]


@pytest.fixture(scope="module")
def lease(host_report: detect.SandboxReport) -> Iterator[WorkerPool]:
    if host_report.tier < 2:
        pytest.skip(f"host gives sandbox tier {host_report.tier}")
    # 64 KiB: the small MLP inputs fit, a 2,000-row batch (96 KB) does not
    cfg = PoolConfig(mode="lease", timeout_s=10.0, allow_test_code=True, inbox_bytes=64 << 10)
    with WorkerPool(cfg) as p:
        yield p


def test_inputs_in_the_inbox_give_a_bare_runs_output(lease: WorkerPool) -> None:
    for seed, rows in ((1, 1), (2, 7), (3, 64)):
        req = _mlp(seed, rows)
        res = lease.run(req)
        assert res.inputs_via == "inbox"
        assert res.output == _bare(req)  # exact tier: bit for bit


def test_inputs_over_the_inbox_size_travel_as_a_file(lease: WorkerPool) -> None:
    big = _mlp(4, 2000)
    assert len(big.inputs) > 64 << 10
    res = lease.run(big)
    assert res.inputs_via == "file"
    assert res.output == _bare(big)
    small = _mlp(5, 3)  # and the next small job uses the inbox again
    res = lease.run(small)
    assert res.inputs_via == "inbox" and res.output == _bare(small)


def test_a_worker_attacking_its_inbox_harms_only_itself(lease: WorkerPool) -> None:
    slot = lease._all[0]
    assert slot.inbox is not None
    res = lease.run(code_job(ATTACK))
    out = formats.parse_safetensors(res.output, "outputs")
    assert bool(out["found"][0])
    assert int(out["size_seen"][0]) == 64 << 10
    # the seals hold: shrinking and growing refused (a shrunk region would make the
    # supervisor's next write fault with SIGBUS), no write seal can be added
    assert out["errnos"].tolist() == [errno.EPERM] * 3
    assert bool(out["punched"][0])  # allowed: the supervisor's next write gets new pages
    assert os.fstat(slot.inbox.fd).st_size == 64 << 10
    seals = fcntl.fcntl(slot.inbox.fd, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
    assert not seals & fcntl.F_SEAL_WRITE
    # the supervisor writes the next job's inputs over the garbage: a correct result
    for seed, rows in ((6, 2), (7, 5)):
        req = _mlp(seed, rows)
        res = lease.run(req)
        assert res.inputs_via == "inbox" and res.output == _bare(req)


def test_an_inbox_refuses_what_does_not_fit_and_is_sealed() -> None:
    inbox = Inbox(4096)
    try:
        assert inbox.put(b"x" * 4096) == 4096
        with pytest.raises(ValueError, match="do not fit"):
            inbox.put(b"x" * 4097)
        seals = fcntl.fcntl(inbox.fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_SEAL
        with pytest.raises(PermissionError):
            os.ftruncate(inbox.fd, 0)
    finally:
        inbox.close()
    with pytest.raises(ValueError, match="closed"):
        inbox.put(b"x")
    with pytest.raises(ValueError, match="positive"):
        Inbox(0)


def test_the_workers_view_of_the_inbox_gives_the_written_tensors() -> None:
    """The GPU worker's path up to the device copy: its mapping of the region (another
    mapping of the same memfd), tensors as views of it (stview), equal to a parse."""
    from node.runtime import stview
    from node.runtime.inbox import InboxView

    inbox = Inbox(1 << 20)
    try:
        view = InboxView(os.dup(inbox.fd), torch)
        for seed, dtype in ((1, torch.float32), (2, torch.bfloat16), (3, torch.float16)):
            g = torch.Generator().manual_seed(seed)
            tensors = {"x": torch.randn(5, 3, 8, generator=g).to(dtype), "ids": torch.arange(9)}
            data = formats.save_safetensors(tensors)
            n = inbox.put(data)
            got = stview.tensors_from_buffer(view.buf, n, "inputs")
            assert got.keys() == tensors.keys()
            for k, t in tensors.items():
                assert got[k].dtype == t.dtype and torch.equal(got[k], t)
            # views of the shared pages, not copies: the supervisor's next write shows
            base = view.buf.data_ptr()
            assert base <= got["x"].data_ptr() < base + n
            assert view.data(n) == data
        with pytest.raises(ValueError, match="at most"):
            view.data((1 << 20) + 1)
    finally:
        inbox.close()


def test_a_replaced_worker_gets_a_new_inbox(lease: WorkerPool) -> None:
    slot = lease._all[0]
    before = slot.inbox
    assert before is not None
    with pytest.raises(JobError) as info:  # past its deadline: the worker is replaced
        lease.run(code_job("import time\ntime.sleep(60)", timeout_s=0.5))
    assert info.value.code == "timeout"
    req = _mlp(8, 4)
    res = lease.run(req)
    assert slot.inbox is not None and slot.inbox is not before
    assert before._map is None  # the old region was closed with its worker
    assert res.inputs_via == "inbox" and res.output == _bare(req)


def test_finished_lease_job_dirs_are_deleted_during_the_next_job(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    cfg = PoolConfig(mode="lease", timeout_s=10.0, work_dir=str(tmp_path / "work"))
    with WorkerPool(cfg) as lease:
        if lease.tier < 2:
            pytest.skip(f"host gives sandbox tier {lease.tier}")
        scratch = lease._all[0].scratch
        for seed in range(4):
            lease.run(_mlp(seed, 2))
            # the job just finished keeps its dir until the next job runs: never more
            assert len(list(scratch.iterdir())) == 1
    assert not list(scratch.iterdir())  # and close deleted the last one
