#!/usr/bin/env python3
"""Reproducibility and tolerance spreads of every catalog model on a GPU (issue 7).

    .venv/bin/python scripts/bench/determinism_gpu.py                 # all models, fp32+bf16
    .venv/bin/python scripts/bench/determinism_gpu.py --models gpt2@1 --dtypes fp32
    .venv/bin/python scripts/bench/determinism_gpu.py --device cpu --models mlp@1 --batch 4
    ... --json out.json                                                # raw figures

For each model (default config from the catalog, weights seeded, inputs seeded)
and dtype it measures, in fresh processes (``--procs`` per dtype and flag setting,
default 3, all started at once; each runs every model):

* **gpu-deterministic**: are the output bytes of one batch bitwise equal across
  processes with the deterministic flags (``torch.use_deterministic_algorithms``,
  ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, cuDNN deterministic, no benchmark)? And
  with torch's defaults?
* **tolerance spreads**: relative error ``max|a - b| / max|ref|`` (the verifier's
  metric, node/verifier.py) of the GPU output against a float64 CPU reference
  (first ``--ref-batch`` samples), and of sample 0 run alone (batch 1) against
  sample 0 inside the full batch (no configuration tested on an H200 was
  batch-invariant);
* the **bound** it would set (``tolerances.derive_bound``: 4 × the worst spread,
  rounded up to 1, 2 or 5 × 10^k), next to the catalog's current bound, and the
  ``Spread(...)`` lines to paste into ``node/runtime/catalog/tolerances.py``.

Needs a CUDA build of torch for ``--device cuda`` (the default). Not run in the
session that wrote it (no GPU); the starting facts are in
``shared/notes/gpu-h200.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from node.runtime import catalog, formats  # noqa: E402
from node.runtime.catalog import tolerances  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SEQ = 128


def _inputs(arch: str, cfg: dict[str, int], batch: int, dtype: torch.dtype) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    if arch in ("bert@1", "gpt2@1"):
        seq = min(SEQ, cfg["positions"])
        return {"input_ids": torch.randint(0, cfg["vocab"], (batch, seq), generator=g)}
    if arch == "mlp@1":
        return {"x": torch.randn(batch, cfg["in"], generator=g).to(dtype)}
    return {"x": torch.randn(batch, 3, cfg["image"], cfg["image"], generator=g).to(dtype)}


def _weights(arch: str, dtype: torch.dtype) -> bytes:
    state = formats.parse_safetensors(formats.random_weights(arch, {}, seed=0), "weights")
    return formats.save_safetensors(
        {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    )


def _forward(
    arch: str, weights: bytes, inputs: dict[str, Any], device: str, *, fp64: bool = False
) -> dict[str, Any]:
    model = formats.load_model(arch, {}, weights, device=device)
    if fp64:
        model = model.double()
    return formats.run(arch, {}, model, formats.save_safetensors(inputs), device=device)


def worker(args: argparse.Namespace) -> None:
    """One fresh process: for every model, run batch B, batch ref-batch and batch 1."""
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    dtype = DTYPES[args.dtypes[0]]
    for arch in args.models:
        cfg = catalog.get(arch).resolve({})
        weights = _weights(arch, dtype)
        full = _inputs(arch, cfg, args.batch, dtype)
        outs = {
            "full": _forward(arch, weights, full, args.device),
            "ref": _forward(arch, weights, _head(full, args.ref_batch), args.device),
            "one": _forward(arch, weights, _head(full, 1), args.device),
        }
        d = Path(args.out, arch)
        d.mkdir()
        for name, tensors in outs.items():
            (d / f"{name}.safetensors").write_bytes(formats.save_safetensors(tensors))


def _head(tensors: dict[str, Any], n: int) -> dict[str, Any]:
    return {k: v[:n] for k, v in tensors.items()}


def _rel(got: dict[str, Any], ref: dict[str, Any]) -> float:
    worst = 0.0
    for k, r in ref.items():
        a, b = got[k].double(), r.double()
        scale = max(float(b.abs().max()), 1e-12)
        worst = max(worst, float((a - b).abs().max()) / scale)
    return worst


def _load(d: Path, name: str) -> dict[str, Any]:
    return formats.parse_safetensors((d / f"{name}.safetensors").read_bytes(), name)


def _spawn(args: argparse.Namespace, dt: str, det: bool, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if det:
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    cmd = [
        sys.executable, __file__, "--worker", "--models", *args.models, "--dtypes", dt,
        "--device", args.device, "--batch", str(args.batch), "--ref-batch", str(args.ref_batch),
        "--out", str(out),
    ] + (["--deterministic"] if det else [])  # fmt: skip
    return subprocess.Popen(cmd, env=env)


def run_all(args: argparse.Namespace, tmp: Path) -> dict[tuple[str, bool], list[Path]]:
    """Every (dtype, flags) x ``--procs`` fresh process, all at once (each runs every model)."""
    runs: dict[tuple[str, bool], list[Path]] = {}
    procs = []
    for dt in args.dtypes:
        for det in (True, False):
            for p in range(args.procs):
                out = tmp / f"{dt}-{det}-{p}"
                out.mkdir()
                runs.setdefault((dt, det), []).append(out)
                procs.append(_spawn(args, dt, det, out))
    for proc in procs:
        if proc.wait(timeout=args.timeout) != 0:
            raise SystemExit(f"worker failed: {proc.args}")
    return runs


def measure(
    args: argparse.Namespace, arch: str, dt: str, runs: dict[tuple[str, bool], list[Path]]
) -> dict[str, Any]:
    """Figures for one (model, dtype) from the workers' outputs."""
    row: dict[str, Any] = {"model": arch, "dtype": dt}
    for det, key in ((True, "bitwise_det"), (False, "bitwise_default")):
        hashes = {
            hashlib.sha256((d / arch / "full.safetensors").read_bytes()).hexdigest()
            for d in runs[(dt, det)]
        }
        row[key] = len(hashes) == 1
    first = runs[(dt, True)][0] / arch
    full, one = _load(first, "full"), _load(first, "one")
    row["rel_batch1_vs_full"] = _rel(one, _head(full, 1))
    row["rel_vs_fp64_cpu"] = _rel(_load(first, "ref"), _reference(args, arch))
    spread = max(row["rel_batch1_vs_full"], row["rel_vs_fp64_cpu"])
    row["suggested_bound"] = tolerances.derive_bound(spread)
    row["catalog_bound"] = catalog.tolerance(arch, DTYPES[dt])
    return row


