"""A job that swaps its own job dir for a symlink must not make the supervisor read
(or delete) through it: the output is read without following any link below the slot's
scratch root (docs/security.md, "Paths the sandbox controls")."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
import torch
from conftest import code_job, mlp_job

from node.runtime import detect, formats
from node.runtime.errors import JobError
from node.runtime.pool import PoolConfig, WorkerPool, _read_below

#: Runs in the lease worker: its report is sent only after its job dir (``scratch``,
#: whose output the worker has just written) was renamed away, the real output deleted
#: and ``PUT`` run to put something in its place. Wrapping the worker's report function
#: stands in for an escaped process's thread winning that race every time.
SWAP = """
import os, sys
z = sys.modules["node.runtime.zygote"]
send = z._send
def swap(ev):
    z._send = send
    if ev.get("ev") == "done" and os.path.exists(scratch + "/output.safetensors"):
        os.rename(scratch, scratch + ".away")
        os.unlink(scratch + ".away/output.safetensors")
        PUT
    send(ev)
z._send = swap
outputs = {"y": torch.arange(4.0)}
"""


def test_a_lease_job_swapping_its_dir_for_a_symlink_gets_an_error(
    host_report: detect.SandboxReport, tmp_path: Path
) -> None:
    if host_report.tier < 2:
        pytest.skip(f"host gives sandbox tier {host_report.tier}")
    # another tenant's dir on the host, holding exactly the bytes the job reports: only
    # the path check can tell the planted file from the real one
    plant = tmp_path / "other-tenant"
    plant.mkdir()
    data, digest = formats.encode_outputs({"y": torch.arange(4.0)})
    (plant / "output.safetensors").write_bytes(data)
    cfg = PoolConfig(mode="lease", timeout_s=5.0, allow_test_code=True)
    with WorkerPool(cfg) as lease:
        plain = lease.run(code_job('outputs = {"y": torch.arange(4.0)}'))
        assert plain.output_sha256 == digest  # the job's real output is the planted one
        with pytest.raises(JobError) as info:
            lease.run(code_job(SWAP.replace("PUT", f"os.symlink({str(plant)!r}, scratch)")))
        assert info.value.code == "crashed" and "symlink" in info.value.message
        # nothing was deleted through the link either
        assert (plant / "output.safetensors").read_bytes() == data
        assert lease.run(mlp_job(seed=4)).output_sha256  # the pool still serves
    assert (plant / "output.safetensors").read_bytes() == data


def test_a_lease_job_leaving_a_fifo_for_its_dir_does_not_block_the_supervisor(
    host_report: detect.SandboxReport,
) -> None:
    if host_report.tier < 2:
        pytest.skip(f"host gives sandbox tier {host_report.tier}")
    cfg = PoolConfig(mode="lease", timeout_s=5.0, allow_test_code=True)
    with WorkerPool(cfg) as lease:
        errors: list[JobError] = []

        def attack() -> None:
            with pytest.raises(JobError) as info:
                lease.run(code_job(SWAP.replace("PUT", "os.mkfifo(scratch)")))
            errors.append(info.value)

        t = threading.Thread(target=attack)
        t.start()
        t.join(10.0)
        blocked = t.is_alive()
        if blocked:  # open the FIFO's other end from the host: the supervisor goes on
            for entry in lease._all[0].scratch.iterdir():
                if stat.S_ISFIFO(entry.lstat().st_mode):
                    os.close(os.open(entry, os.O_WRONLY | os.O_NONBLOCK))
            t.join()
        assert not blocked, "the supervisor blocked on a FIFO the job left"
        assert errors and errors[0].code == "crashed"
        assert lease.run(mlp_job(seed=4)).output_sha256  # the pool still serves


def test_the_reader_refuses_a_symlink_on_any_component(tmp_path: Path) -> None:
    """The function level, on a real tree: base/b1/j2/output.safetensors."""
    base = tmp_path / "slot0"
    (base / "b1" / "j2").mkdir(parents=True)
    (base / "b1" / "j2" / "output.safetensors").write_bytes(b"mine")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "output.safetensors").write_bytes(b"theirs")
    parts = ("b1", "j2", "output.safetensors")
    assert _read_below(base, parts, 16) == b"mine"
    for link in (base / "b1", base / "b1" / "j2", base / "b1" / "j2" / "output.safetensors"):
        os.rename(link, f"{link}.away")
        os.symlink(elsewhere if link.name != "output.safetensors" else elsewhere / link.name, link)
        with pytest.raises(JobError) as info:
            _read_below(base, parts, 16)
        assert info.value.code == "crashed" and "symlink" in info.value.message
        link.unlink()
        os.rename(f"{link}.away", link)
    assert _read_below(base, parts, 16) == b"mine"
    with pytest.raises(JobError, match="outside"):
        _read_below(base, ("..", "elsewhere", "output.safetensors"), 16)
    os.mkfifo(base / "b1" / "fifo")
    with pytest.raises(JobError, match="not a regular file"):
        _read_below(base, ("b1", "fifo"), 16)
    with pytest.raises(JobError) as big:
        _read_below(base, parts, 3)
    assert big.value.code == "output_too_large"


def test_an_output_that_differs_from_the_report_is_refused(
    host_report: detect.SandboxReport,
) -> None:
    """The worker reports its output's size, not its hash (the supervisor hashes what it
    reads); an output file that grew after the report fails the job."""
    if host_report.tier < 2:
        pytest.skip(f"host gives sandbox tier {host_report.tier}")
    cfg = PoolConfig(mode="lease", timeout_s=5.0, allow_test_code=True)
    with WorkerPool(cfg) as lease:
        plain = lease.run(code_job('outputs = {"y": torch.arange(4.0)}'))
        assert plain.output_sha256 == hashlib.sha256(plain.output).digest()
        grow = SWAP.replace(
            'os.rename(scratch, scratch + ".away")\n'
            '        os.unlink(scratch + ".away/output.safetensors")\n'
            "        PUT",
            'open(scratch + "/output.safetensors", "ab").write(b"x")',
        )
        assert grow != SWAP
        with pytest.raises(JobError) as info:
            lease.run(code_job(grow))
        assert info.value.code == "crashed" and "report" in info.value.message
        assert lease.run(mlp_job(seed=4)).output_sha256  # the pool still serves
