"""The worker inside the sandbox: a warm zygote that forks one child per job.

Started by the supervisor (:mod:`node.runtime.pool`) as
``bwrap ... python -I -B -c <boot> <config json>``. Order of events:

1. stage-1 lockdown while single-threaded (:func:`lockdown.zygote_stage`), then
   ``import torch`` with one intra-op thread (a zygote that ran a multi-threaded
   OpenMP region would hang its forked children);
2. ``hello`` to the supervisor; then per job: load the model into the cache (v1,
   data-only safetensors, keyed by the weights' sha256), ``fork``; the child waits
   for ``go`` (sent after the supervisor moved it into the job's cgroup), applies
   stage-2 lockdown, runs the job, writes ``output.safetensors`` into its scratch
   dir and a small JSON report into a pipe; the zygote kills it at the deadline
   and reports exit status and ``wait4`` rusage.

In ``lease`` mode (the GPU path: one worker per GPU per tenant lease) there is no
fork: the worker applies Landlock (files + TCP, no scoping) before ``import torch``,
creates the CUDA context, then installs the seccomp ``job`` profile on every thread
(TSYNC) and runs the jobs itself. See docs/runtime.md.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import select
import signal
import sys
import time
import traceback
from typing import Any

from . import lockdown, wire

REPORT_MAX = 60_000


def _send(obj: dict[str, Any]) -> None:
    wire.send(1, obj)


class _Zygote:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.warmed: set[str] = set()
        self.spare: tuple[int, int, int] | None = None
        self.zombies: list[int] = []
        self.reader = wire.Reader(0)

    # ---------------------------------------------------------------- setup
    def start(self) -> None:
        cfg = self.cfg
        lease = cfg["mode"] == "lease"
        if cfg.get("pdeathsig"):  # without bwrap's --die-with-parent
            lockdown.die_with_parent()
        if cfg["scratch"] != "/scratch":
            os.environ["TMPDIR"] = cfg["scratch"]
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

        torch.set_num_threads(1)
        if lease:
            if cfg["device"].startswith("cuda"):
                torch.zeros(1, device=cfg["device"])  # CUDA context before seccomp
            if "seccomp" in cfg["layers"]:
                from . import seccomp

                seccomp.install("job")
                self.layers.append("seccomp")
        from . import formats

        self.formats = formats
        self.torch = torch
        _warm(torch, formats)
        if cfg.get("enable_v2"):
            import torch.export  # ~1 s, paid once here instead of in every v2 child
        _send(
            {"ev": "hello", "pid": os.getpid(), "layers": self.layers, "torch": torch.__version__}
        )

    # ---------------------------------------------------------------- jobs
    def serve(self) -> None:
        while True:
            try:
                req = self.reader.recv()
            except wire.WireError:
                return
            if req.get("op") == "exit":
                return
            if req.get("op") == "job":
                try:
                    self.job(req)
                except Exception as exc:  # noqa: BLE001 - the worker must answer, then exit
                    traceback.print_exc()
                    _send({"ev": "error", "msg": f"{type(exc).__name__}: {exc}"[:1000]})
                    return

    @staticmethod
    def cache_key(req: dict[str, Any]) -> str:
        """Model cache key: weights sha256, arch and config."""
        return f"{req['weights']}|{req['arch']}|{json.dumps(req['config'], sort_keys=True)}"

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

    def _warm_shapes(self, req: dict[str, Any], model: Any, shapes: Any) -> bool:
        """Run the cached model once on zeros of this job's input shapes, single-threaded.

        Children then inherit oneDNN's per-shape kernels and the allocator's warm heap
        instead of rebuilding them in every job (ResNet-18 batch 1: ~170 ms -> ~0).
        Only the *shapes* come from the client (the safetensors header), never values.
        """
        torch = self.torch
        if shapes is None:
            return False
        numel = sum(n for _, _, n in shapes.values())
        key = f"{id(model)}|{sorted(shapes.items())}|{req['deterministic']}"
        if key in self.warmed or numel > self.cfg["warm_max_elements"]:
            return False
        dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
        dtypes.update({"I64": torch.int64, "BOOL": torch.bool})
        try:
            zeros = {k: torch.zeros(s, dtype=dtypes[d]) for k, (d, s, _) in shapes.items()}
            data = self.formats.save_safetensors(zeros)
            torch.use_deterministic_algorithms(bool(req["deterministic"]))
            self.formats.run(req["arch"], req["config"], model, data, device=req["device"])
        except (self.formats.JobError, KeyError, RuntimeError, ValueError):
            return False
        finally:
            torch.use_deterministic_algorithms(False)
        self.warmed.add(key)
        if len(self.warmed) > 64:
            self.warmed.clear()
        return True

    def job(self, req: dict[str, Any]) -> None:
        model = shapes = None
        changed = False
        if req["format"] == "catalog-v1" and req.get("test_code") is None:
            try:
                model, changed = self._model(req)
            except self.formats.JobError as exc:
                _send({"ev": "done", "report": {"ok": False, "code": exc.code, "msg": exc.message}})
                return
            req["cache_key"] = self.cache_key(req)
            try:
                shapes = _header_shapes(f"{self.cfg['scratch']}/{req['id']}/inputs.safetensors")
            except (OSError, ValueError, KeyError, TypeError):
                shapes = None
        if self.cfg["mode"] == "lease":
            t0 = time.process_time()
            report = _execute(self, req, model)
            report["cpu_ms"] = (time.process_time() - t0) * 1000
            _send({"ev": "done", "report": report, "status": 0})
            return
        self._run_child(req, fresh=changed)
        # after the answer, off this job's critical path: reap, warm kernels for this
        # input shape (first sighting), fork the next job's child (it inherits both)
        self.reap()
        if model is not None:
            self._warm_shapes(req, model, shapes)
        self.spawn_spare()
        assert self.spare is not None
        _send({"ev": "spare", "pid": self.spare[0]})  # the supervisor confines it meanwhile

    # ------------------------------------------------------------- children
    def spawn_spare(self) -> None:
        """Fork the child for the next job now, off the critical path.

        It inherits the cache as it is at this moment and blocks until it is handed a job.
        """
        r_go, w_go = os.pipe()
        r_rep, w_rep = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 70
            try:
                os.close(w_go)
                os.close(r_rep)
                code = _child(self, r_go, w_rep)
            finally:
                os._exit(code)
        os.close(r_go)
        os.close(w_rep)
        self.spare = (pid, w_go, r_rep)

    def _drop_spare(self) -> None:
        if self.spare is not None:
            pid, w_go, r_rep = self.spare
            os.close(w_go)
            os.close(r_rep)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.zombies.append(pid)
            self.spare = None

    def reap(self) -> None:
        """Collect children that were answered for before they finished exiting."""
        for pid in list(self.zombies):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.zombies.remove(pid)

    def _run_child(self, req: dict[str, Any], *, fresh: bool) -> None:
        if fresh or self.spare is None:  # the spare's snapshot lacks this model or warm-up
            self._drop_spare()
            self.spawn_spare()
        assert self.spare is not None
        pid, w_go, r_rep = self.spare
        self.spare = None
        _send({"ev": "forked", "pid": pid})
        try:
            go = self.reader.recv(time.monotonic() + 30)
        except (TimeoutError, wire.WireError):
            go = {}
        if go.get("op") == "go":
            with contextlib.suppress(OSError):
                wire.send(w_go, req)
        os.close(w_go)
        report, exited, timed_out = _await_child(pid, r_rep, req["timeout_s"])
        if exited:
            _, status, ru = os.wait4(pid, 0)
            cpu_ms, maxrss = (ru.ru_utime + ru.ru_stime) * 1000, ru.ru_maxrss * 1024
        else:  # reported and closed its pipe: meter, kill, answer, reap later
            cpu_ms, maxrss, status = _cpu_ms(pid), 0, 0
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.zombies.append(pid)
        _send(
            {
                "ev": "done",
                "status": status,
                "timed_out": timed_out,
                "cpu_ms": cpu_ms,
                "maxrss": maxrss,
                "report": report,
            }
        )


def _await_child(pid: int, r_rep: int, timeout_s: float) -> tuple[dict[str, Any], bool, bool]:
    """Wait for the report (pipe closed) or the exit; kill at the deadline.

    Returns (report, exited, timed_out); ``exited`` False means the child reported and is
    still being torn down.
    """
    pidfd = os.pidfd_open(pid)
    deadline = time.monotonic() + timeout_s
    data = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                return {}, True, True
            ready, _, _ = select.select([r_rep, pidfd], [], [], left)
            if r_rep in ready:
                chunk = os.read(r_rep, 65536)
                if chunk and len(data) <= REPORT_MAX:
                    data += chunk
                    continue
                if not chunk:  # EOF: the child closed its report pipe (or died)
                    exited = pidfd in select.select([pidfd], [], [], 0)[0]
                    return _parse_report(data), exited, False
            if pidfd in ready:
                while chunk := _read_nowait(r_rep):
                    data += chunk[: max(0, REPORT_MAX - len(data))]
                return _parse_report(data), True, False
    finally:
        os.close(pidfd)
        os.close(r_rep)


def _read_nowait(fd: int) -> bytes:
    if not select.select([fd], [], [], 0)[0]:
        return b""
    return os.read(fd, 65536)


def _parse_report(data: bytes) -> dict[str, Any]:
    try:
        report = json.loads(data[:REPORT_MAX]) if data else {}
    except ValueError:
        report = {}
    return report if isinstance(report, dict) else {}


def _cpu_ms(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far (``schedstat``: ns resolution)."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            path = f"/proc/{pid}/task/{tid}/schedstat"
            with contextlib.suppress(OSError, ValueError, IndexError), open(path) as f:
                total += int(f.read().split()[0])
    return total / 1e6


#: Tiny configs run once in the zygote so children inherit every lazy import.
_VIT = {"dim": 8, "depth": 1, "heads": 2, "mlp": 8}
_TEXT = {**_VIT, "vocab": 8, "positions": 4}
_WARM = (
    ("mlp@1", {"in": 4, "hidden": 4, "depth": 1, "out": 2}, "x", (1, 4)),
    ("resnet18@1", {"width": 4, "classes": 2, "image": 32}, "x", (1, 3, 32, 32)),
    ("resnet50@1", {"width": 4, "classes": 2, "image": 32}, "x", (1, 3, 32, 32)),
    ("vit@1", {**_VIT, "image": 8, "patch": 4, "classes": 2}, "x", (1, 3, 8, 8)),
    ("gpt2@1", _TEXT, "ids", (1, 4)),
    ("bert@1", _TEXT, "ids", (1, 4)),
)


def _warm(torch: Any, formats: Any) -> None:
    """Pay lazy imports once, single-threaded (``use_deterministic_algorithms`` alone: ~1 s)."""
    torch.use_deterministic_algorithms(True)
    for arch, cfg, kind, shape in _WARM:
        model = formats.load_model(arch, cfg, formats.random_weights(arch, cfg))
        x = torch.zeros(shape, dtype=torch.int64) if kind == "ids" else torch.zeros(shape)
        name = "input_ids" if kind == "ids" else "x"
        formats.encode_outputs(formats.run(arch, cfg, model, formats.save_safetensors({name: x})))
    torch.use_deterministic_algorithms(False)


def _header_shapes(path: str) -> dict[str, tuple[str, tuple[int, ...], int]]:
    """``name -> (dtype, shape, numel)`` from a safetensors header (the data is not read)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > 1 << 20:
            raise ValueError("header too large")
        header = json.loads(f.read(n))
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


