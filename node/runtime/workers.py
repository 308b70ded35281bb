"""Sandboxed worker processes: the spawner thread and one slot (a bwrap'd zygote).

A slot owns one worker (``bwrap ... python -I -B -c <boot>`` running :mod:`.zygote`),
its slot cgroup, the reusable job cgroup and its scratch root; :mod:`.pool` drives slots.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from . import sandbox, wire
from .cgroup import Cgroup, CgroupError
from .errors import SandboxUnavailable

if TYPE_CHECKING:
    from .pool import WorkerPool

START_TIMEOUT_S = 120.0


class Spawner:
    """One long-lived thread that starts every worker.

    bwrap's ``--die-with-parent`` is PR_SET_PDEATHSIG, which fires when the *thread*
    that forked it exits; so workers are forked from a thread that lives as long as
    the pool, never from a caller's (possibly short-lived) thread.
    """

    def __init__(self) -> None:
        self._q: queue.Queue[
            tuple[list[str], dict[str, str], Path, bool, Future[subprocess.Popen[bytes]]] | None
        ]
        self._q = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="gpunet-spawner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._q.get()) is not None:
            argv, env, log_path, debug, fut = item
            try:
                with open(log_path, "ab") as log:
                    fut.set_result(
                        subprocess.Popen(
                            argv,
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=log if debug else subprocess.DEVNULL,
                            close_fds=True,
                            env=env,
                            start_new_session=True,
                        )
                    )
            except OSError as exc:
                fut.set_exception(exc)

    def spawn(
        self, argv: list[str], env: dict[str, str], log: Path, debug: bool
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` with exactly ``env`` from the spawner thread; return its Popen."""
        fut: Future[subprocess.Popen[bytes]] = Future()
        self._q.put((argv, env, log, debug, fut))
        return fut.result()

    def close(self) -> None:
        """Stop the thread (workers it started must already be stopped)."""
        self._q.put(None)
        self._thread.join()


