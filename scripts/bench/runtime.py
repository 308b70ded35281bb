"""Benchmark: sandboxed warm path vs bare in-process torch, same model, batch and device.

    python scripts/bench/runtime.py [--device cpu|cuda:0] [--dtype fp32|bf16]
                                    [--models mlp,resnet50] [--batches 1,8,64] [--threads N]
                                    [--gap-ms MS] [--tenant] [--batch-jobs N --batch-rounds R]

Needs only torch, safetensors and this repository on ``PYTHONPATH`` (plus bubblewrap
for the full sandbox; without it the pool runs with the explicit insecure override and
the table says so). For each model and batch it reports the median time per job of

* **bare**: ``formats.run`` + output encoding in this process (model already loaded),
  with the same thread count and determinism flags as the sandbox;
* **sandbox**: ``WorkerPool.run`` end to end (fork, per-job cgroup, lockdown, input and
  output files, hashing), model cached in the warm worker;

then the throughput ratio bare/sandbox and the added milliseconds per job. Sandboxed
jobs run back to back unless ``--gap-ms`` spaces them (a node that is not saturated), each
in a fresh child, or with ``--tenant`` as one client's jobs (a child kept from the job
before). Then the
**cold** path: a fresh ``python -c`` that imports torch, loads and runs one job, against
a fresh pool (host probe, worker start, first job). With ``--batch-jobs N``: N tiny
MLP jobs (16->32->4, batch 2, as in scripts/bench/e2e.py; one tenant, one model) run
one by one through ``WorkerPool.run`` and as one ``WorkerPool.run_batch``, alternating
for ``--batch-rounds`` rounds: wall per job and CPU per job of the sandbox processes
(every descendant of this process, reaped children included) and of this process (the
supervisor), medians over the rounds. ``--models ''`` skips the warm table. Prints a
Markdown table and, with ``--json``, one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
# the sandboxed workers run with huge pages for large tensors; give the bare side the
# same allocator setting (it must be set before torch is imported)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
# CPU workers also back glibc's heap with huge pages (node/runtime/sandbox.py FORK_ENV);
# glibc reads this at process start, so re-execute once to give the bare side the same
_CPU = not any("cuda" in a for a in sys.argv)  # lease-mode GPU workers do not set it
if _CPU and "GLIBC_TUNABLES" not in os.environ and __name__ == "__main__":
    os.environ["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402

from node.runtime import detect, formats  # noqa: E402
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool  # noqa: E402

MODELS = {
    "mlp": ("mlp@1", {"in": 784, "hidden": 512, "depth": 2, "out": 10}, "x", (784,)),
    "resnet18": ("resnet18@1", {"width": 64, "classes": 1000, "image": 224}, "x", (3, 224, 224)),
    "resnet50": ("resnet50@1", {"width": 64, "classes": 1000, "image": 224}, "x", (3, 224, 224)),
    "gpt2": (
        "gpt2@1",
        {"vocab": 50257, "positions": 1024, "dim": 768, "depth": 12, "heads": 12, "mlp": 3072},
        "ids",
        (128,),
    ),
}


def _weights(arch: str, config: dict[str, int], dtype: torch.dtype) -> bytes:
    state = formats.parse_safetensors(formats.random_weights(arch, config), "weights")
    cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    return formats.save_safetensors(cast)


def _inputs(kind: str, shape: tuple[int, ...], batch: int, dtype: torch.dtype) -> bytes:
    g = torch.Generator().manual_seed(batch)
    if kind == "ids":
        return formats.save_safetensors({"input_ids": torch.randint(0, 50257, (batch, *shape))})
    return formats.save_safetensors({"x": torch.randn(batch, *shape, generator=g).to(dtype)})


def _reps(model: str, batch: int, device: str) -> int:
    heavy = model in ("resnet50", "gpt2", "resnet18") and not device.startswith("cuda")
    if heavy:
        return 3 if batch >= 64 else 5
    return 20


def bench_warm(
    pool: WorkerPool, args: argparse.Namespace, dtype: torch.dtype, det: int
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name in args.models:
        arch, config, kind, shape = MODELS[name]
        weights = _weights(arch, config, dtype)
        wsha = hashlib.sha256(weights).digest()  # a node knows it from the job spec
        model = formats.load_model(arch, config, weights, device=args.device)
        one = formats.encode_outputs(
            formats.run(arch, config, model, _inputs(kind, shape, 1, dtype), device=args.device)
        )[0]
        for batch in args.batches:
            if len(one) * batch > pool.config.max_output_bytes:
                print(f"skip {name} batch {batch}: output over the cap", file=sys.stderr)
                continue
            inputs = _inputs(kind, shape, batch, dtype)
            n = _reps(name, batch, args.device)
            bare: list[float] = []
            for i in range(n + 1):
                t0 = time.perf_counter()
                out = formats.run(arch, config, model, inputs, device=args.device)
                formats.encode_outputs(out)
                if i:  # the first is warm-up
                    bare.append(time.perf_counter() - t0)
            req = RunRequest(
                "catalog-v1",
                arch,
                config,
                weights,
                inputs,
                determinism=det,
                weights_sha256=wsha,
                tenant=TENANT if args.tenant else None,
            )
            sand: list[float] = []
            for i in range(n + 1):
                t0 = time.perf_counter()
                pool.run(req)
                if i:  # the first loads the model into the worker's cache
                    sand.append(time.perf_counter() - t0)
                time.sleep(args.gap_ms / 1000)
            b, s = statistics.median(bare), statistics.median(sand)
            row = {
                "model": name,
                "batch": batch,
                "n": n,
                "bare_ms": b * 1000,
                "sandbox_ms": s * 1000,
                "ratio": b / s,
                "added_ms": (s - b) * 1000,
                "bare_items_s": batch / b,
                "sandbox_items_s": batch / s,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


TINY = {"in": 16, "hidden": 32, "depth": 1, "out": 4}  # scripts/bench/e2e.py's job
TENANT = bytes(range(1, 21))  # --tenant: one client's address


def _tree_cpu_s() -> tuple[float, float]:
    """CPU seconds so far of (this process, its descendants: the sandbox processes).

    A descendant counts its own time plus that of children it reaped (the zygote reaps
    each finished job process); a child not reaped yet still shows its own.
    """
    tick = os.sysconf("SC_CLK_TCK")
    me, sandbox = os.getpid(), 0.0
    todo, mine = [me], 0.0
    while todo:
        pid = todo.pop()
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        f = stat[stat.rindex(")") + 2 :].split()
        utime, stime, cutime, cstime = (int(x) for x in f[11:15])
        if pid == me:
            mine = (utime + stime) / tick
        else:
            sandbox += (utime + stime + cutime + cstime) / tick
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return mine, sandbox


def _settle(pool: WorkerPool) -> None:
    """Wait until the pool's helpers have prepared the next children (their cost counts)."""
    time.sleep(0.2)
    for slot in pool._all:
        slot.settle()