def _child(z: _Zygote, r_go: int, w_rep: int) -> int:
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if not z.cfg.get("debug"):
        os.dup2(devnull, 2)
    os.close(devnull)
    try:  # blocks until the zygote hands over a job (after the cgroup move)
        req = wire.Reader(r_go).recv()
    except wire.WireError:
        return 71
    os.close(r_go)
    model = z.cache.get(req["cache_key"]) if "cache_key" in req else None
    if "cache_key" in req and model is None:
        _report(w_rep, {"ok": False, "code": "crashed", "msg": "model missing in the child"})
        return 1
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as f:
            f.write("1000")  # the job, never the zygote, is the OOM victim
    except OSError:
        pass
    cfg = z.cfg
    scratch = f"{z.cfg['scratch']}/{req['id']}"
    rlimits = dict(req["rlimits"])
    os.environ["TMPDIR"] = scratch
    try:
        if rlimits.get("as"):
            rlimits["as"] += _vmsize()  # the job's budget on top of the inherited mappings
        lockdown.job_stage(
            layers=cfg["layers"],
            read=cfg["job_read"],
            write=[scratch],
            devices=cfg.get("devices", ()),
            rlimits=rlimits,
        )
    except (OSError, lockdown.LockdownError) as exc:
        _report(w_rep, {"ok": False, "code": "sandbox", "msg": str(exc)[:500]})
        return 1
    report = _execute(z, req, model)
    _report(w_rep, report)
    return 0


