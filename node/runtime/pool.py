"""The supervisor side: a pool of sandboxed warm workers, one job at a time per slot.

``WorkerPool(PoolConfig(...))`` probes the host (:func:`detect.check`), refuses to start
below ``min_tier`` unless ``insecure`` is set (fail closed), then starts ``slots``
workers: ``bwrap`` processes running :mod:`node.runtime.zygote` under their own uid and
cgroup. :meth:`WorkerPool.run` is thread-safe; it blocks until a slot is free.

Per job the supervisor writes the weights to the content-addressed blob directory
(once). In fork mode it then takes a child the zygote forked ahead of time (already
locked down, in a job cgroup, with its own scratch dir: see :class:`workers.Slot`),
writes the inputs there, sends it the job over its own pipe, enforces the wall clock
(pidfd kill + cgroup kill), meters its CPU time, reads at most ``max_output_bytes`` of
output and kills it; a helper thread prepares the next child meanwhile. In lease mode
the worker runs the job itself. :meth:`WorkerPool.run_batch` runs several jobs of one
tenant for the same model in one prepared child (one after the other), so the per-child
cost is paid once per batch. A job or batch with a :attr:`RunRequest.tenant` may leave
its child to the slot as a *kept child* for that tenant's next job on the same model and
tier (:meth:`WorkerPool._run_fork_batch`; docs/runtime.md §5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import math
import os
import select
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from protocol import boundedjson

from . import catalog, cgroup, descriptor, detect, sandbox, wire, zygote
from .cgroup import Cgroup
from .errors import JobError, SandboxUnavailable
from .workers import Kept, Slot, Spare, Spawner, cpu_ms

GRACE_S = 3.0  # lease mode: how long past a job's deadline the worker may take to answer
REPORT_MAX = 60_000
MAX_BATCH = zygote.MAX_BATCH  # most jobs in one run_batch call
KEPT_ACK_S = 5.0  # most seconds a kept child may take to acknowledge its next frame


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """Pool settings; every field has a default (see docs/runtime.md)."""

    slots: int = 1
    device: str = "cpu"
    mode: str = "fork"  # "fork" (CPU zygote) | "lease" (one worker per GPU lease)
    threads: int = 1  # intra-op threads per job (part of the runtime id)
    memory_bytes: int = 4 << 30  # per job (cgroup; RLIMIT_AS on CPU)
    zygote_memory_bytes: int = 6 << 30  # worker + model cache
    pids_max: int = 64
    cpus: float | None = None  # cgroup CPU quota per job, in cores (None: threads + 1)
    timeout_s: float = 60.0
    max_output_bytes: int = 64 << 20
    max_params: int = catalog.MAX_PARAMS
    cache_entries: int = 4
    warm_max_elements: int = 4 << 20  # warm a model's kernels per input shape up to this
    prerun_max_ms: float = 10.0  # a prepared child runs the last model on zeros if this quick
    spares: int = 2  # fork mode: children prepared ahead per slot (each in its own cgroup)
    #: fork mode: a child that ran a tenant's catalog-v1 job(s) cleanly is kept this long
    #: for the same tenant's next job on the same model and tier (0: never reuse one)
    keep_idle_s: float = 0.5
    keep_max_jobs: int = 256  # a kept child is retired after this many jobs
    #: lease mode: a shared-memory region per worker that jobs' inputs up to this size
    #: travel in (mapped by the worker, page-locked on a GPU); larger inputs and 0: a file
    inbox_bytes: int = 256 << 20
    blob_cache_bytes: int = 8 << 30
    min_tier: int = 2
    insecure: bool = False  # explicit operator override: run below min_tier, advertise 0
    base_uid: int = 64000
    work_dir: str | None = None
    keystores: tuple[str, ...] = ()
    layers: frozenset[str] | None = None  # None: every layer the host has
    enable_v2: bool = False  # export-v2 (.pt2) jobs: opt-in, tier 2 only
    allow_test_code: bool = False  # tests only: jobs may carry Python (the attacker model)
    debug: bool = False
    keep_scratch: bool = False  # tests only: leave job dirs for host-side inspection


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """One job for the runtime (v1: arch + config + weights; v2: a .pt2 archive)."""

    format: str
    arch: str
    config: dict[str, int]
    weights: bytes
    inputs: bytes
    determinism: int = 0
    max_output_bytes: int | None = None
    timeout_s: float | None = None
    test_code: str | None = None
    #: sha256 of ``weights`` if the caller already knows it (the job spec's content id):
    #: it keys the model cache, so a warm job does not re-hash a large model. It is
    #: verified whenever the blob is not cached yet (the only time the bytes are used).
    weights_sha256: bytes | None = None
    min_sandbox_tier: int = 0
    #: the client (its 20-byte address): a fork-mode catalog-v1 job with a tenant may
    #: run in a child kept from that tenant's previous job (docs/runtime.md §5); None:
    #: a fresh child, killed after the job
    tenant: bytes | None = None

    @classmethod
    def from_spec(
        cls, spec: Any, weights: bytes, inputs: bytes, *, tenant: bytes | None = None
    ) -> RunRequest:
        """From a :class:`protocol.messages.JobSpec` plus its blobs (and its client).

        Sizes are checked here, the inputs' hash too; the weights' hash is checked when
        the pool first stores that blob (see :attr:`weights_sha256`).
        """
        from protocol.content import cid_of

        if len(weights) != spec.model.weights_size:
            raise JobError("bad_model", "weights do not match the job spec's size")
        if cid_of(inputs).digest != spec.inputs or len(inputs) != spec.inputs_size:
            raise JobError("bad_inputs", "inputs do not match the job spec's hash/size")
        return cls(
            format=str(spec.format),
            arch=spec.model.arch,
            config=dict(spec.model.config),
            weights=weights,
            inputs=inputs,
            determinism=int(spec.determinism),
            max_output_bytes=spec.max_output_bytes,
            timeout_s=spec.max_gpu_millis / 1000,
            weights_sha256=bytes(spec.model.weights),
            min_sandbox_tier=int(spec.min_sandbox_tier),
            tenant=tenant,
        )


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What the attestation needs, plus diagnostics."""

    output: bytes
    output_sha256: bytes
    metered_millis: int
    peak_memory_bytes: int
    wall_millis: int
    runtime: str
    tier: int
    layers: tuple[str, ...]
    load_ms: float = 0.0
    infer_ms: float = 0.0
    pid: int = 0  # diagnostics: host pid of the fork-mode child that ran it (0: lease mode)
    #: diagnostics: how the inputs reached the model: "pinned" (lease mode, page-locked
    #: shared memory), "inbox" (lease mode, pageable shared memory) or "file" (a file in
    #: the job's dir: fork mode, and lease-mode inputs over the inbox's size)
    inputs_via: str = ""


