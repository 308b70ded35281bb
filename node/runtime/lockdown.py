"""In-process lockdown: uid drop, rlimits, no-new-privs, Landlock, seccomp.

Runs inside the bubblewrap sandbox, in two stages:

* :func:`zygote_stage` once in the zygote, **before** ``import torch`` (which starts a
  thread): uid drop, rlimits, NO_NEW_PRIVS, not dumpable, Landlock over the runtime
  (read-only) and the slot's scratch root (read-write), seccomp ``zygote`` profile.
* :func:`job_stage` in each forked child: a second, narrower Landlock domain (its own
  scratch dir only, no ``/proc``), per-job rlimits (CPU, file size, address space on
  CPU), the stricter seccomp ``job`` profile (no new processes).

Both refuse to run unless the process has exactly one thread (fail closed), since
Landlock before ABI 8 confines only the calling thread. Imports only the standard
library, so it can run before torch is imported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import resource
import time
from collections.abc import Iterable, Mapping

from . import landlock, seccomp

_PR_SET_DUMPABLE = 4
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class LockdownError(RuntimeError):
    """A layer that was asked for could not be applied (the job must not run)."""


def thread_count() -> int:
    """Threads of this process, from /proc/self/task."""
    return len(os.listdir("/proc/self/task"))


def _single_threaded() -> None:
    n = thread_count()
    if n != 1:
        raise LockdownError(f"refusing to lock down with {n} threads (need exactly 1)")


def drop_uid(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` with no supplementary groups and verify no capability is left."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise LockdownError("uid drop did not take")
    with open("/proc/self/status", encoding="ascii") as f:
        caps = {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
    if int(caps.get("CapEff", "1"), 16) or int(caps.get("CapPrm", "1"), 16):
        raise LockdownError("capabilities left after uid drop")


def set_rlimits(limits: Mapping[str, int | None]) -> None:
    """Apply ``{name: soft=hard}`` rlimits (``cpu``, ``fsize``, ``nofile``, ``as``, ``core``)."""
    table = {
        "cpu": resource.RLIMIT_CPU,
        "fsize": resource.RLIMIT_FSIZE,
        "nofile": resource.RLIMIT_NOFILE,
        "as": resource.RLIMIT_AS,
        "core": resource.RLIMIT_CORE,
    }
    for name, value in limits.items():
        if value is None:
            continue
        res = table[name]
        _soft, hard = resource.getrlimit(res)
        v = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (v, v))


def set_job_budget(*, cpu_s: int, fsize: int) -> tuple[int, int]:
    """Give the job that comes next its own CPU and file-size budget (a reused child).

    RLIMIT_CPU counts a process's whole life, so a child that serves several jobs
    raises its **soft** CPU limit to the CPU it has used so far (rounded up) plus this
    job's ``cpu_s``; the soft file-size limit becomes ``fsize``. Both stay below the
    hard limits set when the child was prepared (``job_stage``), which bound the
    child's whole life. Returns the (cpu, fsize) soft limits now in force.
    """
    cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    used = math.ceil(time.process_time())  # every thread: what RLIMIT_CPU counts
    cpu = used + max(1, int(cpu_s))
    if cpu_hard != resource.RLIM_INFINITY:
        cpu = min(cpu, cpu_hard)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu_hard))
    fs_hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    fs = fsize if fs_hard == resource.RLIM_INFINITY else min(fsize, fs_hard)
    resource.setrlimit(resource.RLIMIT_FSIZE, (fs, fs_hard))
    return cpu, fs


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG SIGKILL: die when the supervisor thread that started us exits."""
    _libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)
    if os.getppid() == 1:  # the supervisor died before the prctl
        os._exit(1)


def not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: no core dumps, no ptrace attach or /proc/pid/mem by same uid."""
    _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def zygote_stage(
    *,
    layers: Iterable[str],
    uid: int | None,
    read: Iterable[str],
    write: Iterable[str],
    devices: Iterable[str] = (),
    scope: bool = True,
    rlimits: Mapping[str, int | None] | None = None,
    seccomp_now: bool = True,
) -> list[str]:
    """Lock the zygote (or a lease worker) down; return the layers applied."""
    want = set(layers)
    _single_threaded()
    done: list[str] = []
    if "uid" in want and uid is not None and os.getuid() == 0:
        drop_uid(uid, uid)
        done.append("uid")
    if "rlimits" in want:
        set_rlimits({"core": 0, "nofile": 256, **(rlimits or {})})
        done.append("rlimits")
    seccomp.no_new_privs()
    not_dumpable()
    if "landlock" in want:
        landlock.restrict(read, write, devices=devices, scope=scope)
        done.append("landlock")
    if "seccomp" in want and seccomp_now:
        seccomp.install("zygote")
        done.append("seccomp")
    return done


def job_stage(
    *,
    layers: Iterable[str],
    read: Iterable[str],
    write: Iterable[str],
    devices: Iterable[str] = (),
    scope: bool = True,
    rlimits: Mapping[str, int | None],
    check_threads: bool = True,
    profile: str = "job",
) -> list[str]:
    """Narrow a forked child to one job; return the layers applied.

    ``profile``: the seccomp profile (``job``, or ``job-allow`` for CPU job processes).
    """
    want = set(layers)
    if check_threads:
        _single_threaded()
    done: list[str] = []
    if "rlimits" in want:
        set_rlimits(rlimits)
        done.append("rlimits")
    seccomp.no_new_privs()
    not_dumpable()
    if "landlock" in want:
        landlock.restrict(read, write, devices=devices, scope=scope)
        done.append("landlock")
    if "seccomp" in want:
        seccomp.install(profile)
        done.append("seccomp")
    return done