def _vmsize() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _report(fd: int, report: dict[str, Any]) -> None:
    data = json.dumps(report).encode()[:REPORT_MAX]
    os.write(fd, data)
    os.close(fd)


def _execute(z: _Zygote, req: dict[str, Any], model: Any) -> dict[str, Any]:
    """Run one job in this process; never raises."""
    torch, formats = z.torch, z.formats
    scratch = f"{z.cfg['scratch']}/{req['id']}"
    try:
        torch.set_num_threads(req["threads"])
        torch.use_deterministic_algorithms(bool(req["deterministic"]))
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

                with open(path, "rb") as f:
                    inputs = f.read()
                prog = pt2.load_guarded(f"{scratch}/model.pt2", device=req["device"])
                torch.use_deterministic_algorithms(bool(req["deterministic"]))
                t1 = time.perf_counter()
                outputs, device_ms = pt2.run(prog, inputs, device=req["device"])
            else:
                t1 = time.perf_counter()
                outputs, device_ms = _timed_run(z, req, model, path)
            t_load, t_infer = t1 - t0, time.perf_counter() - t1
        data, digest = formats.encode_outputs(outputs)
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
            "sha256": digest.hex(),
            "size": len(data),
            "load_ms": t_load * 1000,
            "infer_ms": t_infer * 1000,
            "device_ms": device_ms,
            "peak": peak,
        }
    except formats.JobError as exc:
        return {"ok": False, "code": exc.code, "msg": exc.message[:500]}
    except MemoryError:
        return {"ok": False, "code": "oom", "msg": "MemoryError"}
    except Exception as exc:  # noqa: BLE001 - the report is the only channel out
        msg = f"{type(exc).__name__}: {exc}"[:500]
        oom = "out of memory" in msg or "can't allocate memory" in msg
        return {"ok": False, "code": "oom" if oom else "crashed", "msg": msg}


def _timed_run(z: _Zygote, req: dict[str, Any], model: Any, path: str) -> tuple[Any, Any]:
    """Inputs straight from the scratch file (mapped; on a GPU copied to it directly)."""
    torch, formats, dev = z.torch, z.formats, req["device"]
    if not dev.startswith("cuda"):
        # read, not mapped: tensors views of a mapping are laid out differently and CPU
        # kernels then round differently (the exact tier must match a bare run bit for bit)
        with open(path, "rb") as f:
            inputs = f.read()
        return formats.run(req["arch"], req["config"], model, inputs), None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    tensors = formats.parse_safetensors_file(path, "inputs", device=dev)
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