_REFS: dict[str, dict[str, Any]] = {}


def _reference(args: argparse.Namespace, arch: str) -> dict[str, Any]:
    """The float64 CPU reference for either dtype: fp32 weights widened on the CPU."""
    if arch not in _REFS:
        cfg = catalog.get(arch).resolve({})
        ref_in = _head(_inputs(arch, cfg, args.batch, torch.float64), args.ref_batch)
        _REFS[arch] = _forward(arch, _weights(arch, torch.float32), ref_in, "cpu", fp64=True)
    return _REFS[arch]


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(catalog.CATALOG))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ref-batch", type=int, default=8)
    parser.add_argument("--procs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--deterministic", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or pass --device cpu for a dry run")
        return 2
    rows = []
    print(
        "| model | dtype | bitwise, det. flags | bitwise, defaults | batch 1 vs full "
        "| vs fp64 CPU | suggested bound | catalog bound |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_all(args, Path(tmp))
        for arch in args.models:
            for dt in args.dtypes:
                r = measure(args, arch, dt, runs)
                rows.append(r)
                print(
                    f"| {arch} | {dt} | {'yes' if r['bitwise_det'] else 'NO'} "
                    f"| {'yes' if r['bitwise_default'] else 'no'} "
                    f"| {r['rel_batch1_vs_full']:.2e} | {r['rel_vs_fp64_cpu']:.2e} "
                    f"| {r['suggested_bound']:.0e} | {r['catalog_bound']:.0e} |",
                    flush=True,
                )
    print("\nSpread lines for node/runtime/catalog/tolerances.py (add to the rows named):")
    where = f"{args.device}, determinism_gpu.py --batch {args.batch}"
    for r in rows:
        print(f'    # ("{r["model"]}", "{r["dtype"]}")')
        print(f'    Spread({r["rel_vs_fp64_cpu"]:.1e}, "{where}: vs float64 CPU"),')
        print(f'    Spread({r["rel_batch1_vs_full"]:.1e}, "{where}: batch 1 vs {args.batch}"),')
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
