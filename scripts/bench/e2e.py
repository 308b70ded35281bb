"""Marketplace overhead per tiny job and sustained jobs/s per provider, on a local devnet.

One run, side by side: the same tiny job (catalog MLP, batch 2) is timed
(a) bare, in this process, single-threaded like a sandbox slot (build + load +
forward), and (b) through the whole marketplace (offer selection,
JobRequest/JobAccept over libp2p, createJob and its notice, blob fetches, the
sandboxed run, attestation, submitResult, result delivery, checks,
acceptResult) with one in-process provider. Overhead is (b) minus the median
of (a). Then ``--concurrency`` jobs at a time measure sustained throughput
against that one provider, with the CPU each job cost by process kind (what
bounds throughput on a small machine).

    .venv/bin/python scripts/bench/e2e.py [--jobs 40] [--throughput-jobs 120] [--concurrency 24]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from node.chain.anvil import Anvil
from node.chain.devnet import TOKEN, Devnet
from node.client import AsyncClient
from node.p2p.config import P2PConfig
from node.provider import ProviderDaemon, ProviderSettings
from node.runtime import formats
from node.runtime.pool import PoolConfig, WorkerPool
from node.store.store import Store

MLP = {"in": 16, "hidden": 32, "depth": 1, "out": 4}
PRICE = 10**12


def _proc_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process tree, by kind: this process (client,
    provider, libp2p threads), anvil, and the sandbox pool's processes (exited
    workers count in their parent's children times)."""
    tick = os.sysconf("SC_CLK_TCK")
    kinds = ("client + provider (this process)", "anvil", "sandbox processes")
    out = dict.fromkeys(kinds, 0.0)
    me = os.getpid()
    for pid in _proc_tree(me):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        if pid == me:  # our children are counted on their own
            out[kinds[0]] += (utime + stime) / tick
        else:
            kind = kinds[1] if "anvil" in name else kinds[2]
            out[kind] += (utime + stime + cutime + cstime) / tick
    return out


def _fsync_ms(directory: Path, n: int = 40) -> float:
    """Median time of a 100-byte append + fsync here (every durable commit pays one)."""
    times = []
    with (directory / "fsync-probe").open("ab") as fh:
        for _ in range(n):
            t = time.perf_counter()
            fh.write(b"x" * 100)
            fh.flush()
            os.fsync(fh.fileno())
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main_async(args: argparse.Namespace) -> None:
    weights = formats.random_weights("mlp@1", MLP, seed=1)
    xs = [torch.randn(2, 16, generator=torch.Generator().manual_seed(i)) for i in range(args.jobs)]
    torch.set_num_threads(1)  # like a sandbox slot (PoolConfig threads=1)
    bare: list[float] = []
    for x in xs:
        t = time.perf_counter()
        model = formats.load_model("mlp@1", MLP, weights)
        formats.run("mlp@1", MLP, model, formats.save_safetensors({"x": x}))
        bare.append(time.perf_counter() - t)
    with Anvil() as anvil, tempfile.TemporaryDirectory() as tmp:
        fsync_ms = _fsync_ms(Path(tmp))
        devnet = Devnet(anvil.url)
        prov = devnet.provider()
        client_actor = devnet.actor(deposit=1000 * TOKEN)
        dom = devnet.escrow.domain
        p2p = P2PConfig(chain_id=dom.chain_id, contract=dom.verifying_contract)
        pool_cfg = PoolConfig(slots=args.slots, threads=1, timeout_s=30)
        with WorkerPool(pool_cfg) as pool, Store(Path(tmp) / "p.sqlite") as store:
            daemon = ProviderDaemon(
                prov.identity,
                rpc_url=anvil.url,
                escrow_address=devnet.escrow.address,
                p2p_config=p2p,
                pool=pool,
                store=store,
                data_dir=Path(tmp) / "p",
                settings=ProviderSettings(
                    price_per_gpu_second=PRICE,
                    known_archs=frozenset({"mlp@1"}),
                    max_concurrent_jobs=args.slots * 2,
                    queue_size=1024,
                    offer_interval_s=1,
                    poll_interval_s=args.poll,
                ),
            )
            stop = asyncio.Event()
            runner = asyncio.create_task(daemon.run(stop))
            await daemon.ready.wait()
            client = AsyncClient(
                client_actor.identity,
                rpc_url=anvil.url,
                escrow_address=devnet.escrow.address,
                p2p_config=p2p,
                data_dir=Path(tmp) / "c",
                lanes=256,
                poll_interval_s=args.poll,
            )
            async with client:
                await client.connect((await daemon.p2p.addrs())[0])
                await client.wait_for_offers(1, 30)
                job = ("mlp@1", MLP, weights)
                await client.run(job, {"x": xs[0]}, max_price=PRICE)  # warm: caches, lanes
                latency: list[float] = []
                stages: dict[str, list[float]] = {}
                for x in xs:
                    marks: list[tuple[str, float]] = [("start", time.perf_counter())]

                    def mark(stage: str, _: str, marks: list[tuple[str, float]] = marks) -> None:
                        marks.append((stage, time.perf_counter()))

                    await client.run(job, {"x": x}, max_price=PRICE, progress=mark)
                    marks.append(("done", time.perf_counter()))
                    latency.append(marks[-1][1] - marks[0][1])
                    for (_, t0), (name, t1) in itertools.pairwise(marks):
                        stages.setdefault(name, []).append((t1 - t0) * 1000)
                gate = asyncio.Semaphore(args.concurrency)

                async def one(i: int) -> None:
                    async with gate:
                        await client.run(job, {"x": xs[i % len(xs)]}, max_price=PRICE)

                cpu0, t = _cpu_seconds(), time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(args.throughput_jobs)))
                elapsed = time.perf_counter() - t
                cpu1 = _cpu_seconds()
            stop.set()
            await runner
    bare_ms = statistics.median(bare) * 1000
    overhead = [v * 1000 - bare_ms for v in latency]
    load = os.getloadavg()[0]
    print(f"# e2e, {args.jobs} sequential tiny jobs, then {args.throughput_jobs} at concurrency "
          f"{args.concurrency}; pool slots {args.slots}; poll {args.poll} s")  # fmt: skip
    print(f"# load average at the end: {load:.1f}")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| bare compute, median | {bare_ms:.2f} ms |")
    print(f"| one fsync on this disk, median | {fsync_ms:.2f} ms |")
    print(f"| marketplace latency, p50 / p95 | {_pct(latency, .5) * 1000:.1f} / "
          f"{_pct(latency, .95) * 1000:.1f} ms |")  # fmt: skip
    print(f"| overhead (latency − bare), p50 / p95 | {_pct(overhead, .5):.1f} / "
          f"{_pct(overhead, .95):.1f} ms |")  # fmt: skip
    print(f"| sustained throughput, one provider | {args.throughput_jobs / elapsed:.1f} jobs/s |")
    print("\n| CPU per job during the throughput run (all cores) | ms |")
    print("|---|---:|")
    for kind, before in cpu0.items():
        print(f"| {kind} | {(cpu1[kind] - before) * 1000 / args.throughput_jobs:.1f} |")
    total = sum(cpu1.values()) - sum(cpu0.values())
    print(f"| total | {total * 1000 / args.throughput_jobs:.1f} |")
    print("\n| time until the client's progress stage (ms since the previous one) | median |")
    print("|---|---:|")
    for name, values in stages.items():
        print(f"| {name} | {statistics.median(values):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--throughput-jobs", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument(
        "--poll",
        type=float,
        default=0.25,
        help="chain follower poll interval (a fallback: notices and lookups drive a job)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
