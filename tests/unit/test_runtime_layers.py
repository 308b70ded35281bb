"""Layer primitives, tier mapping, host detection, wire framing, descriptor, devices."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import pytest

from node.runtime import descriptor, detect, devices, landlock, lockdown, seccomp, wire
from node.runtime.sandbox import LAYERS, RuntimePaths

ALL = frozenset(LAYERS)


def _in_child(fn: object) -> int:
    """Run ``fn`` in a forked child; its return value (an int) is the exit status."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = fn()  # type: ignore[operator]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize(
    ("drop", "tier"),
    [
        (set(), 2),
        ({"landlock_scope"}, 2),  # scoping is extra (and impossible on GPU workers)
        ({"landlock_tcp"}, 1),
        ({"uid"}, 1),  # user namespace instead
        ({"cgroup"}, 1),  # RLIMIT_AS still caps memory on CPU
        ({"bwrap", "uid"}, 0),
        ({"landlock", "landlock_tcp", "landlock_scope"}, 1),  # bwrap still fences files
        ({"landlock", "landlock_tcp", "landlock_scope", "bwrap"}, 0),
        ({"seccomp"}, 0),
        ({"key_separation"}, 0),
    ],
)
def test_tier_mapping(drop: set[str], tier: int) -> None:
    assert detect.tier_of(ALL - drop) == tier


def test_report_matches_the_host() -> None:
    rep = detect.check()
    assert list(rep.layers) == list(LAYERS)
    assert rep.landlock_abi == landlock.abi_version()
    assert rep.layers["landlock"].ok == (rep.landlock_abi >= 1)
    assert rep.layers["landlock_tcp"].ok == (rep.landlock_abi >= 4)
    assert rep.layers["seccomp"].ok == seccomp.supported()
    assert rep.layers["uid"].ok == (os.geteuid() == 0)
    assert rep.tier == detect.tier_of(rep.available)
    text = rep.to_text()
    assert f"sandbox tier: {rep.tier}" in text and len(text.splitlines()) == len(LAYERS) + 1
    assert rep.to_dict()["tier"] == rep.tier


def test_a_keystore_inside_a_worker_mount_fails_closed() -> None:
    paths = RuntimePaths.current()
    rep = detect.check([Path(paths.venv) / "keystore.json"])
    assert not rep.layers["key_separation"].ok
    assert rep.tier == 0


def test_seccomp_programs() -> None:
    zyg, job = seccomp.build("zygote"), seccomp.build("job")
    assert len(zyg) % 8 == 0 and len(job) > len(zyg)
    ks = {struct.unpack("=HBBI", job[i : i + 8])[3] for i in range(0, len(job), 8)}
    assert {57, 58, 59, 41, 101} <= ks  # fork, vfork, execve, socket, ptrace
    with pytest.raises(ValueError):
        seccomp.build("nope")


@pytest.mark.skipif(not seccomp.supported(), reason="no seccomp table for this architecture")
def test_seccomp_job_profile_blocks_fork_exec_socket_but_not_threads() -> None:
    def child() -> int:
        import socket

        seccomp.install("job")
        for attempt in (os.fork, socket.socket, lambda: os.execv("/bin/true", ["true"])):
            try:
                attempt()
                return 1
            except OSError:
                pass
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        return 0

    assert _in_child(child) == 0


@pytest.mark.skipif(not seccomp.supported(), reason="no seccomp table for this architecture")
def test_seccomp_job_allowlist_denies_by_default() -> None:
    def child() -> int:
        import ctypes
        import errno
        import socket

        libc = ctypes.CDLL(None, use_errno=True)
        seccomp.install("job-allow")
        for attempt in (os.fork, socket.socket, lambda: os.execv("/bin/true", ["true"])):
            try:
                attempt()
                return 1
            except PermissionError:  # the deny-list answers first, as in ``job``
                pass
        if libc.syscall(100, None) != -1 or ctypes.get_errno() != errno.ENOSYS:  # times
            return 2  # not on the allowlist: ENOSYS
        if libc.syscall(16, 0, 0x541B, None) != -1 or ctypes.get_errno() != errno.ENOTTY:
            return 3  # ioctl FIONREAD: only TCGETS passes
        if libc.prctl(4, 1, 0, 0, 0) != -1 or ctypes.get_errno() != errno.EPERM:
            return 4  # prctl(PR_SET_DUMPABLE): only thread names pass
        os.isatty(0)  # TCGETS
        t = threading.Thread(target=lambda: None)  # threads, files and time still work
        t.start()
        t.join()
        with open("/proc/self/status", encoding="ascii") as f:
            f.read()
        time.sleep(0.001)
        return 0

    assert _in_child(child) == 0
    prog = seccomp.build("job-allow")
    ks = {struct.unpack("=HBBI", prog[i : i + 8])[3] for i in range(0, len(prog), 8)}
    assert set(seccomp.JOB_ALLOW.values()) <= ks and len(prog) // 8 < 4096


