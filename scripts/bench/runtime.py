"""Benchmark: sandboxed warm path vs bare in-process torch, same model, batch and device.

    python scripts/bench/runtime.py [--device cpu|cuda:0] [--dtype fp32|bf16]
                                    [--models mlp,resnet50] [--batches 1,8,64] [--threads N]
                                    [--gap-ms MS]

Needs only torch, safetensors and this repository on ``PYTHONPATH`` (plus bubblewrap
for the full sandbox; without it the pool runs with the explicit insecure override and
the table says so). For each model and batch it reports the median time per job of

* **bare**: ``formats.run`` + output encoding in this process (model already loaded),
  with the same thread count and determinism flags as the sandbox;
* **sandbox**: ``WorkerPool.run`` end to end (fork, per-job cgroup, lockdown, input and
  output files, hashing), model cached in the warm worker;

then the throughput ratio bare/sandbox and the added milliseconds per job. Sandboxed
jobs run back to back unless ``--gap-ms`` spaces them (a node that is not saturated). Then the
**cold** path: a fresh ``python -c`` that imports torch, loads and runs one job, against
a fresh pool (host probe, worker start, first job). Prints a Markdown table and, with
``--json``, one JSON object.
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
                "catalog-v1", arch, config, weights, inputs, determinism=det, weights_sha256=wsha
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
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.models = args.models.split(",")
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
        tier, runtime = pool.tier, pool.runtime_descriptor(det)
    cold = bench_cold(args, dtype, det, insecure) if args.cold_reps > 0 else None
    print(f"\nruntime: `{runtime}`; sandbox tier {tier}; threads {args.threads}; {args.dtype}")
    missing = [k for k, v in report.layers.items() if not v.ok]
    if missing:
        print(f"layers missing on this host: {', '.join(missing)}")
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
    if args.json:
        print(json.dumps({"runtime": runtime, "tier": tier, "warm": warm, "cold": cold}))


if __name__ == "__main__":
    main()