class WorkerPool:
    """A pool of sandboxed workers. Use as a context manager."""

    _counter = itertools.count()

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        cfg = self.config
        if cfg.mode not in ("fork", "lease"):
            raise ValueError("mode must be 'fork' or 'lease'")
        if cfg.device.startswith("cuda") and cfg.mode == "fork":
            raise ValueError("CUDA cannot be used after fork: use mode='lease' on GPUs")
        if cfg.inbox_bytes < 0:
            raise ValueError("inbox_bytes must be >= 0")
        self.report = detect.check(cfg.keystores, device=cfg.device)
        self.root = self.report.root
        self.cgroup_kind = self.report.cgroup_kind
        wanted = set(self.report.available)
        if cfg.layers is not None:
            wanted &= set(cfg.layers) | {"wallclock", "output_cap", "clean_env", "key_separation"}
        self.layers = frozenset(wanted)
        tier = detect.tier_of(self.layers)
        if tier < cfg.min_tier and not cfg.insecure:
            raise SandboxUnavailable(
                f"sandbox tier {tier} is below the required {cfg.min_tier}; missing: "
                + ", ".join(sorted(set(sandbox.LAYERS) - self.layers))
                + " (run `gpunet runtime check`; override with insecure=True to advertise tier 0)"
            )
        self.tier = tier if tier >= cfg.min_tier else 0
        if self.report.cgroup_kind:
            cgroup.sweep_stale(self.report.cgroup_kind)
        self.name = f"gpunet-{os.getpid()}-{next(self._counter)}"
        self._own_work = cfg.work_dir is None
        if cfg.work_dir is None:
            _sweep_work_dirs()
        self.work = Path(cfg.work_dir or tempfile.mkdtemp(prefix=f"gpunet-rt-{os.getpid()}-"))
        self.work.chmod(0o711)
        self.blobs = self.work / "blobs"
        self.blobs.mkdir(exist_ok=True, mode=0o755)
        self._free: list[Slot] = []  # slots no job is using (guarded by _cond)
        self._cond = threading.Condition()
        self._all: list[Slot] = []
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._device_class = ""
        self._admitted: set[str] = set()
        self._kept_jobs = 0

    @property
    def jobs_on_kept_children(self) -> int:
        """Jobs so far that ran in a child kept from the same tenant's earlier job (§5)."""
        with self._lock:
            return self._kept_jobs

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start every slot (in parallel: each pays one ``import torch``)."""
        self.spawner = Spawner()
        slots = [Slot(self, i) for i in range(self.config.slots)]
        errors: list[BaseException] = []

        def boot(s: Slot) -> None:
            try:
                s.start()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after joining
                errors.append(exc)

        threads = [threading.Thread(target=boot, args=(s,)) for s in slots]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._all = slots
        if errors:
            self.close()
            raise errors[0]
        for s in slots:
            self._release(s)

    def close(self) -> None:
        """Stop every worker and delete the work directory (if we made it)."""
        for s in self._all:
            self._discard_lease_dirs(s)
            s.stop()
            s.settle()  # the helper sees the closed pipe and ends
        self._all = []
        if hasattr(self, "spawner"):
            self.spawner.close()
        if self._own_work:
            shutil.rmtree(self.work, ignore_errors=True)

    # ---------------------------------------------------------------- metadata
    @property
    def device_class(self) -> str:
        """``cpu-<isa>`` or ``nvidia-<model>`` (see :mod:`devices`)."""
        if not self._device_class:
            from . import devices

            if self.config.device.startswith("cuda"):
                import torch

                idx = int(self.config.device.partition(":")[2] or 0)
                name = torch.cuda.get_device_name(idx)
                self._device_class = devices.Device("cuda", idx, name, 0).device_class
            else:
                self._device_class = "cpu-" + devices.cpu_isa()
        return self._device_class

    def runtime_descriptor(self, determinism: int, fmt: str = "catalog-v1") -> str:
        """The descriptor string of results produced here (see :mod:`descriptor`)."""
        import torch

        return descriptor.describe(
            torch_version=torch.__version__,
            device_class=self.device_class,
            catalog=catalog.CATALOG_VERSION,
            determinism=determinism,
            threads=self.config.threads,
            fmt=fmt,
        )

    def capabilities(self, *, max_job_bytes: int = 1 << 30) -> Any:
        """The offer's :class:`protocol.messages.Capabilities` for this pool."""
        import torch

        from protocol.messages import Capabilities, Determinism, JobFormat

        gpu = self.config.device.startswith("cuda")
        name, mem = "", 0
        if gpu:
            idx = int(self.config.device.partition(":")[2] or 0)
            name = torch.cuda.get_device_name(idx)
            mem = torch.cuda.get_device_properties(idx).total_memory >> 20
        formats = [JobFormat.CATALOG_V1]
        if self.config.enable_v2 and self.tier >= 2:
            formats.append(JobFormat.EXPORT_V2)
        dets = [Determinism.GPU_DETERMINISTIC] if gpu else [Determinism.EXACT]
        return Capabilities(
            device_class=self.device_class,
            gpu_model=name[:64],
            gpu_memory_mib=mem,
            gpu_count=1 if gpu else 0,
            sandbox_tier=self.tier,
            formats=tuple(formats),
            determinism=(*dets, Determinism.TOLERANCE),
            runtimes=(f"torch-{torch.__version__}"[:64],),
            max_job_bytes=max_job_bytes,
            max_concurrent_jobs=self.config.slots,
        )

    # ---------------------------------------------------------------- jobs
    def _admit(self, req: RunRequest) -> None:
        if req.min_sandbox_tier > self.tier:
            raise JobError("refused", f"job needs sandbox tier {req.min_sandbox_tier}")
        if req.format not in ("catalog-v1", "export-v2"):
            raise JobError("refused", f"unknown format {req.format!r:.40}")
        if req.format == "export-v2":
            if self.tier < 2 or not self.config.enable_v2:
                raise JobError("refused", "export-v2 needs sandbox tier 2 and enable_v2")
            import torch

            from . import pt2

            pt2.validate(req.weights, torch_version=torch.__version__)
        elif req.test_code is None:
            key = f"{req.arch}|{sorted(req.config.items())}"
            if key not in self._admitted:
                catalog.build(req.arch, req.config, max_params=self.config.max_params)
                if len(self._admitted) > 1024:
                    self._admitted.clear()
                self._admitted.add(key)
        if req.determinism == 0 and self.config.device != "cpu":
            raise JobError("refused", "the exact tier runs on CPU only")
        if req.determinism == 1 and not self.config.device.startswith("cuda"):
            raise JobError("refused", "gpu-deterministic needs a GPU")

    def _store_blob(self, data: bytes, known: bytes | None) -> str:
        hexd = known.hex() if known is not None else hashlib.sha256(data).hexdigest()
        path = self.blobs / hexd
        with self._lock:
            if not path.exists():
                if known is not None and hashlib.sha256(data).digest() != known:
                    raise JobError("bad_model", "weights do not match their content id")
                tmp = self.blobs / f".{hexd}.{threading.get_ident()}"
                tmp.write_bytes(data)
                tmp.chmod(0o444)
                tmp.rename(path)
                self._evict_blobs()
        return hexd

    def _evict_blobs(self) -> None:
        files = sorted(self.blobs.iterdir(), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.config.blob_cache_bytes:
                break
            total -= p.stat().st_size
            p.unlink()

    def run(self, req: RunRequest) -> RunResult:
        """Run one job in a sandboxed worker; raise :class:`JobError` on any failure.

        A fork-mode ``catalog-v1`` job with a :attr:`RunRequest.tenant` runs as a batch
        of one (:meth:`run_batch`: the same result), so its child may be kept for that
        tenant's next job.
        """
        if self._keepable([req]):
            res = self.run_batch([req])[0]
            if isinstance(res, JobError):
                raise res
            return res
        self._admit(req)
        slot = self._acquire(None)
        try:
            self._ensure_worker(slot)
            return self._run_on(slot, req)
        finally:
            if slot.proc is not None and slot.proc.poll() is not None:
                slot.stop()
            self._release(slot)

    def _acquire(self, key: tuple[bytes, str, int] | None) -> Slot:
        """A free slot (block until one is): the one keeping a child for ``key`` if it is
        free, else one keeping none (not to retire another tenant's), else the first."""
        with self._cond:
            while not self._free:
                self._cond.wait()
            keys = [s.kept_key for s in self._free]
            i = keys.index(key) if key is not None and key in keys else -1
            if i < 0:
                i = keys.index(None) if None in keys else 0
            return self._free.pop(i)

    def _release(self, slot: Slot) -> None:
        with self._cond:
            self._free.append(slot)
            self._cond.notify()

    def _keepable(self, reqs: Sequence[RunRequest]) -> bool:
        """Whether the child of these jobs (one tenant's) may be kept afterwards."""
        cfg = self.config
        if cfg.mode != "fork" or cfg.keep_idle_s <= 0 or cfg.keep_max_jobs <= 0:
            return False
        tenant = reqs[0].tenant
        return tenant is not None and all(
            r.tenant == tenant and r.format == "catalog-v1" and r.test_code is None for r in reqs
        )

    def child_cpu_life(self) -> int | None:
        """The hard RLIMIT_CPU of a fork-mode child that may be kept (None: no reuse, a
        child's hard limit is the pool's per-job maximum). Each job on it gets its own
        soft limit on top of what it used (docs/runtime.md §5)."""
        cfg = self.config
        if cfg.mode != "fork" or cfg.keep_idle_s <= 0 or cfg.keep_max_jobs <= 0:
            return None
        return 2 * int(self.job_rlimits(None, None)["cpu"] or 0)

    @staticmethod
    def _ensure_worker(slot: Slot) -> None:
        """Replace the slot's worker if it failed (lazily: not on a failing job's path)."""
        if slot.prep_failed or slot.proc is None:
            slot.settle()  # the helper failed: the worker is replaced
        if slot.proc is None:
            try:
                slot.start()
            except SandboxUnavailable as exc:
                slot.stop()
                raise JobError("sandbox", str(exc)) from None

    def run_batch(self, reqs: Sequence[RunRequest]) -> list[RunResult | JobError]:
        """Run several jobs of **one tenant** for the same model in one slot, in order.

        The caller guarantees that every job comes from the same client: in fork mode
        they run one after the other in **one** prepared child, so a job could see the
        others' inputs and outputs (only the model is shared between tenants, as in
        :meth:`run`). Preconditions, checked before anything runs (``ValueError``):
        1 to :data:`MAX_BATCH` requests, all ``catalog-v1`` without test code, the same
        weights, arch, config and determinism tier.

        Returns one entry per request, in order: the :class:`RunResult` that
        :meth:`run` would give for it (the same output bytes; each job keeps its own
        id, scratch dir, inputs, output, output cap and timeout), or its
        :class:`JobError`; a failing job does not stop the others. Metering per job:
        ``metered_millis`` is the CPU time measured in the child around the job's own
        work plus an equal share of the rest of the child's CPU time (measured by the
        supervisor from ``schedstat``, so the jobs' sum is the child's whole CPU time
        after it became ready); ``peak_memory_bytes`` is the batch's peak (its job
        cgroup's, an upper bound of each job's); ``wall_millis`` runs from this call to
        the job's verified output. The wall clock gives each job its own timeout, from
        the previous job's report. If the child dies or a job times out, the jobs
        reported before keep their results, that job gets the error and the jobs after
        it run again in a fresh child. In lease mode the jobs simply run one by one on
        the lease worker (as :meth:`run`).
        """
        reqs = list(reqs)
        weights_sha = _check_batch(reqs)
        keepable = self._keepable(reqs)
        results: list[RunResult | JobError | None] = [None] * len(reqs)
        todo: list[int] = []
        for i, req in enumerate(reqs):
            try:
                self._admit(req)
                todo.append(i)
            except JobError as exc:
                results[i] = exc
        if not todo:
            return [r for r in results if r is not None]
        t0 = time.monotonic()
        keep_key = None
        if keepable:  # (tenant, model cache key, tier): which kept child may serve them
            first = reqs[todo[0]]
            try:
                weights_hex = self._store_blob(first.weights, weights_sha)
            except JobError as exc:
                return [exc if r is None else r for r in results]
            model = self._model_fields(first, weights_hex)
            assert first.tenant is not None
            keep_key = (first.tenant, zygote.cache_key(model), first.determinism)
        slot = self._acquire(keep_key)
        try:
            while todo:
                try:
                    self._ensure_worker(slot)
                    if self.config.mode == "lease":
                        done: list[RunResult | JobError] = [self._run_on(slot, reqs[todo[0]])]
                    else:
                        done = self._run_fork_batch(
                            slot, [reqs[i] for i in todo], weights_sha, t0, keep_key
                        )
                except JobError as exc:  # lease: this job's; fork: nothing ran
                    done = [exc] * (1 if self.config.mode == "lease" else len(todo))
                for i, res in zip(todo, done, strict=False):
                    results[i] = res
                todo = todo[len(done) :]
        finally:
            if slot.proc is not None and slot.proc.poll() is not None:
                slot.stop()
            self._release(slot)
        return [r if r is not None else JobError("crashed", "not run") for r in results]

    def job_rlimits(self, timeout: float | None, max_out: int | None) -> dict[str, int | None]:
        """A job's rlimits; with ``None`` arguments the pool-wide maximum (a child
        applies those before its job arrives, then lowers them to the job's own)."""
        cfg = self.config
        timeout = cfg.timeout_s if timeout is None else timeout
        max_out = cfg.max_output_bytes if max_out is None else max_out
        rl: dict[str, int | None] = {
            "cpu": int(timeout * max(1, cfg.threads)) + 2,
            "fsize": max_out + (1 << 20),
            "nofile": 128,
        }
        if not cfg.device.startswith("cuda"):
            rl["as"] = cfg.memory_bytes  # the child adds its inherited VmSize
        return rl

    def _message(self, req: RunRequest, job_id: str, weights_hex: str) -> dict[str, Any]:
        cfg = self.config
        max_out = min(req.max_output_bytes or cfg.max_output_bytes, cfg.max_output_bytes)
        timeout = min(req.timeout_s or cfg.timeout_s, cfg.timeout_s)
        return {
            "op": "job",
            "id": job_id,
            "format": req.format,
            "arch": req.arch,
            "config": req.config,
            "weights": weights_hex,
            "device": cfg.device,
            "threads": cfg.threads,
            "deterministic": req.determinism in (0, 1),
            "max_output_bytes": max_out,
            "max_params": cfg.max_params,
            "timeout_s": timeout,
            "rlimits": self.job_rlimits(timeout, max_out),
            "test_code": req.test_code,
        }

    def _run_on(self, slot: Slot, req: RunRequest) -> RunResult:
        t0 = time.monotonic()
        weights_hex = ""
        if req.format == "catalog-v1" and req.test_code is None:
            weights_hex = self._store_blob(req.weights, req.weights_sha256)
        msg = self._message(req, f"j{next(self._ids)}", weights_hex)
        if self.config.mode == "lease":
            return self._run_lease(slot, req, msg, t0)
        return self._run_fork(slot, req, msg, t0)

    def _write_job_files(
        self,
        slot: Slot,
        job_dir: Path,
        req: RunRequest,
        *,
        create: bool = False,
        inputs: bool = True,
    ) -> None:
        """Write ``req``'s files into ``job_dir`` (made first with ``create``, then given
        to the slot's uid), a directory below the slot's scratch root; the inputs file
        only with ``inputs``.

        Through directory fds, never the path: the sandbox may rename ``job_dir`` (or a
        directory above it) and put a symlink there meanwhile, and a root supervisor
        following it would chown or create files anywhere on the host.
        """
        *above, name = job_dir.relative_to(slot.scratch).parts
        parent = _open_dir_below(slot.scratch, above)
        try:
            if create:
                os.mkdir(_component(name), 0o700, dir_fd=parent)
            dfd = _open_below(parent, name, _DIR_FLAGS)
        finally:
            os.close(parent)
        try:
            if create and "uid" in self.layers:
                os.fchown(dfd, slot.uid, slot.uid)
            for fname, data in (("model.pt2", req.weights), ("inputs.safetensors", req.inputs)):
                if fname == "model.pt2" and req.format != "export-v2":
                    continue
                if fname == "inputs.safetensors" and not inputs:
                    continue
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                with os.fdopen(os.open(fname, flags, 0o644, dir_fd=dfd), "wb") as f:
                    f.write(data)
        finally:
            os.close(dfd)

    def _run_lease(self, slot: Slot, req: RunRequest, msg: dict[str, Any], t0: float) -> RunResult:
        """Lease mode: the worker runs the job itself; model loading counts as job time.

        Inputs that fit the slot's inbox are copied there (the worker reads them from
        the shared mapping, see :mod:`node.runtime.inbox`); others are a file in the
        job's dir, like a ``.pt2`` program.
        """
        scratch = slot.scratch / msg["id"]
        inbox = slot.inbox
        if inbox is not None and inbox.fits(len(req.inputs)):
            msg["inbox"] = inbox.put(req.inputs)
            self._write_job_files(slot, scratch, req, create=True, inputs=False)
        else:
            self._write_job_files(slot, scratch, req, create=True)
        deadline = time.monotonic() + msg["timeout_s"] + GRACE_S
        try:
            wire.send(slot.wfd, msg)
            self._discard_lease_dirs(slot)  # earlier jobs' dirs, while this one runs
            ev = slot.reader.recv(deadline)
            return self._result(
                slot=slot,
                req=req,
                ev=ev,
                scratch=scratch,
                cg=None,
                max_out=msg["max_output_bytes"],
                t0=t0,
            )
        except TimeoutError:
            slot.stop()  # the worker missed its own deadline: replace it
            raise JobError("timeout", f"no result within {msg['timeout_s']:.1f}s") from None
        except (wire.WireError, OSError) as exc:
            rc = slot.proc.poll() if slot.proc is not None else None
            slot.stop()
            raise JobError("crashed", f"worker failed: {exc} (worker exit {rc})") from None
        finally:
            if not self.config.keep_scratch:  # deleted during the slot's next job (or close)
                slot.lease_done.append(scratch)

    def _discard_lease_dirs(self, slot: Slot) -> None:
        """Delete the slot's finished lease job dirs. Called while the slot's next job
        runs in the worker: deleting a large output file (freeing its page cache) was on
        the job's path."""
        done, slot.lease_done = slot.lease_done, []
        for job_dir in done:
            self._discard_lease_dir(job_dir)

    def _discard_lease_dir(self, job_dir: Path) -> None:
        """Delete a lease job's dir, whatever the worker left in its place.

        The worker can write the slot's scratch root, so it may have put a FIFO there,
        on whose open ``shutil.rmtree`` would block forever. The entry is first renamed
        into the pool's work dir (rename follows nothing), out of the worker's reach,
        then removed as what it is.
        """
        gone = self.work / f"gone-{job_dir.parent.name}-{job_dir.name}"
        with contextlib.suppress(OSError):
            os.rename(job_dir, gone)
            if stat.S_ISDIR(os.lstat(gone).st_mode):
                shutil.rmtree(gone, ignore_errors=True)
            else:
                gone.unlink()

    def _run_fork(self, slot: Slot, req: RunRequest, msg: dict[str, Any], t0: float) -> RunResult:
        """Fork mode: hand the job to a prepared child of the slot, talk to it directly.

        The child is already forked, confined in its job cgroup and locked down, with
        its own scratch dir; usually it was prepared while earlier jobs ran
        (:meth:`Slot.refill`). It gets one job frame, writes the output file and a
        report, and is killed once the supervisor has read its CPU time.
        """
        model = None
        if msg["weights"]:
            model = self._model_fields(req, msg["weights"])
            msg["cache_key"] = zygote.cache_key(model)
        sp = self._spare(slot, model, msg.get("cache_key"))
        cg = sp.cg
        scratch = slot.scratch / msg["id"]
        reaped = reported = False
        try:
            scratch = slot.take_dir(sp, msg["id"])
            self._write_job_files(slot, scratch, req)
            slot.oom_before = sp.oom0  # (the peak was reset when the child became ready)
            wire.send(sp.go, msg)
            report, exited = _await_report(sp, msg["timeout_s"])
            reported = True
            if exited:  # it died (or exited) on its own: status and rusage from the zygote
                slot.settle()
                if slot.proc is None:
                    raise wire.WireError("the worker failed while preparing a child")
                ev = slot.reap_wait(sp.nspid)
                ev["cpu_ms"] = max(0.0, float(ev.get("cpu_ms", 0.0)) - sp.cpu0_ms)
                reaped = True
            else:
                ev = {"status": 0, "cpu_ms": cpu_ms(sp.host_pid) - sp.cpu0_ms, "maxrss": 0}
                if cg is None:
                    ev["maxrss"] = _hwm(sp.host_pid)
            ev.update(ev="done", report=report, pid=sp.host_pid)
            return self._result(
                slot=slot,
                req=req,
                ev=ev,
                scratch=scratch,
                cg=cg,
                max_out=msg["max_output_bytes"],
                t0=t0,
            )
        except TimeoutError:
            raise JobError("timeout", "killed at the wall-clock deadline") from None
        except (wire.WireError, OSError) as exc:
            rc = slot.proc.poll() if slot.proc is not None else None
            slot.stop()
            raise JobError("crashed", f"worker failed: {exc} (worker exit {rc})") from None
        finally:
            self._finish_child(
                slot,
                sp,
                reaped=reaped,
                reported=reported,
                scratch=scratch,
                next_spec=lambda: self._next_spec(req, model, msg),
            )

    def _finish_child(
        self,
        slot: Slot,
        sp: Spare,
        *,
        reaped: bool,
        reported: bool,
        scratch: Path,
        next_spec: Callable[[], dict[str, Any]],
    ) -> None:
        """Hand a job's child to the slot's helper, which kills it (and its cgroup),
        releases it and prepares the next child (which also clears ``scratch``): the
        caller gets its result without waiting for any of that. A child that has not
        reported everything (a timeout, a crash, a broken protocol) is killed here
        first, at once."""
        if not reported:
            sp.kill()
            if sp.cg is not None:
                sp.cg.kill(wait=False)
        trash = None if self.config.keep_scratch else scratch
        slot.retire(sp, reaped=reaped, spec=next_spec(), trash=trash)

    @staticmethod
    def _spare(slot: Slot, model: dict[str, Any] | None, key: str | None) -> Spare:
        """A prepared child whose cache holds ``model`` (key ``key``), ready for a job.

        A child the slot kept for a tenant is retired (not this job's)."""
        slot.take_kept(None)
        sp = slot.take(key)
        try:
            if sp is None:  # wait for the helper; else fork one on this job's critical path
                slot.settle()
                if slot.proc is None:  # the helper failed (logged): one fresh worker
                    try:
                        slot.start()
                    except SandboxUnavailable as exc:
                        slot.stop()
                        raise JobError("sandbox", str(exc)) from None
                sp = slot.take(key)
            if sp is None:
                slot.drop_ready()  # they lack this model
                sp = slot.request_spare(model=model)
        except (wire.WireError, OSError) as exc:
            rc = slot.proc.poll() if slot.proc is not None else None
            slot.stop()
            raise JobError("crashed", f"worker failed: {exc} (worker exit {rc})") from None
        return sp

    def _run_fork_batch(
        self,
        slot: Slot,
        reqs: list[RunRequest],
        weights_sha: bytes | None,
        t0: float,
        keep_key: tuple[bytes, str, int] | None = None,
    ) -> list[RunResult | JobError]:
        """Run ``reqs`` in one child; results for a prefix of them (>= 1).

        The child is the slot's kept child for ``keep_key`` (one tenant's, same model
        and tier) when it has one, else a fresh prepared child; with ``keep_key`` that
        child is kept afterwards if every job succeeded (:meth:`_keep`). Raises
        :class:`JobError` when nothing ran (model, worker or child set-up). After the
        batch frame is sent: the jobs reported before a timeout or the child's death
        keep their results, the job in progress gets the error, the rest are not run
        (the caller runs them in a fresh child).
        """
        first = reqs[0]
        weights_hex = self._store_blob(first.weights, weights_sha)
        bid = f"b{next(self._ids)}"
        msgs = [self._message(r, f"j{next(self._ids)}", weights_hex) for r in reqs]
        model = self._model_fields(first, weights_hex)
        key = zygote.cache_key(model)
        rlimits = dict(msgs[0]["rlimits"])  # the pool's at most: CPU adds up, FSIZE the largest
        rlimits["cpu"] = min(
            sum(m["rlimits"]["cpu"] for m in msgs), self.job_rlimits(None, None)["cpu"] or 0
        )
        rlimits["fsize"] = max(m["rlimits"]["fsize"] for m in msgs)
        frame: dict[str, Any] = {"op": "batch", "id": bid, "cache_key": key}
        frame.update(rlimits=rlimits, jobs=msgs)
        if keep_key is not None:
            frame["keep"] = True  # the child waits for a next frame after its reports
        kept = self._reuse(slot, slot.take_kept(keep_key), reqs, msgs, frame)
        if kept is not None:
            sp, root = kept.sp, kept.root
        else:
            sp = self._spare(slot, model, key)
            root = slot.scratch / bid
        cg = sp.cg
        reaped = reported = False
        done: list[tuple[dict[str, Any], bytes, bytes, int] | JobError] = []
        keep: Kept | None = None
        try:
            if kept is None:
                try:
                    root = slot.take_dir(sp, bid)
                    self._write_batch_dirs(slot, root, reqs, msgs)
                except OSError as exc:  # nothing ran: every job gets it
                    rc = slot.proc.poll() if slot.proc is not None else None
                    slot.stop()
                    raise JobError("crashed", f"worker failed: {exc} (worker exit {rc})") from None
            reader = kept.reader if kept is not None else wire.Reader(sp.rep)
            failure: JobError | None = None
            total: float | None = None  # the child's CPU ms since it became ready
            own: list[float] = []  # per reported job, measured in the child
            start = time.monotonic()  # the first job's wall clock starts with the frame
            try:
                if kept is None:  # (a kept child got its frame in _reuse)
                    wire.send(sp.go, frame)
            except OSError:  # the child died: the first job is the one in progress
                failure, reaped, total = self._batch_child_gone(slot, sp)
            # each job's deadline runs from the report before it (the first: the frame)
            for m in msgs if failure is None else []:
                deadline = start + m["timeout_s"]
                try:
                    report = reader.recv(deadline)
                    if time.monotonic() > deadline:  # read too late counts, as in run
                        raise TimeoutError
                except TimeoutError:
                    total = cpu_ms(sp.host_pid) - sp.cpu0_ms
                    sp.kill()
                    failure = JobError("timeout", "killed at the wall-clock deadline")
                    break
                except wire.WireError:  # the child died, or broke the protocol
                    failure, reaped, total = self._batch_child_gone(slot, sp)
                    break
                start = time.monotonic()
                if report.get("batch"):  # the child could run none of them (its first frame)
                    reported = True
                    err = JobError(str(report.get("code")), str(report.get("msg", ""))[:500])
                    return [err] * len(reqs)
                if report.get("id") != m["id"]:
                    sp.kill()
                    failure = JobError("crashed", "reports out of order")
                    break
                own.append(_finite_ms(report.get("cpu_ms")))
                report["cpu_ms"] = own[-1]
                try:
                    data, digest = self._verified_output(report, slot.scratch, root / m["id"], m)
                    wall = round((time.monotonic() - t0) * 1000)
                    done.append((report, data, digest, wall))
                except JobError as exc:
                    done.append(exc)
            reported = failure is None
            now_ms = None
            if failure is None and not sp.exited():
                now_ms = cpu_ms(sp.host_pid)
                total = now_ms - sp.cpu0_ms
            # the jobs' own times, scaled down if they claim more than the child used;
            # a complete batch shares the rest of the child's time equally
            scale, extra = 1.0, 0.0
            if total is not None and sum(own) > total:
                scale = max(0.0, total) / sum(own)
            elif total is not None and failure is None:
                extra = (total - sum(own)) / max(1, len(own))
            peak = (cg.peak_memory() if cg is not None else None) or _hwm(sp.host_pid)
            results = self._batch_results(
                slot, first, done, scale=scale, extra=extra, peak=peak, pid=sp.host_pid
            )
            if keep_key is not None and now_ms is not None and len(done) == len(msgs):
                keep = self._keep(
                    slot,
                    sp=sp,
                    kept=kept,
                    key=keep_key,
                    root=root,
                    reader=reader,
                    results=results,
                    now_ms=now_ms,
                )
            return results if failure is None else [*results, failure]
        finally:
            if keep is not None:
                slot.keep(keep)
                trash = [] if self.config.keep_scratch else [root / m["id"] for m in msgs]
                slot.refill(self._next_spec(reqs[-1], model, msgs[-1]), trash)
            else:  # (a kept child's whole scratch dir goes with it)
                self._finish_child(
                    slot,
                    sp,
                    reaped=reaped,
                    reported=reported,
                    scratch=root,
                    next_spec=lambda: self._next_spec(reqs[-1], model, msgs[-1]),
                )

    def _model_fields(self, req: RunRequest, weights_hex: str) -> dict[str, Any]:
        """What the zygote needs to load ``req``'s model (and its cache key)."""
        cfg = self.config
        return {
            "weights": weights_hex,
            "arch": req.arch,
            "config": req.config,
            "max_params": cfg.max_params,
            "device": cfg.device,
        }

    def _write_batch_dirs(
        self, slot: Slot, root: Path, reqs: list[RunRequest], msgs: list[dict[str, Any]]
    ) -> None:
        """One sub-directory of the child's scratch dir per job, with its inputs."""
        for req, m in zip(reqs, msgs, strict=True):
            m["dir"] = f"{root.name}/{m['id']}"
            self._write_job_files(slot, root / m["id"], req, create=True)

    def _reuse(
        self,
        slot: Slot,
        kept: Kept | None,
        reqs: list[RunRequest],
        msgs: list[dict[str, Any]],
        frame: dict[str, Any],
    ) -> Kept | None:
        """Hand ``frame`` to the slot's kept child; None (the kept child retired) if it
        cannot take it: no CPU left under its life limit, or its dirs or frame failed
        (it died while idle, or put a symlink where a job dir goes), or it did not
        acknowledge the frame within :data:`KEPT_ACK_S` (it died, e.g. killed while
        idle, before it took the frame: it acknowledges before starting on the jobs).
        The jobs then run in a fresh child, with no error."""
        if kept is None:
            return None
        sp, life = kept.sp, self.child_cpu_life() or 0
        try:
            if cpu_ms(sp.host_pid) / 1000 + frame["rlimits"]["cpu"] + 2 > life:
                raise OSError("its CPU life limit is near")
            if sp.cg is not None:  # this batch's peak and OOM count start here
                sp.cg.reset_peak()
                sp.oom0 = sp.cg.oom_kills()
            self._write_batch_dirs(slot, kept.root, reqs, msgs)
            wire.send(sp.go, frame)
            ack = kept.reader.recv(time.monotonic() + min(KEPT_ACK_S, msgs[0]["timeout_s"]))
            if ack.get("ack") != frame["id"]:
                raise wire.WireError("the kept child did not acknowledge its frame")
        except (OSError, wire.WireError, JobError, TimeoutError):
            sp.kill()
            slot.retire_kept(kept)
            return None
        with self._lock:
            self._kept_jobs += len(reqs)
        return kept

    def _keep(
        self,
        slot: Slot,
        *,
        sp: Spare,
        kept: Kept | None,
        key: tuple[bytes, str, int],
        root: Path,
        reader: wire.Reader,
        results: list[RunResult | JobError],
        now_ms: float,
    ) -> Kept | None:
        """The child to keep for ``key`` after a clean batch, else None (retire it).

        Never after any error in its jobs, past ``keep_max_jobs``, when it sent more
        than its reports, or when its worker is gone. The next job's metering starts
        from ``now_ms`` (its CPU time when the supervisor read this batch's).
        """
        jobs = (kept.jobs if kept is not None else 0) + len(results)
        clean = all(isinstance(r, RunResult) for r in results)
        extra = reader.pending() or bool(select.select([sp.rep], [], [], 0)[0])
        if not clean or extra or jobs >= self.config.keep_max_jobs or slot.proc is None:
            return None
        sp.cpu0_ms = now_ms
        return Kept(sp=sp, key=key, root=root, jobs=jobs, last=time.monotonic(), reader=reader)

    def _batch_child_gone(self, slot: Slot, sp: Spare) -> tuple[JobError, bool, float | None]:
        """The report pipe closed early or carried garbage: why, whether the child was
        reaped, and its CPU ms since it became ready (None if unknown)."""
        if not select.select([sp.pidfd], [], [], 2.0)[0]:  # alive: it broke the protocol
            total = cpu_ms(sp.host_pid) - sp.cpu0_ms
            sp.kill()
            return JobError("crashed", "the batch child sent a bad report"), False, total
        try:
            slot.settle()
            if slot.proc is None:
                raise wire.WireError("the worker failed while preparing a child")
            ev = slot.reap_wait(sp.nspid)
        except (wire.WireError, OSError) as exc:
            rc = slot.proc.poll() if slot.proc is not None else None
            slot.stop()
            return JobError("crashed", f"worker failed: {exc} (worker exit {rc})"), False, None
        status = int(ev.get("status", 0))
        err = _exit_error(status, sp.cg, sp.oom0)
        total = _finite_ms(ev.get("cpu_ms")) - sp.cpu0_ms
        return err or JobError("crashed", "the job process exited without a report"), True, total

    def _batch_results(
        self,
        slot: Slot,
        req: RunRequest,
        done: list[tuple[dict[str, Any], bytes, bytes, int] | JobError],
        *,
        scale: float,
        extra: float,
        peak: int,
        pid: int,
    ) -> list[RunResult | JobError]:
        """RunResults of the reported jobs: own CPU ms x ``scale`` + ``extra`` each."""
        out: list[RunResult | JobError] = []
        for item in done:
            if isinstance(item, JobError):
                out.append(item)
                continue
            report, data, digest, wall = item
            out.append(
                RunResult(
                    output=data,
                    output_sha256=digest,
                    metered_millis=max(1, round(float(report["cpu_ms"]) * scale + extra)),
                    peak_memory_bytes=int(peak),
                    wall_millis=wall,
                    runtime=self.runtime_descriptor(req.determinism, req.format),
                    tier=self.tier,
                    layers=self._result_layers(slot),
                    load_ms=float(report.get("load_ms", 0.0)),
                    infer_ms=float(report.get("infer_ms", 0.0)),
                    pid=pid,
                    inputs_via="file",
                )
            )
        return out

    def _result_layers(self, slot: Slot) -> tuple[str, ...]:
        return tuple(sorted(set(slot.layers) | (self.layers & {"bwrap", "cgroup"})))

    @staticmethod
    def _verified_output(
        report: dict[str, Any], base: Path, job_dir: Path, msg: dict[str, Any]
    ) -> tuple[bytes, bytes]:
        """The output file in ``job_dir`` (below ``base``, the slot's scratch root),
        capped, checked against the size the job reported (a file cut short by the file
        size limit, or written after the report, does not pass) and hashed here: the
        worker does not hash it, its hash could not be trusted anyway."""
        if not report.get("ok"):
            raise JobError(str(report.get("code", "crashed")), str(report.get("msg", "no report")))
        parts = (*job_dir.relative_to(base).parts, "output.safetensors")
        data = _read_below(base, parts, msg["max_output_bytes"])
        if len(data) != report.get("size"):
            raise JobError("crashed", "output does not match the worker's report")
        return data, hashlib.sha256(data).digest()

    @staticmethod
    def _next_spec(
        req: RunRequest, model: dict[str, Any] | None, msg: dict[str, Any]
    ) -> dict[str, Any]:
        """What the next prepared children are warmed for: this job's model and shapes.

        They inherit the zygote's kernels warmed for these input shapes and, for a
        small model, run it once on zeros of them before their job arrives.
        """
        shapes = None
        if model is not None:
            try:
                shapes = zygote.header_shapes(req.inputs)
            except (ValueError, KeyError, TypeError):
                shapes = None
        return {"model": model, "shapes": shapes, "deterministic": bool(msg["deterministic"])}

    def _result(
        self,
        *,
        slot: Slot,
        req: RunRequest,
        ev: dict[str, Any],
        scratch: Path,
        cg: Cgroup | None,
        max_out: int,
        t0: float,
    ) -> RunResult:
        if ev.get("ev") != "done":
            raise JobError("crashed", f"unexpected worker message {str(ev)[:100]}")
        pid = int(ev.get("pid", 0))
        report = ev.get("report") or {}
        status = int(ev.get("status", 0))
        if ev.get("timed_out"):
            raise JobError("timeout", "killed at the wall-clock deadline")
        died = _exit_error(status, cg, slot.oom_before)
        if died is not None:
            raise died
        data, digest = self._verified_output(
            report, slot.scratch, scratch, {"max_output_bytes": max_out}
        )
        device_ms = report.get("device_ms")
        cpu_ms = float(ev.get("cpu_ms", 0.0))
        metered = float(device_ms) if device_ms is not None else cpu_ms
        peak = report.get("peak")
        if peak is None:
            peak = (cg.peak_memory() if cg is not None else None) or int(ev.get("maxrss", 0))
        return RunResult(
            output=data,
            output_sha256=digest,
            metered_millis=max(1, round(metered)),
            peak_memory_bytes=int(peak),
            wall_millis=round((time.monotonic() - t0) * 1000),
            runtime=self.runtime_descriptor(req.determinism, req.format),
            tier=self.tier,
            layers=self._result_layers(slot),
            load_ms=float(report.get("load_ms", 0.0)),
            infer_ms=float(report.get("infer_ms", 0.0)),
            pid=pid,
            inputs_via=via if (via := report.get("via")) in _INPUT_PATHS else "",
        )


_INPUT_PATHS: Final = ("pinned", "inbox", "file")


def _exit_error(status: int, cg: Cgroup | None, oom_before: int) -> JobError | None:
    """The error for a job process that was OOM-killed or died of a signal, else None."""
    if cg is not None and cg.oom_kills() > oom_before:
        return JobError("oom", "killed by the job's memory limit")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        code = "oom" if sig == signal.SIGKILL else "killed"
        return JobError(code, f"job died of signal {signal.Signals(sig).name}")
    return None


def _finite_ms(value: object) -> float:
    """A reported milliseconds value as a finite float >= 0 (anything else: 0)."""
    try:
        ms = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return ms if math.isfinite(ms) and ms > 0 else 0.0


def _check_batch(reqs: list[RunRequest]) -> bytes | None:
    """``ValueError`` unless ``reqs`` may share one child; their ``weights_sha256``."""
    if not reqs:
        raise ValueError("an empty batch")
    if len(reqs) > MAX_BATCH:
        raise ValueError(f"a batch holds at most {MAX_BATCH} jobs, not {len(reqs)}")
    first = reqs[0]
    for r in reqs:
        if r.weights_sha256 != first.weights_sha256:  # (every job, as run, trusts the same)
            raise ValueError("a batch's jobs must use the same weights and weights_sha256")
        if r.format != "catalog-v1" or r.test_code is not None:
            raise ValueError("a batch takes catalog-v1 jobs without test code only")
        if r.arch != first.arch or r.config != first.config:
            raise ValueError("a batch's jobs must use the same arch and config")
        if r.weights is not first.weights and r.weights != first.weights:
            raise ValueError("a batch's jobs must use the same weights")
        if r.determinism != first.determinism:
            raise ValueError("a batch's jobs must use the same determinism tier")
        if r.tenant != first.tenant:
            raise ValueError("a batch's jobs must carry the same tenant")
    return first.weights_sha256


def _await_report(sp: Spare, timeout_s: float) -> tuple[dict[str, Any], bool]:
    """Read the child's report until its pipe closes; kill it at the deadline.

    Returns (report, exited): ``exited`` means the process ended on its own (its
    status must come from the zygote); else it reported and is waiting to be killed.
    """
    deadline = time.monotonic() + timeout_s
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            sp.kill()
            raise TimeoutError
        ready, _, _ = select.select([sp.rep, sp.pidfd], [], [], left)
        if sp.rep in ready:
            chunk = os.read(sp.rep, 65536)
            if chunk:
                data += chunk[: max(0, REPORT_MAX - len(data))]
                continue
            return _parse_report(data), sp.exited()  # EOF: reported (or died)
        if sp.pidfd in ready:
            while select.select([sp.rep], [], [], 0)[0] and (chunk := os.read(sp.rep, 65536)):
                data += chunk[: max(0, REPORT_MAX - len(data))]
            return _parse_report(data), True


def _parse_report(data: bytes) -> dict[str, Any]:
    try:
        report = boundedjson.loads(data) if data else {}
    except ValueError:
        report = {}
    return report if isinstance(report, dict) else {}


def _hwm(pid: int) -> int:
    """Peak resident memory of ``pid`` (``VmHWM``) in bytes, 0 if unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


#: Job dirs are walked one component at a time with these: never through a symlink.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: a FIFO planted by the job must not hang the supervisor.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _component(name: str) -> str:
    """``name`` if it is one plain path component (job ids are ours; this is a guard)."""
    if name in ("", ".", "..") or "/" in name:
        raise JobError("crashed", f"{name!r} leads outside the slot's scratch root")
    return name


def _open_below(dir_fd: int, name: str, flags: int) -> int:
    """Open ``name`` in the directory ``dir_fd`` without following a symlink there.

    A symlink gives ``JobError("crashed")``: it can only come from the sandbox, which
    may rename any directory it can write and link another in its place (another job's
    or tenant's scratch dir, a host path). Other failures stay ``OSError``.
    """
    try:
        return os.open(_component(name), flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
                raise JobError("crashed", f"{name} in a job dir is a symlink") from None
        raise


def _open_dir_below(base: Path, parts: Sequence[str]) -> int:
    """An fd of the directory ``base/parts...``, no component a symlink.

    ``base`` is a slot's scratch root: the supervisor made it in its own work dir, where
    no sandboxed process can write, so it is the one path taken as given.
    """
    fd = os.open(base, _DIR_FLAGS)
    try:
        for name in parts:
            fd, old = _open_below(fd, name, _DIR_FLAGS), fd
            os.close(old)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_below(base: Path, parts: Sequence[str], cap: int) -> bytes:
    """Read the worker-written file ``base/parts...``: no symlink on the way, regular,
    at most ``cap`` bytes (:func:`_open_below` says why the whole way is checked)."""
    try:
        dfd = _open_dir_below(base, parts[:-1])
        try:
            fd = _open_below(dfd, parts[-1], _FILE_FLAGS)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise JobError("crashed", f"no output file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not (st.st_mode & 0o170000) == 0o100000:
            raise JobError("crashed", "output is not a regular file")
        if st.st_size > cap:
            raise JobError("output_too_large", f"{st.st_size} bytes over the cap {cap}")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise JobError("output_too_large", "output grew over the cap")
    return data


def _sweep_work_dirs() -> list[str]:
    """Delete ``gpunet-rt-<pid>-*`` temp work dirs whose process is gone (killed pools)."""
    removed = []
    for d in Path(tempfile.gettempdir()).glob("gpunet-rt-*-*"):
        pid = d.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed
