"""The sandbox's shape: layer names, mounts and the bubblewrap command line of a worker.

Mount layout inside a worker (everything else does not exist there):

==================  ==========================================================
``/usr`` (+ links)  host ``/usr`` read-only; ``/lib``, ``/bin`` ... symlinks
python prefix       the interpreter's ``sys.base_prefix``, read-only, same path
venv                ``sys.prefix`` (torch, safetensors), read-only, same path
``/opt/gpunet``     this package's ``node/`` directory only, read-only
``/blobs``          content-addressed weights (read-only)
``/scratch``        this slot's scratch root (read-write); a job gets ``/scratch/<id>``
``/tmp``            a private tmpfs
``/proc`` ``/dev``  a new procfs (own pid namespace) and a minimal ``/dev``
GPU                 only the assigned ``/dev/nvidia*`` nodes (+ driver files, ro)
==================  ==========================================================

The node's keystore, home directory, ``/etc`` (except ``ld.so.cache``) and the rest of
the host are not mounted; the environment is cleared (``--clearenv``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

#: Every isolation layer, in the order of docs/runtime.md.
LAYERS: Final = (
    "key_separation",
    "uid",
    "bwrap",
    "landlock",
    "landlock_tcp",
    "landlock_scope",
    "seccomp",
    "cgroup",
    "rlimits",
    "wallclock",
    "output_cap",
    "clean_env",
)

CODE_ROOT: Final = Path(__file__).resolve().parents[2]  # the directory holding node/
IN_CODE: Final = "/opt/gpunet"
#: Our packages a worker can read (node.runtime depends on torch, stdlib and protocol).
CODE_PACKAGES: Final = ("node", "protocol")
_BOOT: Final = "import sys; sys.path.insert(0, {!r}); from node.runtime.zygote import main; main()"
BOOT: Final = _BOOT.format(IN_CODE)
#: Worker environment (both launch modes).
ENV: Final = {
    "PATH": "/usr/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    # transparent huge pages for large CPU tensors: a forked child starts with a
    # cold heap, and 4 KiB faults doubled ResNet-50 batch-64 time (880k -> 65k faults)
    "THP_MEM_ALLOC_ENABLE": "1",
    # torch.cuda asks getpass.getuser(); the worker uid has no passwd entry
    "USER": "gpunet-job",
    "LOGNAME": "gpunet-job",
}
#: Fork-mode (CPU zygote) workers also back glibc's heap with huge pages: fork copies,
#: and exit frees, one page-table entry per 4 KiB page of the zygote's ~220 MB heap.
FORK_ENV: Final = {**ENV, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
#: Landlock rules a CUDA worker gets beyond a CPU worker's (which already read /proc,
#: /dev, /sys and use the assigned /dev/nvidia* nodes read-write + ioctl): on an H200
#: (driver 580), CUDA init fails with error 304 unless the worker may write under its
#: own /proc/<pid> (``/proc/self`` resolves when the rule is added, in the worker);
#: scripts/bench/gpu_landlock_probe.py measures this (docs/runtime.md §5).
GPU_LANDLOCK: Final[dict[str, tuple[str, ...]]] = {
    "read": (),
    "write": ("/proc/self",),
    "devices": (),
}
NO_EXTRA: Final[dict[str, tuple[str, ...]]] = {"read": (), "write": (), "devices": ()}


def worker_env(device: str, *, fork: bool) -> dict[str, str]:
    """The whole environment of a worker on ``device``: :data:`FORK_ENV` for fork-mode
    zygotes, else :data:`ENV`; on CUDA plus the host's ``LD_LIBRARY_PATH`` entries under
    ``/usr`` or the interpreter's prefixes (where images put the driver's ``libcuda``;
    nothing else of the host's environment passes)."""
    env = dict(FORK_ENV if fork else ENV)
    if device.startswith("cuda"):
        roots = tuple({"/usr/", sys.base_prefix.rstrip("/") + "/", sys.prefix.rstrip("/") + "/"})
        dirs = [
            d
            for d in os.environ.get("LD_LIBRARY_PATH", "").split(":")
            if d.startswith(roots) and ".." not in d and os.path.isdir(d)
        ]
        if dirs:
            env["LD_LIBRARY_PATH"] = ":".join(dirs)
    return env


