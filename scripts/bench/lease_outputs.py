"""Benchmark: lease-mode jobs with large outputs, on one checkout's code.

    python scripts/bench/lease_outputs.py [ROOT]   (ROOT: a checkout; default: this one)

An MLP 16 -> 65,536 on the CPU in a lease-mode pool: 147 rows return 38.5 MB of fp32
outputs, 8 rows 2.1 MB. Prints the median wall time of 25 jobs after 3 warm-ups, per
size. Run it alternately on two checkouts (a worktree of the old commit, this one) to
compare them side by side.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[2])
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from node.runtime import formats  # noqa: E402
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool  # noqa: E402

CONFIG = {"in": 16, "hidden": 16, "depth": 0, "out": 65536}


def main() -> None:
    assert formats.__file__.startswith(ROOT), f"imported {formats.__file__}, not {ROOT}"
    weights = formats.random_weights("mlp@1", CONFIG)
    cfg = PoolConfig(mode="lease", threads=2, timeout_s=60, max_output_bytes=1 << 30)
    medians = {}
    for rows in (147, 8):
        x = formats.save_safetensors({"x": torch.randn(rows, 16)})
        req = RunRequest("catalog-v1", "mlp@1", CONFIG, weights, x)
        with WorkerPool(cfg) as pool:
            for _ in range(3):
                pool.run(req)
            times = []
            for _ in range(25):
                t0 = time.perf_counter()
                pool.run(req)
                times.append((time.perf_counter() - t0) * 1000)
        medians[rows] = statistics.median(times)
    print(ROOT, " ".join(f"rows={k}: {v:.2f} ms" for k, v in medians.items()))


if __name__ == "__main__":
    main()