class Slot:
    """One sandboxed worker."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.uid = pool.config.base_uid + index
        self.scratch = pool.work / f"slot{index}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cg: Cgroup | None = None
        self.job_cg: Cgroup | None = None
        self.zygote_pid = 0
        self.oom_before = 0
        self.confined: int | None = None  # sandbox pid of a spare child already in job_cg
        self._prep: threading.Thread | None = None
        self._prep_failed = False
        self.layers: tuple[str, ...] = ()

    def start(self) -> None:
        cfg, pool = self.pool.config, self.pool
        if self.scratch.exists():
            shutil.rmtree(self.scratch)
        self.scratch.mkdir(mode=0o700)
        if "uid" in pool.layers:
            os.chown(self.scratch, self.uid, self.uid)
        paths = sandbox.RuntimePaths.current()
        devices = sandbox.gpu_nodes(cfg.device)
        jailed = "bwrap" in pool.layers
        if jailed:
            scratch, blobs, code = "/scratch", "/blobs", sandbox.IN_CODE
            writable = ["/scratch", "/tmp", "/dev/null"]
        else:  # no mount namespace: host paths, and no shared /tmp
            scratch, blobs, code = (
                str(self.scratch),
                str(pool.blobs),
                str(sandbox.CODE_ROOT / "node"),
            )
            writable = [scratch, "/dev/null"]
        gpu = sandbox.GPU_LANDLOCK if cfg.device.startswith("cuda") else sandbox.NO_EXTRA
        zcfg = {
            "mode": cfg.mode,
            "device": cfg.device,
            "uid": self.uid if "uid" in pool.layers else None,
            "layers": sorted(pool.layers & {"uid", "landlock", "seccomp", "rlimits"}),
            "scratch": scratch,
            "blobs": blobs,
            "pdeathsig": not jailed,
            "read": [*paths.read_paths(code), blobs, "/proc", "/dev", "/sys", *gpu["read"]],
            "write": [*writable, *gpu["write"]],
            "job_read": paths.read_paths(code),
            "devices": [*devices, *gpu["devices"]],
            "fsize": cfg.max_output_bytes + (16 << 20),
            "cache_entries": cfg.cache_entries,
            "warm_max_elements": cfg.warm_max_elements,
            "allow_test_code": cfg.allow_test_code,
            "enable_v2": cfg.enable_v2 and pool.tier >= 2,
            "debug": cfg.debug,
        }
        if jailed:
            argv = sandbox.bwrap_argv(
                paths=paths,
                scratch_root=str(self.scratch),
                blobs=str(pool.blobs),
                root_mode=pool.root,
                uid=self.uid,
                device=cfg.device,
                config=zcfg,
            )
        else:
            blocked = sandbox.unreachable_for_other_uids(paths.read_paths(code))
            if zcfg["uid"] is not None and blocked:
                raise SandboxUnavailable(
                    "without bwrap the worker uid cannot reach "
                    + "; ".join(blocked)
                    + " (install bubblewrap, or the interpreter and venv in a world-readable path)"
                )
            argv = sandbox.direct_argv(paths=paths, config=zcfg)
        self.proc = pool.spawner.spawn(
            argv, sandbox.worker_env(cfg.device), pool.work / f"slot{self.index}.log", cfg.debug
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd = self.proc.stdin.fileno()
        self.reader = wire.Reader(self.proc.stdout.fileno())
        if "cgroup" in pool.layers:
            self.cg = Cgroup(pool.cgroup_kind, f"{pool.name}-slot{self.index}")
            self.cg.limit(memory=cfg.zygote_memory_bytes, pids=cfg.pids_max * 2, cpus=None)
            for pid in [self.proc.pid, *descendants(self.proc.pid)]:
                with contextlib.suppress(CgroupError):
                    self.cg.add(pid)
        try:
            hello = self.reader.recv(time.monotonic() + START_TIMEOUT_S)
        except (TimeoutError, wire.WireError) as exc:
            self.stop()
            raise SandboxUnavailable(f"worker {self.index} did not start: {exc}") from None
        if hello.get("ev") != "hello":
            self.stop()
            raise SandboxUnavailable(f"worker {self.index} failed: {hello.get('msg')}")
        nspid = int(hello["pid"])
        found = [p for p in [self.proc.pid, *descendants(self.proc.pid)] if _nspid(p) == nspid]
        if len(found) != 1:
            self.stop()
            raise SandboxUnavailable(f"worker {self.index}: cannot find the zygote process")
        self.zygote_pid = found[0]
        self.layers = tuple(hello["layers"])
        if "cgroup" in pool.layers:
            # one job cgroup per slot, emptied and reset between jobs (creating and
            # removing three v1 directories per job cost ~10 ms)
            self.job_cg = Cgroup(pool.cgroup_kind, f"{pool.name}-slot{self.index}-job")
            # a quota of exactly `threads` cores throttled a 1-thread ResNet-18 job from
            # 70 to 150 ms here (CFS bandwidth slices): leave one core of headroom
            cpus = cfg.cpus if cfg.cpus is not None else float(cfg.threads) + 1.0
            self.job_cg.limit(memory=cfg.memory_bytes, pids=cfg.pids_max, cpus=cpus)

    def stop(self) -> None:
        self.confined = None
        if self.proc is not None:
            with contextlib.suppress(OSError, ValueError):
                wire.send(self.wfd, {"op": "exit"})
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            for f in (self.proc.stdin, self.proc.stdout):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
            self.proc = None
        for cg in (self.job_cg, self.cg):
            if cg is not None:
                cg.destroy()
        self.cg = self.job_cg = None

    def expect_spare(self, confine: Callable[[Slot], None]) -> None:
        """Run ``confine(self)`` in a helper thread until the slot is next used."""

        def work() -> None:
            try:
                confine(self)
            except (OSError, TimeoutError, ValueError, KeyError, wire.WireError):
                self._prep_failed = True  # pipe out of step: the worker is replaced

        self._prep_failed = False
        self._prep = threading.Thread(target=work, name=f"gpunet-slot{self.index}-prep")
        self._prep.start()

    def settle(self) -> None:
        """Join the helper of :meth:`expect_spare`; replace the worker if it failed."""
        if self._prep is not None:
            self._prep.join()
            self._prep = None
            if self._prep_failed:
                self.stop()

    def child_host_pid(self, nspid: int) -> int | None:
        """Host pid of the zygote's child whose pid in the sandbox is ``nspid``."""
        try:
            kids = Path(f"/proc/{self.zygote_pid}/task/{self.zygote_pid}/children").read_text()
        except OSError:
            return None
        for kid in (int(k) for k in kids.split()):
            if _nspid(kid) == nspid:
                return kid
        return None


def descendants(pid: int) -> list[int]:
    """Host pids of every descendant of ``pid`` (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{name}/stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for kid in children.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def _nspid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None
