"""The worker inside the sandbox: a warm zygote that forks one child per job.

Started by the supervisor (:mod:`node.runtime.pool`) as
``bwrap ... python -I -B -c <boot> <config json>``. Order of events:

1. stage-1 lockdown while single-threaded (:func:`lockdown.zygote_stage`), then
   ``import torch`` with one intra-op thread (a zygote that ran a multi-threaded
   OpenMP region would hang its forked children) and torch's CPU kernel choice, made
   here because a child cannot read ``/proc/cpuinfo``;
2. ``hello`` to the supervisor; then, on ``spare`` requests: load the model into the
   cache (v1, data-only safetensors, keyed by the weights' sha256), warm its kernels
   for the last job's input shapes, and ``fork`` the child for the *next* job. That
   child does everything that does not depend on the job before the job exists: its
   own scratch dir, stage-2 lockdown scoped to it, the thread count, one run on zeros
   of the expected shapes (page faults, lazy state). The zygote passes the child's
   job and report pipes to the supervisor (``SCM_RIGHTS`` over a socket) and closes
   its copies; the supervisor moves the child into the job cgroup and later talks to
   it directly: job frame in, report out, output file in the scratch dir. A
   ``batch`` frame instead carries several jobs of one tenant for the same model:
   the child runs them one after the other, each in its own sub-directory, and
   sends one report frame per job (:func:`_run_batch`).

In ``lease`` mode (the GPU path: one worker per GPU per tenant lease) there is no
fork: the worker applies Landlock (files + TCP, no scoping) before ``import torch``,
creates the CUDA context, then installs the seccomp ``job`` profile on every thread
(TSYNC) and runs the jobs itself. See docs/runtime.md.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import socket
import sys
import time
import traceback
from typing import Any

from protocol import boundedjson

from . import lockdown, wire

REPORT_MAX = 60_000
#: Most jobs one ``batch`` frame may carry (the supervisor checks it first).
MAX_BATCH = 64
#: First byte on a prepared child's report pipe: its scratch dir and lockdown are in place.
READY = b"R"


def _send(obj: dict[str, Any]) -> None:
    wire.send(1, obj)


class _Zygote:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.warmed: dict[str, float] = {}  # (model, shapes, det) -> ms of one run
        self.zombies: list[int] = []
        self.reader = wire.Reader(0)
        self.fdsock: socket.socket | None = None
        self.idle_due = True  # warm every catalog family, then collapse the heap

    # ---------------------------------------------------------------- setup
    def start(self) -> None:
        cfg = self.cfg
        lease = cfg["mode"] == "lease"
        if cfg.get("pdeathsig"):  # without bwrap's --die-with-parent
            lockdown.die_with_parent()
        if cfg["scratch"] != "/scratch":
            os.environ["TMPDIR"] = cfg["scratch"]
        if cfg.get("fdsock") is not None:
            self.fdsock = socket.socket(fileno=cfg["fdsock"])
        self.layers = lockdown.zygote_stage(
            layers=cfg["layers"],
            uid=cfg.get("uid"),
            read=cfg["read"],
            write=cfg["write"],
            devices=cfg.get("devices", ()),
            scope=not lease,
            rlimits={"fsize": cfg["fsize"]},
            seccomp_now=not lease,
        )
        import torch

        # torch picks its CPU kernels (AVX-512, AVX2, default) on the first dispatched op,
        # from cpuinfo, which parses /proc/cpuinfo: a job child cannot read /proc, so a
        # child's first op fell back to the default kernels, whose reductions round
        # differently (a cold pool's first BERT/GPT-2/ViT job broke the exact tier).
        # Decide here, where /proc is readable; every child inherits the choice.
        isa = str(torch.backends.cpu.get_cpu_capability()).lower()
        torch.set_num_threads(1)
        self.inbox = None
        if lease:
            if cfg["device"].startswith("cuda"):
                torch.zeros(1, device=cfg["device"])  # CUDA context before seccomp
            if cfg.get("inbox_fd") is not None:
                from .inbox import InboxView

                self.inbox = InboxView(cfg["inbox_fd"], torch)
            if "seccomp" in cfg["layers"]:
                from . import seccomp

                seccomp.install("job")
                self.layers.append("seccomp")
        if not lease and "seccomp" in cfg["layers"]:
            from . import seccomp

            seccomp.prepare("job-allow")  # built once here, installed as is by every child
        from . import formats

        self.formats = formats
        self.torch = torch
        _warm(torch, formats, families=lease)  # fork mode: the catalog runs when first idle
        if cfg.get("enable_v2"):
            import torch.export  # ~1 s, paid once here instead of in every v2 child

            from . import pt2  # noqa: F401 - imported once, inherited by every child
        _send(
            {
                "ev": "hello",
                "pid": os.getpid(),
                "layers": self.layers,
                "torch": torch.__version__,
                "isa": isa,
            }
        )

    # ---------------------------------------------------------------- jobs
    def serve(self) -> None:
        while True:
            try:
                req = self.reader.recv()
            except wire.WireError:
                return
            op = req.get("op")
            if op == "exit":
                return
            if op in ("job", "spare", "reap"):
                try:
                    if op == "spare":
                        self.spare(req)
                    elif op == "reap":
                        self.reap_one(int(req["pid"]))
                    else:
                        self.job(req)
                except Exception as exc:  # noqa: BLE001 - the worker must answer, then exit
                    traceback.print_exc()
                    _send({"ev": "error", "msg": f"{type(exc).__name__}: {exc}"[:1000]})
                    return

    @staticmethod
    def cache_key(req: dict[str, Any]) -> str:
        """Model cache key: weights sha256, arch and config."""
        return cache_key(req)

    def _model(self, req: dict[str, Any]) -> tuple[Any, bool]:
        """The cached model for ``req`` and whether it was loaded just now."""
        key = self.cache_key(req)
        model = self.cache.get(key)
        if model is not None:
            self.cache.move_to_end(key)
            return model, False
        with open(f"{self.cfg['blobs']}/{req['weights']}", "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != req["weights"]:
            raise self.formats.JobError("bad_model", "weights blob does not match its hash")
        model = self.formats.load_model(
            req["arch"], req["config"], data, max_params=req["max_params"], device=req["device"]
        )
        self.cache[key] = model
        while len(self.cache) > self.cfg["cache_entries"]:
            self.cache.popitem(last=False)
        return model, True

    def _warm_shapes(self, req: dict[str, Any], model: Any, shapes: Any) -> float | None:
        """Run the cached model once on zeros of the last job's input shapes, single-threaded.

        Children then inherit oneDNN's per-shape kernels and the allocator's warm heap
        instead of rebuilding them in every job (ResNet-18 batch 1: ~170 ms -> ~0).
        Only the *shapes* come from the client (the safetensors header, parsed by the
        supervisor from the bytes it was given), never values. Returns the run's
        milliseconds (remembered per model, shapes and determinism), or None when this
        model and these shapes are not warmed (too large, or they failed).
        """
        torch = self.torch
        if shapes is None:
            return None
        numel = sum(n for _, _, n in shapes.values())
        key = f"{id(model)}|{sorted(shapes.items())}|{req['deterministic']}"
        if key in self.warmed:
            return self.warmed[key]
        if numel > self.cfg["warm_max_elements"]:
            return None
        try:
            data = _zeros(torch, self.formats, shapes)
            _deterministic(torch, bool(req["deterministic"]))
            t0 = time.perf_counter()
            self.formats.run(req["arch"], req["config"], model, data, device=req["device"])
            ms = (time.perf_counter() - t0) * 1000
        except (self.formats.JobError, KeyError, RuntimeError, ValueError):
            return None
        finally:
            _deterministic(torch, False)
        if len(self.warmed) >= 64:
            self.warmed.clear()
        self.warmed[key] = ms
        return ms

    def job(self, req: dict[str, Any]) -> None:
        """Lease mode: run the job in this process (fork mode uses :meth:`spare`)."""
        if self.cfg["mode"] != "lease":
            raise RuntimeError("jobs go to a prepared child in fork mode")
        model = None
        if req["format"] == "catalog-v1" and req.get("test_code") is None:
            try:
                model, _ = self._model(req)
            except self.formats.JobError as exc:
                _send({"ev": "done", "report": {"ok": False, "code": exc.code, "msg": exc.message}})
                return
        t0 = time.process_time()
        report = _execute(self, req, model)
        report["cpu_ms"] = (time.process_time() - t0) * 1000
        _send({"ev": "done", "report": report, "status": 0})

    # ------------------------------------------------------------- children
    def spare(self, req: dict[str, Any]) -> None:
        """Fork the child for the next job; hand its pipes to the supervisor.

        ``req``: ``reap`` (children the supervisor is done with), ``model`` (the
        next job's model fields, loaded into the cache first, or the last job's, to
        warm), ``shapes`` and ``deterministic`` (the last job's, to warm and pre-run),
        ``idle`` (no job waits for this child: time for housekeeping).
        """
        if self.fdsock is None:
            raise RuntimeError("no descriptor socket")
        self.zombies.extend(int(p) for p in req.get("reap", ()))
        self.reap()
        prerun = None
        spec = req.get("model")
        if spec is not None:
            try:
                model, _ = self._model(spec)
            except self.formats.JobError as exc:
                _send({"ev": "error_job", "code": exc.code, "msg": exc.message})
                return
            shapes = req.get("shapes")
            if shapes is not None:
                shapes = {k: (d, tuple(sh), n) for k, (d, sh, n) in shapes.items()}
                warm = {**spec, "deterministic": bool(req.get("deterministic"))}
                ms = self._warm_shapes(warm, model, shapes)
                if ms is not None and ms <= self.cfg["prerun_max_ms"]:
                    prerun = (warm, self.cache_key(spec), shapes)
        if req.get("idle") and self.idle_due:  # after the first job, off its path
            self.idle_due = False
            _warm(self.torch, self.formats, families=True)
            _collapse_heap()
        r_go, w_go = os.pipe()
        r_rep, w_rep = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 70
            try:
                os.close(w_go)
                os.close(r_rep)
                code = _child(self, r_go, w_rep, prerun)
            finally:
                os._exit(code)
        os.close(r_go)
        os.close(w_rep)
        try:  # the descriptors first, then the frame that announces them
            socket.send_fds(self.fdsock, [b"F"], [w_go, r_rep])
        finally:
            os.close(w_go)
            os.close(r_rep)
        _send({"ev": "spare", "pid": pid, "keys": list(self.cache)})

    def reap(self) -> None:
        """Collect children the supervisor is done with (killed, or exiting)."""
        for pid in list(self.zombies):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.zombies.remove(pid)

    def reap_one(self, pid: int) -> None:
        """Wait for child ``pid`` and report its status and rusage (a job that died)."""
        try:
            _, status, ru = os.wait4(pid, 0)
            cpu_ms, maxrss = (ru.ru_utime + ru.ru_stime) * 1000, ru.ru_maxrss * 1024
        except ChildProcessError:
            status, cpu_ms, maxrss = 0, 0.0, 0
        if pid in self.zombies:
            self.zombies.remove(pid)
        _send({"ev": "reaped", "status": status, "cpu_ms": cpu_ms, "maxrss": maxrss})


def cache_key(req: dict[str, Any]) -> str:
    """Model cache key: weights sha256, arch and config."""
    return f"{req['weights']}|{req['arch']}|{json.dumps(req['config'], sort_keys=True)}"


def _collapse_heap() -> None:
    """Back this process's large anonymous mappings with huge pages (``MADV_COLLAPSE``).

    ``fork`` copies one page-table entry per 4 KiB page and the child's exit frees
    them: with ~220 MB of heap after ``import torch`` that was 4-9 ms per fork and as
    much per exit here, ~1 ms with huge pages. Best effort (Linux >= 6.1; elsewhere
    the madvise calls fail and nothing changes).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    huge = 1 << 21
    try:
        with open("/proc/self/maps", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split()
        if parts[1] != "rw-p" or (len(parts) > 5 and parts[5] != "[heap]"):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        lo, hi = (lo + huge - 1) & ~(huge - 1), hi & ~(huge - 1)
        if hi - lo >= huge:
            madvise(lo, hi - lo, 14)  # MADV_HUGEPAGE
            madvise(lo, hi - lo, 25)  # MADV_COLLAPSE


def _zeros(torch: Any, formats: Any, shapes: dict[str, tuple[str, tuple[int, ...], int]]) -> bytes:
    """Safetensors bytes of zeros with the given ``name -> (dtype, shape, numel)``."""
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    dtypes.update({"I64": torch.int64, "BOOL": torch.bool})
    return bytes(
        formats.save_safetensors(
            {k: torch.zeros(s, dtype=dtypes[d]) for k, (d, s, _) in shapes.items()}
        )
    )


def _warm(torch: Any, formats: Any, *, families: bool) -> None:
    """Pay lazy state once, single-threaded, before any fork: the deterministic flag's
    first setting, and with ``families`` a run of every catalog family on tiny inputs
    (~0.2 s; fork-mode zygotes do that when first idle, so a cold pool's first job does
    not wait for it).
    Results do not depend on it: the kernel choice that did is made in :meth:`_Zygote.start`.
    """
    _deterministic(torch, True)
    for arch, cfg, kind, shape in formats.catalog.TINY if families else ():
        model = formats.load_model(arch, cfg, formats.random_weights(arch, cfg))
        x = torch.zeros(shape, dtype=torch.int64) if kind == "ids" else torch.zeros(shape)
        name = "input_ids" if kind == "ids" else "x"
        formats.save_safetensors(formats.run(arch, cfg, model, formats.save_safetensors({name: x})))
    _deterministic(torch, False)


def _deterministic(torch: Any, on: bool) -> None:
    """``torch.use_deterministic_algorithms(on)`` without its import of
    ``torch._inductor.config``: that public function sets inductor's copy of the flag
    too, which costs ~1 s of a worker's cold start for a compiler the runtime never
    runs (catalog models and ``.pt2`` programs run eagerly). The flag the kernels read
    is the one set here; the public function is the fallback."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(on)
    else:
        setter(on)


def header_shapes(data: bytes) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """``name -> (dtype, shape, numel)`` from safetensors bytes' header (data not read).

    Raises ``ValueError`` (or ``KeyError``/``TypeError``) on a malformed header.
    """
    n = int.from_bytes(data[:8], "little")
    if n > 1 << 20 or len(data) < 8 + n:
        raise ValueError("header too large")
    header = boundedjson.loads(data[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        shape = tuple(int(d) for d in meta["shape"])
        numel = 1
        for d in shape:
            numel *= d
        out[str(name)] = (str(meta["dtype"]), shape, numel)
    return out


def _child(z: _Zygote, r_go: int, w_rep: int, prerun: tuple[Any, str, Any] | None) -> int:
    """A prepared child: everything job-independent first, then one job or batch
    (or, kept for one tenant, several batches one after the other)."""
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if not z.cfg.get("debug"):
        os.dup2(devnull, 2)
    os.close(devnull)
    keep = sorted({r_go, w_rep})  # drop the zygote's pipes and descriptor socket
    os.closerange(3, keep[0])
    os.closerange(keep[0] + 1, keep[1])
    os.closerange(keep[1] + 1, 1 << 16)
    cfg = z.cfg
    failed = None
    try:  # its own scratch dir, renamed to the job's id by the supervisor (same inode)
        scratch = f"{cfg['scratch']}/n{os.getpid()}"
        if os.path.lexists(scratch):
            import shutil

            shutil.rmtree(scratch)
        os.mkdir(scratch, 0o700)
        rlimits = dict(cfg["job_rlimits"])
        if cfg.get("cpu_life"):  # the hard CPU limit of a child that may serve many jobs
            rlimits["cpu"] = cfg["cpu_life"]
        if rlimits.get("as"):
            rlimits["as"] += _vmsize()  # the job's budget on top of the inherited mappings
        lockdown.job_stage(
            layers=cfg["layers"],
            read=cfg["job_read"],
            write=[scratch],
            devices=cfg.get("devices", ()),
            rlimits=rlimits,
            profile="job-allow",  # fork mode is CPU only: the default-deny profile
        )
    except (OSError, lockdown.LockdownError) as exc:
        failed = str(exc)[:500]
    if failed is None:
        z.torch.set_num_threads(cfg["threads"])
        if prerun is not None:  # fault in what the expected job touches (copy-on-write)
            _prerun(z, *prerun)
    try:
        os.write(w_rep, READY)  # the supervisor hands out no job before this byte
    except OSError:
        return 72
    reader = wire.Reader(r_go)
    try:  # blocks until the supervisor hands over a job (after the cgroup move)
        req = reader.recv()
    except wire.WireError:
        return 71
    if failed is not None:
        _answer(w_rep, req, {"ok": False, "code": "sandbox", "msg": failed})
        return 1
    while True:
        code = _serve_frame(z, req, w_rep)
        if code == 0:
            os.read(r_go, 1)  # stay until the supervisor has metered and killed us
        if code is not None:
            return code
        try:  # a kept child: the same tenant's next batch, or EOF / ``close``: exit
            req = reader.recv()
        except wire.WireError:
            return 0
        if req.get("op") != "batch" or not req.get("keep"):
            return 0
        try:  # taken: a job that fails from here on is this frame's, not a dead child's
            wire.send(w_rep, {"ack": req.get("id")})
        except OSError:
            return 0


def _serve_frame(z: _Zygote, req: dict[str, Any], w_rep: int) -> int | None:
    """Run one job or batch frame; the exit code, or None to wait for the next frame.

    A frame with ``keep`` (a batch of one tenant's jobs, docs/runtime.md §5) leaves the
    report pipe open and returns None: the supervisor may send this child the same
    tenant's next batch. Each such frame gets its own CPU budget on top of what the
    child used so far (:func:`lockdown.set_job_budget`) and its own file-size cap.
    Any other frame reports and closes the pipe (0: wait to be killed).
    """
    model = z.cache.get(req["cache_key"]) if "cache_key" in req else None
    if "cache_key" in req and model is None:
        _answer(w_rep, req, {"ok": False, "code": "crashed", "msg": "model missing in the child"})
        return 1
    keep = req.get("op") == "batch" and bool(req.get("keep"))
    try:
        limits = req["rlimits"]
        if keep:  # the same limits as a fresh child's, CPU counted from now
            lockdown.set_rlimits({k: v for k, v in limits.items() if k not in ("cpu", "fsize")})
            lockdown.set_job_budget(cpu_s=int(limits["cpu"]), fsize=int(limits["fsize"]))
        else:
            lockdown.set_rlimits(limits)  # the job's own (only ever lower) limits
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _answer(w_rep, req, {"ok": False, "code": "sandbox", "msg": str(exc)[:500]})
        return 1
    if req.get("op") == "batch":
        _run_batch(z, req, model, w_rep, close=not keep)
        if keep:
            return None
    else:
        os.environ["TMPDIR"] = f"{z.cfg['scratch']}/{req['id']}"
        _report(w_rep, _execute(z, req, model))
    return 0


def _answer(fd: int, req: dict[str, Any], report: dict[str, Any]) -> None:
    """Refuse the whole frame: one report, or for a batch one frame that fails every job."""
    if req.get("op") == "batch":
        wire.send(fd, {**report, "batch": True})
        os.close(fd)
    else:
        _report(fd, report)


def _run_batch(z: _Zygote, req: dict[str, Any], model: Any, w_rep: int, *, close: bool) -> None:
    """Run a batch's jobs one after the other; one report frame per job, in order.

    Each job has its own sub-directory (``dir``) of this child's scratch dir, its own
    inputs, output, output cap and timeout (the supervisor's wall clock). A failing
    job reports its error and the next one still runs. ``cpu_ms`` is this process's
    CPU time (every thread) around the job's own work; the supervisor splits the
    batch's measured CPU time with it. ``close``: end with EOF (not a kept child).
    """
    for job in req["jobs"][:MAX_BATCH]:
        os.environ["TMPDIR"] = f"{z.cfg['scratch']}/{job['dir']}"
        t0 = time.process_time()
        report = _execute(z, job, model)
        report["cpu_ms"] = (time.process_time() - t0) * 1000
        report["id"] = job["id"]
        wire.send(w_rep, report)
    if close:
        os.close(w_rep)  # EOF: every job reported


def _prerun(z: _Zygote, req: dict[str, Any], key: str, shapes: Any) -> None:
    """One run on zeros (no job data) so the job finds its pages already copied."""
    model = z.cache.get(key)
    if model is None:
        return
    try:
        data = _zeros(z.torch, z.formats, shapes)
        _deterministic(z.torch, bool(req["deterministic"]))
        out = z.formats.run(req["arch"], req["config"], model, data, device=req["device"])
        z.formats.save_safetensors(out)  # what the job does with its outputs (no hash)
    except (z.formats.JobError, KeyError, RuntimeError, ValueError, MemoryError):
        pass


def _vmsize() -> int:
    fd = os.open("/proc/self/status", os.O_RDONLY)  # raw bytes: fewer objects in a child
    try:
        data = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    at = data.find(b"\nVmSize:")
    if at < 0:
        return 0
    return int(data[at + 8 : data.index(b"\n", at + 1)].split()[0]) * 1024


def _report(fd: int, report: dict[str, Any]) -> None:
    data = json.dumps(report).encode()[:REPORT_MAX]
    os.write(fd, data)
    os.close(fd)


def _execute(z: _Zygote, req: dict[str, Any], model: Any) -> dict[str, Any]:
    """Run one job in this process; never raises."""
    torch, formats = z.torch, z.formats
    scratch = f"{z.cfg['scratch']}/{req.get('dir', req['id'])}"  # a batch's job: a sub-dir
    try:
        torch.set_num_threads(req["threads"])
        _deterministic(torch, bool(req["deterministic"]))
        if req.get("test_code") is not None:
            if not z.cfg.get("allow_test_code"):
                raise formats.JobError("refused", "test code is disabled")
            scope: dict[str, Any] = {"scratch": scratch, "torch": torch}
            exec(compile(req["test_code"], "<test-job>", "exec"), scope)
            outputs = scope.get("outputs", {"y": torch.zeros(1)})
            t_load = t_infer = 0.0
            device_ms = None
        else:
            path = f"{scratch}/inputs.safetensors"
            t0 = time.perf_counter()
            if req["format"] == "export-v2":
                from . import pt2

                inputs = _input_bytes(z, req, path)
                prog = pt2.load_guarded(f"{scratch}/model.pt2", device=req["device"])
                _deterministic(torch, bool(req["deterministic"]))
                t1 = time.perf_counter()
                outputs, device_ms = pt2.run(prog, inputs, device=req["device"])
            else:
                t1 = time.perf_counter()
                outputs, device_ms = _timed_run(z, req, model, path)
            t_load, t_infer = t1 - t0, time.perf_counter() - t1
        # no hash here: the supervisor hashes what it reads back (it cannot trust ours)
        data = formats.save_safetensors(outputs)
        if len(data) > req["max_output_bytes"]:
            raise formats.JobError("output_too_large", f"{len(data)} bytes")
        with open(f"{scratch}/output.safetensors", "wb") as f:
            f.write(data)
        peak = None
        if req["device"].startswith("cuda"):
            peak = int(torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
        return {
            "ok": True,
            "size": len(data),
            "load_ms": t_load * 1000,
            "infer_ms": t_infer * 1000,
            "device_ms": device_ms,
            "peak": peak,
            "via": req.get("via", "file"),
        }
    except formats.JobError as exc:
        return {"ok": False, "code": exc.code, "msg": exc.message[:500]}
    except MemoryError:
        return {"ok": False, "code": "oom", "msg": "MemoryError"}
    except Exception as exc:  # noqa: BLE001 - the report is the only channel out
        msg = f"{type(exc).__name__}: {exc}"[:500]
        oom = "out of memory" in msg or "can't allocate memory" in msg
        return {"ok": False, "code": "oom" if oom else "crashed", "msg": msg}


def _input_bytes(z: _Zygote, req: dict[str, Any], path: str) -> bytes:
    """The job's inputs as bytes: from the inbox (lease mode) or the scratch file."""
    n = req.get("inbox")
    if n is not None and z.inbox is not None:
        req["via"] = "inbox"
        return z.inbox.data(int(n))
    with open(path, "rb") as f:
        return f.read()


def _device_inputs(z: _Zygote, req: dict[str, Any], path: str) -> dict[str, Any]:
    """The job's input tensors on its CUDA device, copied from the inbox (page-locked
    where the driver allows: one DMA) or from the mapped scratch file."""
    dev, n = req["device"], req.get("inbox")
    if n is None or z.inbox is None:
        tensors: dict[str, Any] = z.formats.parse_safetensors_file(path, "inputs", device=dev)
        return tensors
    from . import stview

    pinned = z.inbox.pin(int(n), dev)
    req["via"] = "pinned" if pinned else "inbox"
    views = stview.tensors_from_buffer(z.inbox.buf, int(n), "inputs")
    return {k: v.to(dev) for k, v in views.items()}


def _timed_run(z: _Zygote, req: dict[str, Any], model: Any, path: str) -> tuple[Any, Any]:
    """Inputs from the inbox or the scratch file (on a GPU copied to it directly)."""
    torch, formats, dev = z.torch, z.formats, req["device"]
    if not dev.startswith("cuda"):
        # bytes, not views of a mapping: tensors laid out differently make CPU kernels
        # round differently (the exact tier must match a bare run bit for bit)
        inputs = _input_bytes(z, req, path)
        return formats.run(req["arch"], req["config"], model, inputs), None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    tensors = _device_inputs(z, req, path)
    out = formats.forward(req["arch"], req["config"], model, tensors, device=dev)
    end.record()
    torch.cuda.synchronize()
    return out, float(start.elapsed_time(end))


def main() -> None:
    """Entry point inside the sandbox: ``argv[1]`` is the zygote config (JSON)."""
    cfg = json.loads(sys.argv[1])
    z = _Zygote(cfg)
    try:
        z.start()
    except Exception as exc:  # noqa: BLE001 - report why the sandbox could not start
        _send({"ev": "error", "msg": f"{type(exc).__name__}: {exc}"[:1000]})
        traceback.print_exc()
        sys.exit(3)
    z.serve()
