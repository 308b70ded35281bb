"""Benchmark: a lease worker's inputs as a file vs through its shared-memory inbox.

    python scripts/bench/lease_inputs.py [--device cpu|cuda:0] [--dtype fp32|bf16]
                                         [--cases resnet50:64,mlpwide:64] [--rounds 6]
                                         [--jobs 8] [--threads N] [--json]

Two lease-mode pools side by side, identical but for ``inbox_bytes`` (0: each job's
inputs written to a file in its scratch dir, mapped by the worker; default: copied
into the worker's inbox, see node/runtime/inbox.py), and the bare in-process path of
scripts/bench/runtime.py (``formats.run`` + output encoding, model loaded). Each round
runs ``--jobs`` jobs on each of the three, in an order that alternates between rounds;
the table gives the medians over all jobs, the ratios bare/sandbox and how the inputs
reached the model (``RunResult.inputs_via``). ``mlpwide`` is an MLP with a 65,536-wide
input (the catalog's widest): at batch 147 its inputs are ResNet-50 batch 64's 19 MB in
bf16, with a forward cheap enough on a CPU for the input path to show. Needs only torch,
safetensors and this repository (bubblewrap for the full sandbox; without it the pools
run with the insecure override).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

import runtime as bench_runtime  # noqa: E402  (scripts/bench/runtime.py)
import torch  # noqa: E402

from node.runtime import detect, formats  # noqa: E402
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool  # noqa: E402

MODELS: dict[str, tuple[str, dict[str, int], tuple[int, ...]]] = {
    "mlpwide": ("mlp@1", {"in": 65536, "hidden": 16, "depth": 0, "out": 10}, (65536,)),
    "resnet50": ("resnet50@1", {"width": 64, "classes": 1000, "image": 224}, (3, 224, 224)),
}


def _config(args: argparse.Namespace, insecure: bool, inbox_bytes: int) -> PoolConfig:
    """runtime.py's pool, in lease mode (as on a GPU) with the given inbox size."""
    cfg = bench_runtime._config(args, insecure)
    return dataclasses.replace(cfg, mode="lease", inbox_bytes=inbox_bytes)


def bench_case(
    pools: dict[str, WorkerPool], args: argparse.Namespace, name: str, batch: int
) -> dict[str, Any]:
    arch, config, shape = MODELS[name]
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    det = 1 if args.device.startswith("cuda") else 0
    weights = bench_runtime._weights(arch, config, dtype)
    g = torch.Generator().manual_seed(batch)
    inputs = formats.save_safetensors({"x": torch.randn(batch, *shape, generator=g).to(dtype)})
    wsha = hashlib.sha256(weights).digest()
    req = RunRequest(
        "catalog-v1", arch, config, weights, inputs, determinism=det, weights_sha256=wsha
    )
    model = formats.load_model(arch, config, weights, device=args.device)

    def bare() -> str:
        out = formats.run(arch, config, model, inputs, device=args.device)
        formats.encode_outputs(out)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return "bare"

    worker_ms: dict[str, list[float]] = {k: [] for k in pools}

    def sandboxed(label: str) -> str:
        res = pools[label].run(req)
        worker_ms[label].append(res.infer_ms)
        return res.inputs_via

    runs = {"bare": bare}
    for label in pools:
        runs[label] = lambda label=label: sandboxed(label)  # type: ignore[misc]
    times: dict[str, list[float]] = {k: [] for k in runs}
    via: dict[str, str] = {}
    for fn in runs.values():  # warm-up: model load, kernels, the inbox's first pages
        fn()
        fn()
    for v in worker_ms.values():
        v.clear()
    for rnd in range(args.rounds):
        order = list(runs) if rnd % 2 == 0 else list(reversed(runs))
        for label in order:
            for _ in range(args.jobs):
                t0 = time.perf_counter()
                via[label] = runs[label]()
                times[label].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "model": name,
        "batch": batch,
        "input_mb": len(inputs) / 1e6,
        "n": len(times["bare"]),
        "ms": med,
        "via": via,
        # the worker's own time from the inputs to the outputs (on a GPU: parse, copy to
        # the device, forward, copy back); the rest of a job's time is the supervisor's
        # and the transport's
        "worker_ms": {k: statistics.median(v) for k, v in worker_ms.items()},
        "ratio_file": med["bare"] / med["file"],
        "ratio_inbox": med["bare"] / med["inbox"],
        "load": os.getloadavg()[0],
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--cases", default="mlpwide:147")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    report = detect.check(device=args.device)
    insecure = report.tier < 2
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",") if c]
    rows = []
    with (
        WorkerPool(_config(args, insecure, 0)) as by_file,
        WorkerPool(_config(args, insecure, PoolConfig().inbox_bytes)) as by_inbox,
    ):
        pools = {"file": by_file, "inbox": by_inbox}
        for name, batch in cases:
            rows.append(bench_case(pools, args, name, batch))
        runtime, tier = (
            by_inbox.runtime_descriptor(1 if "cuda" in args.device else 0),
            by_inbox.tier,
        )
    print(f"\nruntime: `{runtime}`; sandbox tier {tier}; threads {args.threads}; {args.dtype}")
    print(
        "\n| model | batch | input MB | n | bare ms | file ms (worker) | inbox ms (worker) | "
        "bare/file | bare/inbox | inbox via | load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        ms, wk = r["ms"], r["worker_ms"]
        print(
            f"| {r['model']} | {r['batch']} | {r['input_mb']:.1f} | {r['n']} | {ms['bare']:.2f} | "
            f"{ms['file']:.2f} ({wk['file']:.2f}) | {ms['inbox']:.2f} ({wk['inbox']:.2f}) | "
            f"{r['ratio_file']:.3f} | "
            f"{r['ratio_inbox']:.3f} | {r['via']['inbox']} | {r['load']:.1f} |"
        )
    if args.json:
        print(json.dumps({"runtime": runtime, "tier": tier, "rows": rows}))


if __name__ == "__main__":
    main()
