"""Sandboxed worker processes: the spawner thread and one slot (a bwrap'd zygote).

A slot owns one worker (``bwrap ... python -I -B -c <boot>`` running :mod:`.zygote`),
its slot cgroup, the reusable job cgroup, its scratch root and, in fork mode, the
prepared child for the next job (:class:`Spare`) and the child kept for one tenant's
next job (:class:`Kept`), which its helper thread retires; :mod:`.pool` drives slots.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import queue
import select
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import sandbox, wire
from .cgroup import Cgroup, CgroupError
from .devices import cpu_isa
from .errors import JobError, SandboxUnavailable
from .inbox import Inbox
from .zygote import READY

if TYPE_CHECKING:
    from .pool import WorkerPool

log = logging.getLogger("gpunet.runtime")

START_TIMEOUT_S = 120.0  # a worker's start, a model load, a fork: answers from the zygote
#: a forked child's way to its ready byte: after-fork work, its dir, lockdown and a
#: pre-run capped by ``PoolConfig.prerun_max_ms`` (~6 ms measured, docs/benchmarks.md);
#: a child still not ready after this is stalled (e.g. reclaiming under its job's memory
#: limit) and is dropped rather than holding a job
READY_TIMEOUT_S = 20.0
_Spawn = tuple[list[str], Path, bool, dict[str, str], tuple[int, ...]]


class Spawner:
    """One long-lived thread that starts every worker.

    bwrap's ``--die-with-parent`` is PR_SET_PDEATHSIG, which fires when the *thread*
    that forked it exits; so workers are forked from a thread that lives as long as
    the pool, never from a caller's (possibly short-lived) thread.
    """

    def __init__(self) -> None:
        self._q: queue.Queue[tuple[_Spawn, Future[subprocess.Popen[bytes]]] | None]
        self._q = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="gpunet-spawner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._q.get()) is not None:
            (argv, log_path, debug, env, fds), fut = item
            try:
                with open(log_path, "ab") as log:
                    fut.set_result(
                        subprocess.Popen(
                            argv,
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=log if debug else subprocess.DEVNULL,
                            close_fds=True,
                            pass_fds=fds,
                            env=env,
                            start_new_session=True,
                        )
                    )
            except OSError as exc:
                fut.set_exception(exc)

    def spawn(
        self,
        argv: list[str],
        log: Path,
        debug: bool,
        env: dict[str, str],
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` from the spawner thread and return its Popen."""
        fut: Future[subprocess.Popen[bytes]] = Future()
        self._q.put(((argv, log, debug, env, pass_fds), fut))
        return fut.result()

    def close(self) -> None:
        """Stop the thread (workers it started must already be stopped)."""
        self._q.put(None)
        self._thread.join()


@dataclasses.dataclass(eq=False)
class Spare:
    """A forked, locked-down child waiting for the next job of its slot (fork mode)."""

    nspid: int  # pid inside the sandbox (its scratch dir is ``n<nspid>``)
    host_pid: int
    pidfd: int  # for race-free kill and exit detection
    go: int  # write end of its job pipe
    rep: int  # read end of its report pipe
    keys: frozenset[str]  # model cache keys in its snapshot of the zygote
    cg: Cgroup | None = None  # its job cgroup (moved in before it became ready)
    cpu0_ms: float = -1.0  # CPU time when it became ready (-1: not yet); the job pays the rest
    oom0: int = 0  # its job cgroup's OOM kill count when it became ready
    #: held while its ready byte is awaited, and by :meth:`Slot.release`: the helper's
    #: check and a job thread's release of the same child never overlap
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    released: bool = False  # killed, fds closed, cgroup given back

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def exited(self) -> bool:
        return bool(select.select([self.pidfd], [], [], 0)[0])

    def close(self) -> None:
        for fd in (self.go, self.rep, self.pidfd):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclasses.dataclass(eq=False)
