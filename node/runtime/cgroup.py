"""Per-job cgroups (memory, pids, cpu) on cgroup v1 or a delegated cgroup v2 subtree.

v1 (this evaluation VM): one directory per controller under
``/sys/fs/cgroup/{memory,pids,cpu}/<name>``. v2: one directory under the delegated
root (``GPUNET_CGROUP_ROOT`` or the process's own cgroup when it has ``memory`` and
``pids`` in ``cgroup.subtree_control``). Names are unique per supervisor process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Final

V1_ROOT: Final = Path("/sys/fs/cgroup")
_CONTROLLERS_V1: Final = ("memory", "pids", "cpu")


class CgroupError(OSError):
    """A cgroup could not be created or configured."""


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(exc.errno, f"write {path}: {exc.strerror}") from None


def detect() -> tuple[str, str]:
    """(``"v1"``|``"v2"``|``""``, detail) — which hierarchy we can write, and why not."""
    if os.geteuid() != 0 and not os.environ.get("GPUNET_CGROUP_ROOT"):
        return "", "not root and no delegated GPUNET_CGROUP_ROOT"
    v2root = v2_root()
    if v2root is not None:
        probe = v2root / f"gpunet-probe-{os.getpid()}"
        try:
            probe.mkdir()
            probe.rmdir()
            return "v2", f"delegated subtree {v2root}"
        except OSError as exc:
            return "", f"cgroup v2 at {v2root} not writable: {exc.strerror}"
    missing = [c for c in _CONTROLLERS_V1 if not (V1_ROOT / c / "tasks").exists()]
    if missing:
        return "", f"cgroup v1 controllers missing: {missing}; no usable v2 subtree"
    name = f"gpunet-probe-{os.getpid()}"
    try:
        for c in _CONTROLLERS_V1:
            (V1_ROOT / c / name).mkdir()
    except OSError as exc:
        return "", f"cgroup v1 not writable: {exc.strerror}"
    finally:
        for c in _CONTROLLERS_V1:
            with contextlib.suppress(OSError):
                (V1_ROOT / c / name).rmdir()
    return "v1", "cgroup v1 memory+pids+cpu writable"


def v2_root() -> Path | None:
    """The delegated v2 directory we may create children in, if any."""
    env = os.environ.get("GPUNET_CGROUP_ROOT")
    if env:
        return Path(env)
    if not (V1_ROOT / "cgroup.controllers").exists():
        return None
    rel = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                rel = line[3:].lstrip("/")
    root = V1_ROOT / rel
    # A process may not live in an inner node that has controllers enabled; use the
    # parent of our own cgroup's siblings only when delegation is explicit.
    ctl = (root / "cgroup.subtree_control").read_text().split() if root.exists() else []
    return root if {"memory", "pids"} <= set(ctl) else None


class Cgroup:
    """One cgroup (a directory per controller on v1), created on construction."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        if kind == "v1":
            self.dirs = [V1_ROOT / c / name for c in _CONTROLLERS_V1]
        else:
            root = v2_root()
            if root is None:
                raise CgroupError(2, "no delegated cgroup v2 root")
            self.dirs = [root / name]
        for d in self.dirs:
            try:
                d.mkdir(exist_ok=True)
            except OSError as exc:
                raise CgroupError(exc.errno, f"mkdir {d}: {exc.strerror}") from None

    def _dir(self, controller: str) -> Path:
        if self.kind == "v2":
            return self.dirs[0]
        return V1_ROOT / controller / self.name

    def limit(self, *, memory: int | None, pids: int | None, cpus: float | None) -> None:
        """Set memory (bytes, swap off where possible), pids and CPU quota (cores)."""
        mem, pid, cpu = self._dir("memory"), self._dir("pids"), self._dir("cpu")
        if self.kind == "v1":
            if memory is not None:
                _write(mem / "memory.limit_in_bytes", str(memory))
                if (mem / "memory.memsw.limit_in_bytes").exists():
                    _write(mem / "memory.memsw.limit_in_bytes", str(memory))
                with contextlib.suppress(CgroupError):
                    _write(mem / "memory.swappiness", "0")
            if pids is not None:
                _write(pid / "pids.max", str(pids))
            if cpus is not None:
                _write(cpu / "cpu.cfs_period_us", "100000")
                _write(cpu / "cpu.cfs_quota_us", str(max(1000, int(cpus * 100000))))
        else:
            if memory is not None:
                _write(mem / "memory.max", str(memory))
                with contextlib.suppress(CgroupError):
                    _write(mem / "memory.swap.max", "0")
            if pids is not None:
                _write(pid / "pids.max", str(pids))
            if cpus is not None:
                _write(cpu / "cpu.max", f"{max(1000, int(cpus * 100000))} 100000")

    def add(self, pid: int) -> None:
        """Move ``pid`` into this cgroup (every controller)."""
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        """Processes currently in the cgroup."""
        out: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return sorted(out)

    def peak_memory(self) -> int | None:
        """Peak memory charged to this cgroup (bytes), if the kernel reports it."""
        mem = self._dir("memory")
        name = "memory.max_usage_in_bytes" if self.kind == "v1" else "memory.peak"
        try:
            return int((mem / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def reset_peak(self) -> None:
        """Restart peak-memory tracking (between two jobs of one reused cgroup)."""
        mem = self._dir("memory")
        name = "memory.max_usage_in_bytes" if self.kind == "v1" else "memory.peak"
        with contextlib.suppress(OSError):
            (mem / name).write_text("0")

    def oom_kills(self) -> int:
        """How many processes of this cgroup the kernel OOM-killed so far."""
        mem = self._dir("memory")
        name = "memory.oom_control" if self.kind == "v1" else "memory.events"
        try:
            for line in (mem / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            return 0
        return 0

    def kill(self, *, wait: bool = True) -> None:
        """SIGKILL everything in the cgroup (``cgroup.kill`` on v2); with ``wait``, until empty."""
        if self.kind == "v2" and (self.dirs[0] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.dirs[0] / "cgroup.kill", "1")
            if not wait:
                return
        for _ in range(20 if wait else 1):
            pids = self.pids()
            if not pids:
                return
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            if wait:
                time.sleep(0.005)

    def destroy(self) -> None:
        """Kill what is left and remove the directories."""
        self.kill()
        for d in self.dirs:
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def sweep_stale(kind: str) -> list[str]:
    """Remove empty ``gpunet-<pid>-*`` cgroups whose supervisor process is gone."""
    roots = [V1_ROOT / c for c in _CONTROLLERS_V1] if kind == "v1" else [v2_root()]
    removed: list[str] = []
    for root in roots:
        if root is None or not root.is_dir():
            continue
        for d in sorted(root.glob("gpunet-*-*"), reverse=True):  # jobs before slots
            pid = d.name.split("-")[1]
            if not pid.isdigit() or Path(f"/proc/{pid}").exists():
                continue
            with contextlib.suppress(OSError):
                d.rmdir()
                removed.append(str(d))
    return removed