def bench_batch(pool: WorkerPool, args: argparse.Namespace, det: int) -> dict[str, object]:
    """``--batch-jobs`` tiny jobs one by one vs in one ``run_batch``, alternating rounds."""
    n = args.batch_jobs
    weights = formats.random_weights("mlp@1", TINY, seed=1)
    wsha = hashlib.sha256(weights).digest()
    reqs = [
        RunRequest(
            "catalog-v1",
            "mlp@1",
            TINY,
            weights,
            formats.save_safetensors(
                {"x": torch.randn(2, 16, generator=torch.Generator().manual_seed(i))}
            ),
            determinism=det,
            weights_sha256=wsha,
        )
        for i in range(n)
    ]
    want = [pool.run(r).output_sha256 for r in reqs]  # warm: model cached, shapes warmed
    got = [getattr(r, "output_sha256", None) for r in pool.run_batch(reqs)]
    if got != want:
        raise SystemExit("run_batch outputs differ from run's")
    modes = {
        "one by one (run)": lambda: [pool.run(r) for r in reqs],
        "one batch (run_batch)": lambda: pool.run_batch(reqs),
    }
    samples: dict[str, dict[str, list[float]]] = {
        m: {"wall_ms": [], "sandbox_cpu_ms": [], "supervisor_cpu_ms": []} for m in modes
    }
    # CPU times come in clock ticks (10 ms): repeat each mode within a round so that a
    # round covers >= 240 jobs (a tick is then <= 0.05 ms per job)
    reps = max(1, -(-240 // n))
    for rnd in range(args.batch_rounds):
        order = list(modes) if rnd % 2 == 0 else list(reversed(modes))
        for mode in order:
            _settle(pool)
            (c0, s0), t0 = _tree_cpu_s(), time.perf_counter()
            for _ in range(reps):
                modes[mode]()
            wall = time.perf_counter() - t0
            _settle(pool)
            c1, s1 = _tree_cpu_s()
            samples[mode]["wall_ms"].append(wall * 1000 / (n * reps))
            samples[mode]["sandbox_cpu_ms"].append((s1 - s0) * 1000 / (n * reps))
            samples[mode]["supervisor_cpu_ms"].append((c1 - c0) * 1000 / (n * reps))
    out: dict[str, object] = {
        "jobs": n,
        "reps": reps,
        "rounds": args.batch_rounds,
        "samples": samples,
    }
    for mode, vals in samples.items():
        out[mode] = {k: statistics.median(v) for k, v in vals.items()}
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


COLD = """
import sys, time
t0 = float(sys.argv[1])
import torch
torch.set_num_threads({threads})
torch.use_deterministic_algorithms(True)
from node.runtime import formats
w = open(sys.argv[2], 'rb').read(); x = open(sys.argv[3], 'rb').read()
m = formats.load_model({arch!r}, {config!r}, w, device={device!r})
formats.encode_outputs(formats.run({arch!r}, {config!r}, m, x, device={device!r}))
print(time.time() - t0)
"""


def bench_cold(args: argparse.Namespace, dtype: torch.dtype, det: int, insecure: bool) -> dict:
    name = args.cold_model
    arch, config, kind, shape = MODELS[name]
    weights, inputs = _weights(arch, config, dtype), _inputs(kind, shape, 1, dtype)
    tmp = Path(tempfile.mkdtemp(prefix="gpunet-bench-"))
    (tmp / "w").write_bytes(weights)
    (tmp / "x").write_bytes(inputs)
    code = COLD.format(threads=args.threads, arch=arch, config=config, device=args.device)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bare, sand = [], []
    for _ in range(args.cold_reps):
        out = subprocess.run(
            [sys.executable, "-c", code, str(time.time()), str(tmp / "w"), str(tmp / "x")],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        bare.append(float(out.stdout.strip().splitlines()[-1]))
        t0 = time.perf_counter()
        with WorkerPool(_config(args, insecure)) as pool:
            pool.run(RunRequest("catalog-v1", arch, config, weights, inputs, determinism=det))
            sand.append(time.perf_counter() - t0)
    b, s = statistics.median(bare), statistics.median(sand)
    row = {"model": name, "batch": 1, "bare_fresh_s": b, "sandbox_cold_s": s, "ratio": s / b}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def _config(args: argparse.Namespace, insecure: bool) -> PoolConfig:
    gpu = args.device.startswith("cuda")
    return PoolConfig(
        slots=1,
        device=args.device,
        mode="lease" if gpu else "fork",
        threads=args.threads,
        memory_bytes=16 << 30,
        zygote_memory_bytes=32 << 30,
        timeout_s=600,
        max_output_bytes=1 << 30,
        insecure=insecure,
        min_tier=2,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--models", default="mlp,resnet50")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--cold-model", default="mlp")
    ap.add_argument("--cold-reps", type=int, default=3, help="0: skip the cold path")
    ap.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="pause between sandboxed jobs (0: back to back, the default)",
    )
    ap.add_argument(
        "--tenant",
        action="store_true",
        help="the warm table's jobs carry one tenant, as a provider's runs of one client"
        " do: each reuses the child the one before kept (docs/runtime.md §5)",
    )
    ap.add_argument("--batch-jobs", type=int, default=0, help="0: skip the batch comparison")
    ap.add_argument("--batch-rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",")]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    gpu = args.device.startswith("cuda")
    det = 1 if gpu else 0
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    if gpu:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    report = detect.check(device=args.device)
    insecure = report.tier < 2
    with WorkerPool(_config(args, insecure)) as pool:
        warm = bench_warm(pool, args, dtype, det)
        batch = bench_batch(pool, args, det) if args.batch_jobs > 0 else None
        tier, runtime = pool.tier, pool.runtime_descriptor(det)
    cold = bench_cold(args, dtype, det, insecure) if args.cold_reps > 0 else None
    print(f"\nruntime: `{runtime}`; sandbox tier {tier}; threads {args.threads}; {args.dtype}")
    missing = [k for k, v in report.layers.items() if not v.ok]
    if missing:
        print(f"layers missing on this host: {', '.join(missing)}")
    if warm:
        print("\n| model | batch | n | bare ms | sandbox ms | ratio | added ms | sandbox items/s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in warm:
        print(
            f"| {r['model']} | {r['batch']} | {r['n']} | {r['bare_ms']:.1f} | "
            f"{r['sandbox_ms']:.1f} | {r['ratio']:.3f} | {r['added_ms']:+.1f} | "
            f"{r['sandbox_items_s']:.1f} |"
        )
    if cold is not None:
        print(
            f"\ncold, {cold['model']} batch 1: bare fresh process {cold['bare_fresh_s']:.2f} s, "
            f"fresh sandboxed pool + first job {cold['sandbox_cold_s']:.2f} s "
            f"({cold['ratio']:.2f}x)"
        )
    if batch is not None:
        print(
            f"\n{batch['jobs']} tiny MLP jobs of one tenant (16->32->4, batch 2), "
            f"{batch['reps']}x per round, medians of {batch['rounds']} alternating rounds; "
            f"load average {os.getloadavg()[0]:.1f}\n"
        )
        print("| mode | wall ms per job | sandbox CPU ms per job | supervisor CPU ms per job |")
        print("|---|---:|---:|---:|")
        for mode in ("one by one (run)", "one batch (run_batch)"):
            r = batch[mode]
            assert isinstance(r, dict)
            print(
                f"| {mode} | {r['wall_ms']:.2f} | {r['sandbox_cpu_ms']:.2f} | "
                f"{r['supervisor_cpu_ms']:.2f} |"
            )
    if args.json:
        print(
            json.dumps(
                {"runtime": runtime, "tier": tier, "warm": warm, "cold": cold, "batch": batch}
            )
        )


if __name__ == "__main__":
    main()
