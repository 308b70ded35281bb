"""Marketplace overhead per tiny job and sustained jobs/s per provider, on a local devnet.

One run, side by side: the same tiny job (catalog MLP, batch 2) is timed
(a) bare, in this process, single-threaded like a sandbox slot (build + load +
forward), and (b) through the whole marketplace (offer selection,
JobRequest/JobAccept over libp2p, createJob and its notice, blob fetches, the
sandboxed run, attestation, submitResult, result delivery, checks,
acceptResult). Overhead is (b) minus the median of (a). Then ``--concurrency``
jobs at a time measure sustained throughput against that one provider, with
the CPU each job cost by process kind and how large the natural batches grew
(``node/batching.py``: concurrent jobs share streams, transactions and
sandbox children).

The provider daemon runs in this process; the client runs in a process of its
own (as it would on the user's machine: one Python process has one GIL, and
with both roles in one process that process, not the provider, was the limit).

    .venv/bin/python scripts/bench/e2e.py [--jobs 40] [--throughput-jobs 400] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from node.batching import KeyedBatchers, NaturalBatcher
from node.chain.anvil import Anvil
from node.chain.devnet import TOKEN, Devnet
from node.client import AsyncClient
from node.p2p.config import P2PConfig
from node.provider import ProviderDaemon, ProviderSettings
from node.runtime import formats
from node.runtime.pool import PoolConfig, WorkerPool
from node.store.store import Store
from protocol.identity import Identity

MLP = {"in": 16, "hidden": 32, "depth": 1, "out": 4}
PRICE = 10**12
Batchers = NaturalBatcher[Any, Any] | KeyedBatchers[Any, Any, Any]
KINDS = ("client (its own process)", "provider (this process)", "anvil", "sandbox processes")


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


def _cpu_seconds(client_pid: int) -> dict[str, float]:
    """CPU seconds used so far by this process tree, by kind: the client process, this
    process (the provider and its libp2p thread), anvil, and the sandbox pool's
    processes (exited workers count in their parent's children times)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = dict.fromkeys(KINDS, 0.0)
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
            out[KINDS[1]] += (utime + stime) / tick
        elif pid == client_pid:
            out[KINDS[0]] += (utime + stime) / tick
        elif pid in _proc_tree(client_pid):
            continue
        else:
            kind = KINDS[2] if "anvil" in name else KINDS[3]
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


def _inputs(n: int) -> list[torch.Tensor]:
    return [torch.randn(2, 16, generator=torch.Generator().manual_seed(i)) for i in range(n)]


def _say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


# ------------------------------------------------------------------ the client process
async def client_main(cfg: dict[str, Any]) -> None:
    """The client side: sequential jobs (latency), then the throughput run; reports
    on stdout, one JSON object a line (``start`` and ``end`` bracket the throughput run)."""
    xs = _inputs(cfg["jobs"])
    job = ("mlp@1", MLP, formats.random_weights("mlp@1", MLP, seed=1))
    client = AsyncClient(
        Identity.from_private_key(bytes.fromhex(os.environ["GPUNET_BENCH_KEY"])),
        rpc_url=cfg["rpc"],
        escrow_address=bytes.fromhex(cfg["escrow"]),
        p2p_config=P2PConfig(chain_id=cfg["chain_id"], contract=bytes.fromhex(cfg["escrow"])),
        data_dir=Path(cfg["data_dir"]),
        lanes=256,
        poll_interval_s=cfg["poll"],
    )
    async with client:
        await client.connect(cfg["provider"])
        await client.wait_for_offers(1, 30)
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
        gate = asyncio.Semaphore(cfg["concurrency"])

        async def one(i: int) -> None:
            async with gate:
                await client.run(job, {"x": xs[i % len(xs)]}, max_price=PRICE)

        batchers: dict[str, Batchers] = {
            "client: job requests (streams)": client._requesters,
            "client: createJob(s)": client._creator,
            "client: created notices (streams)": client._notifiers,
            "client: ResultSubmitted look-ups": client._submitted_lookup,
            "client: acceptResult / finalizeMany": client._acceptor,
        }
        counts0 = {k: (b.batches, b.items) for k, b in batchers.items()}
        _say(ev="start")
        t = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(cfg["throughput_jobs"])))
        elapsed = time.perf_counter() - t
        sizes = {
            k: (b.items - counts0[k][1]) / max(1, b.batches - counts0[k][0])
            for k, b in batchers.items()
        }
        _say(ev="end", elapsed=elapsed, latency=latency, stages=stages, batches=sizes)