@pytest.mark.skipif(landlock.abi_version() < 1, reason="kernel without Landlock")
def test_landlock_fences_files(tmp_path: Path) -> None:
    allowed, denied = tmp_path / "a", tmp_path / "b"
    allowed.mkdir()
    denied.mkdir()

    def child() -> int:
        landlock.restrict(["/usr"], [str(allowed)])
        (allowed / "ok").write_text("x")
        try:
            (denied / "no").write_text("x")
            return 1
        except PermissionError:
            return 0

    assert _in_child(child) == 0
    assert (allowed / "ok").exists() and not (denied / "no").exists()


def test_lockdown_refuses_a_multithreaded_process() -> None:
    def child() -> int:
        ev = threading.Event()
        t = threading.Thread(target=ev.wait)
        t.start()
        try:
            lockdown.job_stage(layers=(), read=(), write=(), rlimits={})
            return 1
        except lockdown.LockdownError:
            return 0
        finally:
            ev.set()
            t.join()

    assert _in_child(child) == 0


def test_wire_round_trip_and_limits() -> None:
    r, w = os.pipe()
    try:
        wire.send(w, {"a": 1, "b": [1, 2]})
        reader = wire.Reader(r)
        assert reader.recv() == {"a": 1, "b": [1, 2]}
        os.write(w, (wire.MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(wire.WireError):
            reader.recv()
        with pytest.raises(TimeoutError):
            wire.Reader(r).recv(0)
    finally:
        os.close(r)
        os.close(w)


def test_descriptor_round_trip_and_validation() -> None:
    text = descriptor.describe(
        torch_version="2.13.0+cpu",
        device_class="cpu-avx512",
        catalog="v1-0123456789abcdef",
        determinism=0,
        threads=2,
        fmt="catalog-v1",
    )
    assert text == (
        "gpunet-rt/1 torch=2.13.0+cpu device=cpu-avx512 catalog=v1-0123456789abcdef "
        "det=exact threads=2 fmt=catalog-v1"
    )
    assert descriptor.parse(text)["det"] == "exact"
    with pytest.raises(ValueError):
        descriptor.describe(
            torch_version="2.13 evil=1",
            device_class="cpu",
            catalog="c",
            determinism=0,
            threads=1,
            fmt="catalog-v1",
        )
    with pytest.raises(ValueError):
        descriptor.parse("other/1 torch=1")


def test_device_inventory_and_classes() -> None:
    inv = devices.inventory()
    cpu = inv.devices[0]
    assert cpu.kind == "cpu" and cpu.memory_bytes > 0 and cpu.cores >= 1
    assert cpu.device_class.startswith("cpu-")
    assert inv.to_dict()["devices"][0]["device_class"] == cpu.device_class
    assert devices.Device("cuda", 0, "NVIDIA H200", 0).device_class == "nvidia-h200"
    assert devices.Device("cuda", 0, "NVIDIA A100-SXM4-80GB", 0).device_class == "nvidia-a100"
    assert devices.Device("cuda", 0, "NVIDIA H100 PCIe", 0).device_class == "nvidia-h100"


def test_stale_cgroups_of_dead_supervisors_are_swept() -> None:
    from node.runtime import cgroup

    kind, why = cgroup.detect()
    if kind != "v1":
        pytest.skip(f"needs a writable cgroup v1 hierarchy here: {why or kind}")
    dead = cgroup.Cgroup(kind, "gpunet-999999999-0-slot0")
    mine = cgroup.Cgroup(kind, f"gpunet-{os.getpid()}-sweeptest")
    try:
        removed = cgroup.sweep_stale(kind)
        assert all(not d.exists() for d in dead.dirs)
        assert any("gpunet-999999999-0-slot0" in r for r in removed)
        assert all(d.exists() for d in mine.dirs)
    finally:
        mine.destroy()
        dead.destroy()


def test_work_dirs_of_dead_pools_are_swept() -> None:
    import tempfile

    from node.runtime.pool import _sweep_work_dirs

    dead = Path(tempfile.mkdtemp(prefix="gpunet-rt-999999999-"))
    mine = Path(tempfile.mkdtemp(prefix=f"gpunet-rt-{os.getpid()}-"))
    (dead / "slot0").mkdir()
    try:
        removed = _sweep_work_dirs()
        assert str(dead) in removed and not dead.exists()
        assert mine.exists()
    finally:
        mine.rmdir()
