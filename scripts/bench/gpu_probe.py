#!/usr/bin/env python3
"""Which sandbox layers hold around a CUDA lease worker on this host (diagnostics).

    python3 scripts/bench/gpu_probe.py [--device cuda:0]

Prints the host report, then starts a lease worker with every layer the host has and
runs one MLP job on the GPU. If that fails it retries with one layer removed at a time
(insecure override) and prints each outcome and the worker's log, so one run on a GPU
machine says which layer breaks CUDA there. Needs only torch and safetensors.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from node.runtime import detect, formats  # noqa: E402
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool  # noqa: E402

MLP = {"in": 64, "hidden": 64, "depth": 2, "out": 8}


def _try(device: str, layers: frozenset[str] | None, insecure: bool) -> tuple[bool, str]:
    work = tempfile.mkdtemp(prefix="gpunet-probe-")
    cfg = PoolConfig(
        device=device,
        mode="lease",
        timeout_s=120.0,
        layers=layers,
        insecure=insecure,
        debug=True,
        work_dir=work,
    )
    x = formats.save_safetensors({"x": torch.randn(4, 64)})
    det = 1 if device.startswith("cuda") else 0
    req = RunRequest("catalog-v1", "mlp@1", MLP, formats.random_weights("mlp@1", MLP), x, det)
    t0 = time.monotonic()
    try:
        with WorkerPool(cfg) as pool:
            res = pool.run(req)
            took = time.monotonic() - t0
            return True, f"ok in {took:.1f} s; tier {pool.tier}; layers {','.join(res.layers)}"
    except Exception as exc:  # noqa: BLE001 - diagnostics: report every failure
        logs = "".join(p.read_text(errors="replace")[-1500:] for p in Path(work).glob("*.log"))
        return False, f"{type(exc).__name__}: {exc}\n--- worker log ---\n{logs}"


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda:0")
    args = ap.parse_args()
    report = detect.check(device=args.device)
    print(report.to_text(), flush=True)
    have = frozenset(k for k, v in report.layers.items() if v.ok)
    ok, msg = _try(args.device, None, report.tier < 2)
    print(f"all available layers: {msg}", flush=True)
    if ok:
        return 0
    for layer in sorted(have & {"bwrap", "landlock", "seccomp", "cgroup", "uid", "rlimits"}):
        ok, msg = _try(args.device, have - {layer}, True)
        print(f"without {layer}: {msg}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