class Kept:
    """A child kept after its job for the same tenant's next job (fork mode).

    ``key`` is (tenant, model cache key, determinism tier): only a job with the same
    key may use it. ``root`` is its scratch dir (its Landlock domain allows writes
    there only): every later job gets a fresh sub-directory of it.
    """

    sp: Spare
    key: tuple[bytes, str, int]
    root: Path
    jobs: int  # jobs it has run so far
    last: float  # time.monotonic() of its last report
    reader: wire.Reader  # its report pipe (frames may already be buffered in it)


class Slot:
    """One sandboxed worker."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.uid = pool.config.base_uid + index
        self.scratch = pool.work / f"slot{index}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cg: Cgroup | None = None
        self.zygote_pid = 0
        self.oom_before = 0
        # fork mode: children prepared for coming jobs, each in one of the job cgroups
        self.ready: collections.deque[Spare] = collections.deque()
        self.job_cgs: list[Cgroup] = []
        self.free_cgs: list[Cgroup] = []
        self.done_pids: list[int] = []  # children the zygote may reap
        self.next_spec: dict[str, Any] = {"model": None}
        self.trash: list[Path] = []  # finished jobs' scratch dirs, for the helper to delete
        self.lease_done: list[Path] = []  # lease mode: finished job dirs, deleted later
        # finished jobs' children (and whether the zygote reaped them), for the helper to
        # kill and release off the jobs' path
        self.retiring: list[tuple[Spare, bool]] = []
        # fork mode: a child kept for its tenant's next job (retired by the helper when
        # idle over ``keep_idle_s``, and when any other job takes this slot)
        self.kept: Kept | None = None
        self._wake = threading.Event()  # the helper waiting on a kept child: work came
        self._settling = False  # settle() is joining the helper: it must not wait
        self.fdsock: socket.socket | None = None
        self.inbox: Inbox | None = None  # lease mode: the shared region for job inputs
        self.lock = threading.RLock()
        self._prep: threading.Thread | None = None
        self._prep_running = False
        self._prep_failed = False
        self._stopping = False  # stop() has begun: the helper's failures are expected
        self.layers: tuple[str, ...] = ()

    def start(self) -> None:
        cfg, pool = self.pool.config, self.pool
        with self.lock:
            self._stopping = False
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
                str(sandbox.CODE_ROOT),
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
            "job_rlimits": pool.job_rlimits(None, None),
            "cpu_life": pool.child_cpu_life(),
            "threads": cfg.threads,
            "prerun_max_ms": cfg.prerun_max_ms,
            "devices": [*devices, *gpu["devices"]],
            "fsize": cfg.max_output_bytes + (16 << 20),
            "cache_entries": cfg.cache_entries,
            "warm_max_elements": cfg.warm_max_elements,
            "allow_test_code": cfg.allow_test_code,
            "enable_v2": cfg.enable_v2 and pool.tier >= 2,
            "debug": cfg.debug,
        }
        env = sandbox.worker_env(cfg.device, fork=cfg.mode == "fork")
        theirs = None
        if cfg.mode == "fork":  # the zygote passes each child's pipes over this socket
            self.fdsock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            zcfg["fdsock"] = theirs.fileno()
        elif cfg.inbox_bytes > 0:  # lease mode: job inputs through shared memory
            if self.inbox is not None:
                self.inbox.close()
            self.inbox = Inbox(cfg.inbox_bytes)
            zcfg["inbox_fd"] = self.inbox.fd
        if jailed:
            argv = sandbox.bwrap_argv(
                paths=paths,
                scratch_root=str(self.scratch),
                blobs=str(pool.blobs),
                root_mode=pool.root,
                uid=self.uid,
                device=cfg.device,
                config=zcfg,
                env=env,
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
        fds = () if theirs is None else (theirs.fileno(),)
        if self.inbox is not None:
            fds = (self.inbox.fd,)
        try:
            self.proc = pool.spawner.spawn(
                argv, pool.work / f"slot{self.index}.log", cfg.debug, env, fds
            )
        finally:
            if theirs is not None:
                theirs.close()
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
        if not cfg.device.startswith("cuda") and hello.get("isa") != cpu_isa():
            # the runtime id names the host's kernels: a worker that picked others would
            # attest results a verifier's bare run cannot reproduce (exact tier)
            self.stop()
            raise SandboxUnavailable(
                f"worker {self.index} runs {hello.get('isa')!r} CPU kernels, the host {cpu_isa()!r}"
            )
        if "cgroup" in pool.layers and cfg.mode == "fork":
            # job cgroups are reused, emptied and reset between jobs (creating and
            # removing three v1 directories per job cost ~10 ms): one per prepared
            # child plus one for the running job, each holding at most one process
            # a quota of exactly `threads` cores throttled a 1-thread ResNet-18 job from
            # 70 to 150 ms here (CFS bandwidth slices): leave one core of headroom
            cpus = cfg.cpus if cfg.cpus is not None else float(cfg.threads) + 1.0
            for k in range(max(1, cfg.spares) + 1):
                cg = Cgroup(pool.cgroup_kind, f"{pool.name}-slot{self.index}-job{k}")
                self.job_cgs.append(cg)
                cg.limit(memory=cfg.memory_bytes, pids=cfg.pids_max, cpus=cpus)
            self.free_cgs = list(self.job_cgs)

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            kept, self.kept = self.kept, None
            if kept is not None:
                self.retiring.append((kept.sp, False))
        self._wake.set()
        self.drop_ready()
        self.release_retired()
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
        with self.lock:
            self.done_pids = []
            cgs, self.job_cgs, self.free_cgs = [*self.job_cgs, self.cg], [], []
            trash, self.trash = self.trash, []
        for path in trash:
            shutil.rmtree(path, ignore_errors=True)
        for cg in cgs:
            if cg is not None:
                cg.destroy()
        self.cg = None
        if self.fdsock is not None:
            self.fdsock.close()
            self.fdsock = None
        if self.inbox is not None:
            self.inbox.close()
            self.inbox = None

    # ------------------------------------------------------------ fork mode
    def take(self, key: str | None) -> Spare | None:
        """A ready child for a job whose model has cache ``key`` (None: no model).

        Children that died, or whose snapshot of the cache lacks the model, are
        dropped (the next jobs most likely use the same model).
        """
        while True:
            with self.lock:
                if not self.ready:
                    return None
                sp = self.ready.popleft()
            if not sp.exited() and (key is None or key in sp.keys):
                try:
                    self._await_ready(sp)
                    return sp
                except (wire.WireError, JobError):  # (prepared for another job: retry)
                    pass
            self._drop(sp)

    def drop_ready(self) -> None:
        """Kill every prepared child (they never saw a job)."""
        with self.lock:
            while self.ready:
                self._drop(self.ready.popleft())

    def _drop(self, sp: Spare) -> None:
        self.release(sp, reaped=False)
        shutil.rmtree(self.scratch / f"n{sp.nspid}", ignore_errors=True)

    def release(self, sp: Spare, *, reaped: bool) -> None:
        """Kill ``sp``, free its job cgroup, let the zygote reap it (unless it did).

        The kill comes first, so a ready check in progress (the helper's) ends at once;
        the fds and the cgroup are let go only after it (never under ``self.lock``: a
        thread holding it may be waiting for ``sp.lock``).
        """
        sp.kill()
        with sp.lock:
            if sp.released:
                return
            sp.released = True
            sp.close()
            cg, sp.cg = sp.cg, None
        with self.lock:
            if cg is not None:
                self.free_cgs.append(cg)
            if not reaped:
                self.done_pids.append(sp.nspid)

    def retire(self, sp: Spare, *, reaped: bool, spec: dict[str, Any], trash: Path | None) -> None:
        """A job is done with ``sp``: the helper kills it (and its job cgroup), releases
        it and prepares the next child (:meth:`refill`), so none of that (~2 ms of
        signals and bookkeeping here) delays the job's result."""
        with self.lock:
            self.retiring.append((sp, reaped))
            running = self.proc is not None
        if running:
            self.refill(spec, () if trash is None else (trash,))
        else:  # no helper will come: now
            self.release_retired()
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)

    def release_retired(self) -> None:
        """Kill and release the children of :meth:`retire` (before any new child takes a
        job cgroup: each holds one until released)."""
        with self.lock:
            retiring, self.retiring = self.retiring, []
        for sp, reaped in retiring:
            sp.kill()
            if sp.cg is not None:
                sp.cg.kill(wait=False)
            self.release(sp, reaped=reaped)

    def request_spare(
        self,
        *,
        model: dict[str, Any] | None,
        shapes: dict[str, Any] | None = None,
        deterministic: bool = False,
        idle: bool = False,
    ) -> Spare:
        """Have the zygote fork a child for a coming job; take its pipes; confine it.

        ``model``: load this model first (the next job's), or warm it for ``shapes``
        (the last job's). With ``idle`` (the helper) it returns before the child is
        ready, and :meth:`take` waits for that. Only one thread at a time may call
        this (the helper, or the caller after :meth:`settle`). Raises
        :class:`JobError` when the zygote cannot load the model,
        ``WireError``/``OSError`` when the worker is out of step.
        """
        with self.lock:
            reap, self.done_pids = self.done_pids, []
        msg: dict[str, Any] = {"op": "spare", "reap": reap, "idle": idle}
        msg.update(model=model, shapes=shapes, deterministic=deterministic)
        wire.send(self.wfd, msg)
        try:
            ev = self.reader.recv(time.monotonic() + START_TIMEOUT_S)
        except TimeoutError:
            raise wire.WireError("the worker did not fork a child") from None
        if ev.get("ev") == "error_job":
            raise JobError(str(ev.get("code", "bad_model")), str(ev.get("msg", ""))[:500])
        if ev.get("ev") != "spare" or self.fdsock is None:
            raise wire.WireError(f"expected a spare child, got {str(ev)[:60]}")
        _, fds, _, _ = socket.recv_fds(self.fdsock, 16, 2)
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            raise wire.WireError("the worker did not pass the child's pipes")
        nspid = int(ev["pid"])
        host_pid = self.child_host_pid(nspid)
        try:
            if host_pid is None:
                raise wire.WireError("could not find the new child")
            pidfd = os.pidfd_open(host_pid)
        except BaseException:
            for fd in fds:
                os.close(fd)
            with self.lock:
                self.done_pids.append(nspid)
            raise
        sp = Spare(nspid, host_pid, pidfd, fds[0], fds[1], frozenset(ev.get("keys", ())))
        try:
            with contextlib.suppress(OSError):  # the job, never the zygote, is the OOM victim
                Path(f"/proc/{host_pid}/oom_score_adj").write_text("1000")
            if self.job_cgs:
                with self.lock:
                    late = not self.free_cgs and bool(self.retiring)
                if late:  # a kept child retired since the helper's last round holds one
                    self.release_retired()
                with self.lock:
                    sp.cg = self.free_cgs.pop() if self.free_cgs else None
                if sp.cg is None:
                    raise wire.WireError("no free job cgroup")
                sp.cg.kill(wait=False)  # an earlier job's child, if it is still exiting
                sp.oom0 = sp.cg.oom_kills()
                sp.cg.add(host_pid)
            if not idle:
                self._await_ready(sp)
        except BaseException:
            self._drop(sp)
            raise
        return sp

    def _await_ready(self, sp: Spare) -> None:
        """Wait for the child's ready byte: its own dir and lockdown are in place.

        No job is handed to a child before this (children prepared ahead are
        checked when taken, so their preparation overlaps the next fork). Raises
        :class:`JobError` ``oom`` when the job's memory limit killed the child on its
        way (every child would meet that limit: the job cannot run, the worker is
        fine), ``WireError`` when it died otherwise or was not ready within
        :data:`READY_TIMEOUT_S`.
        """
        with sp.lock:  # the helper and a job may both check
            if sp.released:
                raise wire.WireError("the prepared child was released")
            if sp.cpu0_ms >= 0:
                return
            deadline = time.monotonic() + READY_TIMEOUT_S
            while (left := deadline - time.monotonic()) > 0:
                if select.select([sp.rep], [], [], left)[0]:
                    if os.read(sp.rep, 1) != READY:
                        break
                    if sp.cg is not None:  # the job's peak and OOM count start here
                        sp.cg.reset_peak()
                        sp.oom0 = sp.cg.oom_kills()
                    sp.cpu0_ms = cpu_ms(sp.host_pid)  # it now blocks until its job
                    return
            else:
                raise wire.WireError(
                    f"the prepared child was not ready within {READY_TIMEOUT_S:.0f} s"
                )
            if sp.cg is not None and sp.cg.oom_kills() > sp.oom0:
                raise JobError(
                    "oom",
                    "the job's memory limit killed its child before the job started "
                    f"(limit {self.pool.config.memory_bytes} bytes)",
                )
            raise wire.WireError("the prepared child died before it was ready")

    def take_kept(self, key: tuple[bytes, str, int] | None) -> Kept | None:
        """The kept child for a job with ``key`` (None: a job that may not reuse one).

        A kept child with another key, or one that died while idle, is retired (the
        helper kills and releases it, off this job's path) and None is returned: the
        job takes a fresh prepared child.
        """
        with self.lock:
            kept, self.kept = self.kept, None
        if kept is None:
            return None
        if key is not None and kept.key == key and not kept.sp.exited():
            return kept
        self.retire_kept(kept)
        return None

    def keep(self, kept: Kept) -> None:
        """Hold ``kept`` for its tenant's next job (a previous one is retired)."""
        with self.lock:
            old, self.kept = self.kept, kept
        if old is not None:
            self.retire_kept(old)
        self.refill()  # the helper now waits for its expiry

    def retire_kept(self, kept: Kept) -> None:
        """Have the helper kill and release a kept child and delete its scratch dir."""
        trash = None if self.pool.config.keep_scratch else kept.root
        with self.lock:
            self.retiring.append((kept.sp, False))
            running = self.proc is not None
            if running and trash is not None:
                self.trash.append(trash)
        if running:
            self.refill()
        else:  # no helper will come: now
            self.release_retired()
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)

    @property
    def kept_key(self) -> tuple[bytes, str, int] | None:
        """The key of the kept child, if any (slot choice; it may expire meanwhile)."""
        with self.lock:
            return None if self.kept is None else self.kept.key

    def take_dir(self, sp: Spare, job_id: str) -> Path:
        """Rename the spare's own scratch dir to the job's; check what it is first."""
        src, dst = self.scratch / f"n{sp.nspid}", self.scratch / job_id
        st = os.lstat(src)
        if not stat.S_ISDIR(st.st_mode) or ("uid" in self.pool.layers and st.st_uid != self.uid):
            raise OSError(f"{src} is not the child's scratch dir")
        os.rename(src, dst)
        return dst

    def reap_wait(self, nspid: int) -> dict[str, Any]:
        """Exit status and rusage of a child that died on its own (from the zygote).

        The caller must have joined the helper (:meth:`settle`): one user of the pipe.
        """
        wire.send(self.wfd, {"op": "reap", "pid": nspid})
        try:
            ev = self.reader.recv(time.monotonic() + START_TIMEOUT_S)
        except TimeoutError:
            raise wire.WireError("the worker did not reap its child") from None
        if ev.get("ev") != "reaped":
            raise wire.WireError(f"expected a reaped child, got {str(ev)[:60]}")
        return ev

    def refill(self, spec: dict[str, Any] | None = None, trash: Iterable[Path] = ()) -> None:
        """Prepare children up to ``PoolConfig.spares`` in a helper thread.

        ``spec`` (``model``, ``shapes``, ``deterministic`` of the last job; None: keep
        the current one) is what the next children are warmed for. A helper that is
        still running picks it up. ``trash``: the last job's scratch dirs, deleted by
        the helper. The helper also retires children (:meth:`retire`,
        :meth:`retire_kept`) and, while the slot keeps a child, waits for its expiry.
        """
        with self.lock:
            if spec is not None:
                self.next_spec = spec
            self.trash.extend(trash)
            if self._prep_running or self.proc is None:
                self._wake.set()
                return
            self._prep_running = True
            old, self._prep = self._prep, None
        if old is not None:
            old.join()  # it has finished (or is finishing) its last round

        def run() -> None:
            try:
                while True:
                    self.release_retired()  # first: their job cgroups become free
                    with self.lock:
                        trash, self.trash = self.trash, []
                    for path in trash:
                        shutil.rmtree(path, ignore_errors=True)
                    wait_s = None
                    with self.lock:
                        held = self.kept
                        expired = held is not None and self._expired(held)
                        if expired:
                            self.kept = None
                    if expired and held is not None:  # idle too long, or died
                        self.retire_kept(held)
                        continue
                    with self.lock:
                        held = self.kept
                        want = self.pool.config.spares - len(self.ready)
                        spec = dict(self.next_spec)
                        waiting = [sp for sp in self.ready if sp.cpu0_ms < 0]
                        idle = want <= 0 and not waiting and not self.retiring
                        # stop() wakes a helper waiting on a kept child: it must not
                        # ask the dying worker for a spare (and wait for its answer)
                        stopped = self.proc is None or self._stopping
                        if stopped or (idle and (held is None or self._settling)):
                            self._prep_running = False
                            return
                        if idle and held is not None:
                            wait_s = self._expiry(held) - time.monotonic()
                    if wait_s is not None:  # a kept child: retire it when it expires
                        self._wake.wait(max(0.0, wait_s))
                        self._wake.clear()
                        continue
                    if want <= 0:  # full: take the ready checks off the jobs' path
                        for sp in waiting:
                            try:
                                self._await_ready(sp)
                            except (wire.WireError, JobError, OSError):
                                with self.lock:
                                    mine = sp in self.ready
                                    if mine:
                                        self.ready.remove(sp)
                                if mine:
                                    self._drop(sp)
                        continue
                    sp = self.request_spare(**spec, idle=True)
                    with self.lock:
                        kept = self.proc is not None
                        if kept:
                            self.ready.append(sp)
                    if not kept:
                        self._drop(sp)
            except Exception:  # any failure (logged): the worker is replaced
                with self.lock:
                    stopping = self._stopping
                    self._prep_failed = not stopping
                    self._prep_running = False
                if stopping:  # its worker was stopped under it (pool shutdown, a restart)
                    log.debug("slot %d: child preparation ended by stop", self.index)
                else:
                    log.warning("slot %d: preparing a child failed", self.index, exc_info=True)

        self._prep = threading.Thread(target=run, name=f"gpunet-slot{self.index}-prep")
        self._prep.start()

    def _expiry(self, kept: Kept) -> float:
        return kept.last + self.pool.config.keep_idle_s

    def _expired(self, kept: Kept) -> bool:
        return time.monotonic() >= self._expiry(kept) or kept.sp.exited()

    @property
    def prep_failed(self) -> bool:
        """The helper failed: :meth:`settle` replaces the worker."""
        return self._prep_failed

    def settle(self) -> None:
        """Join the helper of :meth:`refill`; replace the worker if it failed.

        A helper waiting for a kept child's expiry stops waiting (the next job's
        :meth:`refill` starts it again)."""
        with self.lock:
            self._settling = True
        self._wake.set()
        try:
            if self._prep is not None:
                self._prep.join()
                self._prep = None
        finally:
            with self.lock:
                self._settling = False
        if self._prep_failed:
            self._prep_failed = False
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


def cpu_ms(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far (``schedstat``: ns resolution)."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            path = f"/proc/{pid}/task/{tid}/schedstat"
            with contextlib.suppress(OSError, ValueError, IndexError), open(path) as f:
                total += int(f.read().split()[0])
    return total / 1e6


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
