"""CPU per tiny job of the CPU sandbox pool (fork mode), all its processes together.

    .venv/bin/python scripts/bench/pool_cpu.py [--jobs 100] [--gap-ms 20]

Runs catalog MLP 16->32->4 at batch 2 (the job of scripts/bench/e2e.py) through
``WorkerPool.run`` one job at a time, ``--gap-ms`` apart, and reports the median
latency of ``run`` and the CPU per job of the pool's process tree (zygotes, their
children, bwrap; from ``/proc``, reaped children included) and of this process (the
supervisor). On two cores that CPU competes with the client, the provider and the
chain for the job's critical path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path

import torch

from node.runtime import formats
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool

MLP = {"in": 16, "hidden": 32, "depth": 1, "out": 4}


def _tree_cpu_s() -> float:
    """CPU seconds of this process and every descendant (with reaped children's)."""
    tick = os.sysconf("SC_CLK_TCK")
    todo, seen = [os.getpid()], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    total = 0.0
    for pid in seen:  # a live process's own time plus that of the children it reaped
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(x) for x in fields[11:15]) / tick
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    args = parser.parse_args()
    weights = formats.random_weights("mlp@1", MLP, seed=1)
    inputs = [
        formats.save_safetensors(
            {"x": torch.randn(2, 16, generator=torch.Generator().manual_seed(i))}
        )
        for i in range(args.jobs + 5)
    ]

    def job(i: int) -> RunRequest:
        return RunRequest(
            format="catalog-v1", arch="mlp@1", config=MLP, weights=weights, inputs=inputs[i]
        )

    with WorkerPool(PoolConfig(slots=2, threads=1, timeout_s=30)) as pool:
        for i in range(5):  # warm: model cache, prepared children
            pool.run(job(args.jobs + i))
        time.sleep(0.5)
        own0, tree0 = time.process_time(), _tree_cpu_s()
        latency = []
        for i in range(args.jobs):
            t = time.perf_counter()
            pool.run(job(i))
            latency.append(time.perf_counter() - t)
            time.sleep(args.gap_ms / 1000)
        time.sleep(0.5)  # the last child's exit and the next one's preparation
        tree1, own1 = _tree_cpu_s(), time.process_time()
    own = (own1 - own0) / args.jobs * 1000
    total = (tree1 - tree0) / args.jobs * 1000
    print(f"# {args.jobs} tiny jobs {args.gap_ms:g} ms apart; load {os.getloadavg()[0]:.1f}")
    print("| measure | ms |")
    print("|---|---:|")
    print(f"| `run` latency, median | {statistics.median(latency) * 1000:.2f} |")
    print(f"| CPU per job, pool processes | {total - own:.1f} |")
    print(f"| CPU per job, this process (supervisor) | {own:.1f} |")


if __name__ == "__main__":
    main()