# ------------------------------------------------------------------ the provider side
async def main_async(args: argparse.Namespace) -> None:
    weights = formats.random_weights("mlp@1", MLP, seed=1)
    torch.set_num_threads(1)  # like a sandbox slot (PoolConfig threads=1)
    bare: list[float] = []
    for x in _inputs(args.jobs):
        t = time.perf_counter()
        model = formats.load_model("mlp@1", MLP, weights)
        formats.run("mlp@1", MLP, model, formats.save_safetensors({"x": x}))
        bare.append(time.perf_counter() - t)
    with Anvil() as anvil, tempfile.TemporaryDirectory() as tmp:
        fsync_ms = _fsync_ms(Path(tmp))
        devnet = Devnet(anvil.url)
        prov = devnet.provider()
        client_actor = devnet.actor(deposit=10_000 * TOKEN)
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
            cfg = {
                "rpc": anvil.url,
                "escrow": devnet.escrow.address.hex(),
                "chain_id": dom.chain_id,
                "provider": (await daemon.p2p.addrs())[0],
                "data_dir": str(Path(tmp) / "c"),
                "poll": args.poll,
                "jobs": args.jobs,
                "throughput_jobs": args.throughput_jobs,
                "concurrency": args.concurrency,
            }
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--client-child",
                json.dumps(cfg),
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "GPUNET_BENCH_KEY": client_actor.identity.private_key.hex()},
            )
            provider_batchers: dict[str, Batchers] = {
                "provider: sandbox runs (children)": daemon._runners,
                "provider: result deliveries (streams)": daemon._deliverers,
            }
            assert child.stdout is not None
            report: dict[str, Any] = {}
            async for line in child.stdout:
                event = json.loads(line)
                if event["ev"] == "start":
                    counts0 = {k: (b.batches, b.items) for k, b in provider_batchers.items()}
                    cpu0 = _cpu_seconds(child.pid)
                elif event["ev"] == "end":
                    cpu1 = _cpu_seconds(child.pid)
                    report = event
                    for k, b in provider_batchers.items():
                        n = b.items - counts0[k][1]
                        report["batches"][k] = n / max(1, b.batches - counts0[k][0])
            if await child.wait() != 0 or not report:
                raise SystemExit(f"the client process failed (exit {child.returncode})")
            stop.set()
            await runner
    _print(args, report, bare=bare, fsync_ms=fsync_ms, cpu0=cpu0, cpu1=cpu1)


def _print(
    args: argparse.Namespace,
    report: dict[str, Any],
    *,
    bare: list[float],
    fsync_ms: float,
    cpu0: dict[str, float],
    cpu1: dict[str, float],
) -> None:
    bare_ms = statistics.median(bare) * 1000
    latency = report["latency"]
    overhead = [v * 1000 - bare_ms for v in latency]
    n = args.throughput_jobs
    print(f"# e2e, {args.jobs} sequential tiny jobs, then {n} at concurrency "
          f"{args.concurrency}; pool slots {args.slots}; poll {args.poll} s")  # fmt: skip
    print(f"# load average at the end: {os.getloadavg()[0]:.1f}")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| bare compute, median | {bare_ms:.2f} ms |")
    print(f"| one fsync on this disk, median | {fsync_ms:.2f} ms |")
    print(f"| marketplace latency, p50 / p95 | {_pct(latency, .5) * 1000:.1f} / "
          f"{_pct(latency, .95) * 1000:.1f} ms |")  # fmt: skip
    print(f"| overhead (latency − bare), p50 / p95 | {_pct(overhead, .5):.1f} / "
          f"{_pct(overhead, .95):.1f} ms |")  # fmt: skip
    print(f"| sustained throughput, one provider | {n / report['elapsed']:.1f} jobs/s |")
    print("\n| CPU per job during the throughput run (all cores) | ms |")
    print("|---|---:|")
    for kind in KINDS:
        print(f"| {kind} | {(cpu1[kind] - cpu0[kind]) * 1000 / n:.1f} |")
    total = sum(cpu1.values()) - sum(cpu0.values())
    print(f"| total | {total * 1000 / n:.1f} |")
    print("\n| natural batching during the throughput run | mean items per batch |")
    print("|---|---:|")
    for name, size in report["batches"].items():
        print(f"| {name} | {size:.1f} |" if size else f"| {name} | none |")
    print("\n| time until the client's progress stage (ms since the previous one) | median |")
    print("|---|---:|")
    for name, values in report["stages"].items():
        print(f"| {name} | {statistics.median(values):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--throughput-jobs", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument(
        "--poll",
        type=float,
        default=0.25,
        help="chain follower poll interval (a fallback: notices and lookups drive a job)",
    )
    parser.add_argument("--client-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_child:
        asyncio.run(client_main(json.loads(args.client_child)))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
