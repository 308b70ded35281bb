"""CPU per tiny job of the CPU sandbox pool (fork mode), all its processes together.

    .venv/bin/python scripts/bench/pool_cpu.py [--jobs 100] [--gap-ms 20]
    .venv/bin/python scripts/bench/pool_cpu.py --compare [--jobs 100] [--gap-ms 0 30]

Runs catalog MLP 16->32->4 at batch 2 (the job of scripts/bench/e2e.py) through
``WorkerPool.run`` one job at a time, ``--gap-ms`` apart, and reports the median
latency of ``run`` and the CPU per job of the pool's process tree (zygotes, their
children, bwrap; from ``/proc``, reaped children included) and of this process (the
supervisor, helper threads included). On two cores that CPU competes with the client,
the provider and the chain for the job's critical path.

``--compare`` measures tenant-less jobs (a fresh child each) against one tenant's
jobs (``RunRequest.tenant``: a kept child reused) side by side: blocks of ``--block``
jobs of each kind alternate, for each ``--gap-ms``; each block's CPU is counted until
``keep_idle_s`` + 0.3 s after its last job, so a kept child's retirement falls in its
own block.
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


def _bare_ms(weights: bytes, inputs: list[bytes]) -> float:
    """Median ms of the same jobs run bare in this process (model loaded, exact tier)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = formats.load_model("mlp@1", MLP, weights)
    times = []
    for x in inputs:
        t = time.perf_counter()
        formats.encode_outputs(formats.run("mlp@1", MLP, model, x))
        times.append(time.perf_counter() - t)
    torch.use_deterministic_algorithms(False)
    return statistics.median(times[1:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100, help="per kind and gap")
    parser.add_argument("--gap-ms", type=float, nargs="+", default=[20.0])
    parser.add_argument("--compare", action="store_true", help="tenant-less vs one tenant")
    parser.add_argument("--block", type=int, default=10, help="jobs per block (--compare)")
    args = parser.parse_args()
    weights = formats.random_weights("mlp@1", MLP, seed=1)
    inputs = [
        formats.save_safetensors(
            {"x": torch.randn(2, 16, generator=torch.Generator().manual_seed(i))}
        )
        for i in range(args.jobs + 5)
    ]

    def job(i: int, tenant: bytes | None = None) -> RunRequest:
        return RunRequest(
            format="catalog-v1",
            arch="mlp@1",
            config=MLP,
            weights=weights,
            inputs=inputs[i],
            tenant=tenant,
        )

    cfg = PoolConfig(slots=2, threads=1, timeout_s=30)
    kinds = {"tenant-less (fresh child)": None}
    if args.compare:
        kinds["same tenant (kept child)"] = b"\x01" * 20
    block = args.block if args.compare else args.jobs
    settle = cfg.keep_idle_s + 0.3 if args.compare else 0.5
    rows = []
    with WorkerPool(cfg) as pool:
        for i in range(5):  # warm: model cache, prepared children
            pool.run(job(args.jobs + i))
        time.sleep(0.5)
        for gap in args.gap_ms:
            latency: dict[str, list[float]] = {k: [] for k in kinds}
            own = dict.fromkeys(kinds, 0.0)
            tree = dict.fromkeys(kinds, 0.0)
            for start in range(0, args.jobs, block):
                for kind, tenant in kinds.items():  # alternating blocks, same inputs
                    own0, tree0 = time.process_time(), _tree_cpu_s()
                    for i in range(start, min(args.jobs, start + block)):
                        t = time.perf_counter()
                        pool.run(job(i, tenant))
                        latency[kind].append(time.perf_counter() - t)
                        time.sleep(gap / 1000)
                    time.sleep(settle)  # the last child's retirement, the next's preparation
                    tree[kind] += _tree_cpu_s() - tree0
                    own[kind] += time.process_time() - own0
            for kind in kinds:
                n = len(latency[kind])
                rows.append(
                    (
                        gap,
                        kind,
                        statistics.median(latency[kind]) * 1000,
                        (tree[kind] - own[kind]) / n * 1000,
                        own[kind] / n * 1000,
                    )
                )
    bare = _bare_ms(weights, inputs[: args.jobs])
    print(f"# {args.jobs} tiny jobs per kind and gap; load {os.getloadavg()[0]:.1f}")
    print(f"# bare in-process run + output encoding, median: {bare:.2f} ms")
    print(
        "| gap ms | jobs | `run` latency, median ms | CPU/job, pool processes ms"
        " | CPU/job, supervisor ms |"
    )
    print("|---:|---|---:|---:|---:|")
    for gap, kind, lat, pool_ms, sup_ms in rows:
        print(f"| {gap:g} | {kind} | {lat:.2f} | {pool_ms:.1f} | {sup_ms:.1f} |")


if __name__ == "__main__":
    main()