@dataclasses.dataclass(frozen=True)
class RuntimePaths:
    """Host paths a worker needs read-only."""

    python: str
    prefix: str
    venv: str

    @classmethod
    def current(cls) -> RuntimePaths:
        """The running interpreter's paths (the worker uses the same interpreter)."""
        venv = sys.prefix
        python = str(Path(venv) / "bin" / "python") if venv != sys.base_prefix else sys.executable
        return cls(python=python, prefix=sys.base_prefix, venv=venv)

    def read_paths(self, code: str = IN_CODE) -> list[str]:
        """Read-only paths of the Landlock rules of a job (``code``: the directory
        holding node/ and protocol/, the only packages of ours a worker imports)."""
        packages = [f"{code}/{name}" for name in CODE_PACKAGES]
        return sorted({"/usr", "/etc/ld.so.cache", self.prefix, self.venv, *packages})


def gpu_nodes(device: str) -> list[str]:
    """``/dev/nvidia*`` nodes a worker on ``device`` (``cuda:N``) needs."""
    if not device.startswith("cuda"):
        return []
    index = device.partition(":")[2] or "0"
    names = [f"/dev/nvidia{index}", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
    return [n for n in names if os.path.exists(n)]


def bwrap_argv(
    *,
    paths: RuntimePaths,
    scratch_root: str,
    blobs: str,
    root_mode: bool,
    uid: int,
    device: str,
    config: Mapping[str, object],
    tmpfs_bytes: int = 256 << 20,
    env: Mapping[str, str] = ENV,
) -> list[str]:
    """The full ``bwrap ... python -I -B -c BOOT <config>`` command of one worker.

    ``root_mode``: the supervisor is root, so bwrap runs without a user namespace and
    keeps only CAP_SETUID/CAP_SETGID for the zygote's own uid drop to ``uid`` (a user
    namespace would leave the job as host uid 0). Otherwise bwrap maps ``uid`` in a new
    user namespace (no host uid separation).
    """
    bwrap = shutil.which("bwrap") or "bwrap"
    argv = [bwrap, "--die-with-parent", "--new-session"]
    argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    argv += ["--unshare-cgroup-try"]
    if root_mode:
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--uid", str(uid), "--gid", str(uid), "--cap-drop", "ALL"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for link in ("lib", "lib64", "bin", "sbin"):
        target = os.readlink(f"/{link}") if os.path.islink(f"/{link}") else None
        if target is not None:
            argv += ["--symlink", target, f"/{link}"]
    argv += ["--perms", "0755", "--dir", "/etc"]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmpfs_bytes)]
    argv += ["--perms", "1777", "--tmpfs", "/tmp"]
    made: set[str] = {"/", "/usr", "/tmp", "/proc", "/dev"}
    for p in sorted({paths.prefix, paths.venv}):
        for parent in reversed(Path(p).parents):
            if str(parent) not in made:  # bwrap would create it 0700: unreachable after uid drop
                argv += ["--perms", "0755", "--dir", str(parent)]
                made.add(str(parent))
        argv += ["--ro-bind", p, p]
    argv += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", IN_CODE]
    for name in CODE_PACKAGES:
        argv += ["--ro-bind", str(CODE_ROOT / name), f"{IN_CODE}/{name}"]
    argv += ["--ro-bind", blobs, "/blobs", "--bind", scratch_root, "/scratch"]
    for node in gpu_nodes(device):
        argv += ["--dev-bind", node, node]
    if device.startswith("cuda"):
        argv += ["--ro-bind-try", "/proc/driver/nvidia", "/proc/driver/nvidia"]
        argv += ["--ro-bind-try", "/sys", "/sys"]
    argv += ["--clearenv"]
    for k, v in env.items():
        argv += ["--setenv", k, v]
    argv += ["--chdir", "/tmp", "--", paths.python, "-I", "-B", "-c", BOOT, json.dumps(config)]
    return argv


def direct_argv(*, paths: RuntimePaths, config: Mapping[str, object]) -> list[str]:
    """The worker command without bubblewrap (hosts where bwrap cannot run: tier <= 1).

    Same interpreter, isolated mode; the caller passes :func:`worker_env` as the whole
    environment. The zygote then relies on uid, Landlock, seccomp, cgroup and rlimits.
    """
    boot = _BOOT.format(str(CODE_ROOT))
    return [paths.python, "-I", "-B", "-c", boot, json.dumps(config)]


def unreachable_for_other_uids(paths: list[str]) -> list[str]:
    """Paths a dropped uid could not reach without bwrap (an ancestor lacks o+x, e.g.
    an interpreter under ``/root``, mode 0700); bwrap re-creates the parents 0755."""
    bad = []
    for p in paths:
        target = Path(p)
        if not target.exists():
            continue
        for d in [*reversed(target.parents), target]:
            mode = d.stat().st_mode
            need = stat.S_IXOTH if d != target or d.is_dir() else stat.S_IROTH
            if not mode & need:
                bad.append(f"{p} (blocked at {d})")
                break
    return bad
