"""P2P benchmarks (issue 4): connection setup, job round trip, blob throughput, offer
propagation across peer processes, order-book queries.

    .venv/bin/python scripts/bench/p2p.py [--sizes 10,30] [--quick] [--write docs/benchmarks.md]

Prints a markdown section; ``--write`` replaces the "## P2P (issue 4)" section of
the given file (creating the file if needed). All numbers are medians on loopback.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from p2p_cluster import Cluster, PeerProcess

from node.p2p.config import P2PConfig
from node.p2p.node import P2PNode
from node.p2p.orderbook import OrderBook
from protocol.identity import Identity
from protocol.messages import Capabilities, Determinism, JobFormat, Offer

CHAIN_ID = 31337
CONTRACT = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
MB = 1_000_000


def config() -> P2PConfig:
    return P2PConfig(
        chain_id=CHAIN_ID, contract=CONTRACT, enable_dht=False, eclipse_protection=False
    )


# ---------------------------------------------------------------- connection setup
def bench_connect(n: int = 20) -> dict[str, float]:
    """Fresh dialer -> listener: TCP + Noise + yamux handshake, same process."""
    times: list[float] = []

    async def main() -> None:
        listener = P2PNode(Identity.generate(), config())
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.run)
            addr = listener.addrs()[0]
            for _ in range(n):
                dialer = P2PNode(Identity.generate(), config())
                async with trio.open_nursery() as inner:
                    await inner.start(dialer.run)
                    t0 = time.perf_counter()
                    await dialer.connect(addr)
                    times.append((time.perf_counter() - t0) * 1000)
                    inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()

    trio.run(main)
    return {"median_ms": statistics.median(times), "p90_ms": sorted(times)[int(0.9 * n) - 1]}


# ---------------------------------------------------------------- job + blobs
def bench_jobs_and_blobs(
    sizes_mb: list[int], rounds: int, store: str, paths: tuple[tuple[str, int], ...]
) -> dict[str, Any]:
    server = PeerProcess(dht=False, store=store)
    client = PeerProcess([server.addr], dht=False, store=store)
    out: dict[str, Any] = {}
    try:
        client.wait_ready()
        time.sleep(1.0)
        job_ms = [client.ask("job", cmd="job", peer=server.peer_id)["ms"] for _ in range(50)]
        out["job_ms"] = statistics.median(job_ms[5:])
        out["blobs"] = {}
        for size in sizes_mb:
            cid = server.ask("blob", 120, cmd="put_blob", size=size * MB)["cid"]
            row: dict[str, float] = {}
            for via, parallel in paths:
                n = rounds if (via != "libp2p" or size <= 64) else 1
                rates = []
                for _ in range(n):
                    got = client.ask(
                        "fetched",
                        300,
                        cmd="fetch",
                        peer=server.peer_id,
                        cid=cid,
                        via=via,
                        parallel=parallel,
                    )
                    rates.append(got["size"] / got["seconds"] / MB)
                row[f"{via}/{parallel}"] = statistics.median(rates)
                row[f"{via}/{parallel}/best"] = max(rates)
            out["blobs"][size] = row
    finally:
        server.close()
        client.close()
    return out


# ---------------------------------------------------------------- propagation
def bench_propagation(n: int, messages: int) -> dict[str, float]:
    """Time from publish until 95 % / 100 % of the other peers have the offer."""
    t_start = time.monotonic()
    with Cluster(n, extra=3) as cluster:
        startup = time.monotonic() - t_start
        cluster.wait_mesh()
        time.sleep(2.0)  # let the mesh settle after a few heartbeats
        rng = random.Random(7)
        p95s, alls, delivered = [], [], []
        for nonce in range(1, messages + 1):
            pub = rng.choice(cluster.peers)
            before = [len(p.offers) for p in cluster.peers]
            t_pub = pub.ask("published", cmd="publish", nonce=nonce)["t"]
            others = [p for p in cluster.peers if p is not pub]
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if all(
                    any(o["provider"] == pub.address and o["nonce"] == nonce for o in p.offers)
                    for p in others
                ):
                    break
                time.sleep(0.02)
            lat = []
            for p in others:
                hits = [
                    o["t"] for o in p.offers if o["provider"] == pub.address and o["nonce"] == nonce
                ]
                if hits:
                    lat.append(hits[0] - t_pub)
            delivered.append(len(lat) / len(others))
            lat.sort()
            need95 = max(1, -(-95 * len(others) // 100))
            if len(lat) >= need95:
                p95s.append(lat[need95 - 1] * 1000)
            if len(lat) == len(others):
                alls.append(lat[-1] * 1000)
            del before
            time.sleep(0.3)
    return {
        "peers": n,
        "startup_s": startup,
        "p95_ms": statistics.median(p95s) if p95s else float("nan"),
        "all_ms": statistics.median(alls) if alls else float("nan"),
        "delivered": statistics.mean(delivered),
        "messages": messages,
    }


# ---------------------------------------------------------------- order book
def bench_orderbook(n: int = 10_000) -> dict[str, float]:
    rng = random.Random(3)
    classes = ["cpu", "nvidia-h200", "nvidia-a100", "nvidia-l4", "nvidia-4090", "amd-mi300"]
    stakes: dict[bytes, int] = {}
    book = OrderBook(stake_lookup=stakes.__getitem__)
    template = Offer.create(
        Identity.generate(),
        chain_id=CHAIN_ID,
        contract=CONTRACT,
        price_per_gpu_second=1,
        nonce=1,
        expiry=int(time.time()) + 3600,
        capabilities=Capabilities(
            device_class="cpu",
            gpu_model="x",
            gpu_memory_mib=0,
            gpu_count=1,
            sandbox_tier=0,
            formats=(JobFormat.CATALOG_V1,),
            determinism=(Determinism.EXACT,),
            runtimes=("torch",),
            max_job_bytes=1,
        ),
    )
    import msgspec

    for i in range(n):
        provider = i.to_bytes(20, "big")
        caps = msgspec.structs.replace(
            template.capabilities,
            device_class=rng.choice(classes),
            gpu_memory_mib=rng.choice([16_000, 24_000, 48_000, 80_000, 141_000]),
            gpu_count=rng.choice([1, 2, 4, 8]),
            sandbox_tier=rng.randint(0, 3),
        )
        offer = msgspec.structs.replace(
            template,
            provider=provider,
            price_per_gpu_second=rng.randint(1, 10_000),
            capabilities=caps,
        )
        stakes[provider] = rng.randint(0, 10**6)
        book.add(offer, "p")
    queries = {
        "class+memory+price (typical)": {
            "device_class": "nvidia-h200",
            "min_gpu_memory_mib": 80_000,
            "max_price": 5000,
        },
        "all filters incl. stake": {
            "device_class": "nvidia-a100",
            "min_gpu_memory_mib": 48_000,
            "max_price": 8000,
            "min_sandbox_tier": 2,
            "min_stake": 500_000,
        },
        "cheapest 20 overall": {},
        "worst case: nothing matches (full scan)": {"min_gpu_memory_mib": 10**9},
    }
    out = {}
    for name, q in queries.items():
        reps = 200
        t0 = time.perf_counter()
        for _ in range(reps):
            book.query(**q)  # type: ignore[arg-type]
        out[name] = (time.perf_counter() - t0) / reps * 1e6
    return out


# ---------------------------------------------------------------- report
def render(r: dict[str, Any], command: str) -> str:
    lines = [
        "## P2P (issue 4)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {r['cpus']} cores shared with other jobs "
        f"(load average at start {r['load']}), Python {platform.python_version()}, "
        "py-libp2p 0.8.1, loopback only. Medians.",
        "",
        "| what | result |",
        "|---|---|",
        f"| connection setup (TCP + Noise + yamux, fresh dialer) | "
        f"{r['connect']['median_ms']:.1f} ms (p90 {r['connect']['p90_ms']:.1f} ms) |",
        f"| job round trip (asyncio -> bridge -> `/gpunet/job/1.0.0` -> accept, "
        f"two processes) | {r['jobs']['job_ms']:.1f} ms |",
    ]
    for size, row in r["jobs"]["blobs"].items():
        lines.append(
            f"| blob {size} MB, store on {r['store']}: data plane 1 conn / 4 conn / "
            f"libp2p yamux | {_rate(row, 'dataplane/1')} / {_rate(row, 'dataplane/4')} / "
            f"{_rate(row, 'libp2p/1')} MB/s |"
        )
    d = r["disk"]
    lines.append(
        f"| blob {d['size']} MB, store on disk (ext4 on the VM disk): data plane 1 conn / "
        f"4 conn | {_rate(d, 'dataplane/1')} / {_rate(d, 'dataplane/4')} MB/s |"
    )
    for p in r["propagation"]:
        lines.append(
            f"| offer propagation, {p['peers']} peer processes ({p['messages']} offers, "
            f"{p['delivered'] * 100:.0f} % delivered) | 95 %: {p['p95_ms']:.0f} ms, "
            f"100 %: {p['all_ms']:.0f} ms (start-up {p['startup_s']:.0f} s) |"
        )
    for name, us in r["orderbook"].items():
        lines.append(f"| order book, 10,000 offers, query {name} | {us:.0f} µs |")
    lines += [
        "",
        "Blob rates are medians of `--rounds` fetches, the best in brackets where it "
        "differs by more than 5 %; the box's load swung during the runs. "
        "Blob throughput is end to end: ticket over libp2p, transfer, write into the "
        "store's partial file, sha256 of the whole blob, move into the store. On disk the "
        "figure also depends on the VM disk's writeback: a plain 256 MB `pwrite` loop "
        "measured anywhere from 200 MB/s to 5 GB/s on this box, depending on other jobs. "
        "Propagation times are from the "
        "publisher's `publish` call to each receiver's order-book callback "
        "(wall clocks of one machine).",
        "",
    ]
    return "\n".join(lines)


def _rate(row: dict[str, float], key: str) -> str:
    median, best = row[key], row.get(key + "/best", row[key])
    return f"{median:.0f} ({best:.0f})" if best > median * 1.05 else f"{median:.0f}"


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    marker = "## P2P (issue 4)"
    if marker in text:
        start = text.index(marker)
        nxt = text.find("\n## ", start + len(marker))
        text = text[:start] + section + (text[nxt + 1 :] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,30", help="peer counts for propagation")
    parser.add_argument("--blob-mb", default="1,64,256")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load": f"{os.getloadavg()[0]:.1f}"}
    print("order book ...", file=sys.stderr)
    results["orderbook"] = bench_orderbook()
    print("connection setup ...", file=sys.stderr)
    results["connect"] = bench_connect()
    print("job round trip and blobs ...", file=sys.stderr)
    all_paths = (("dataplane", 1), ("dataplane", 4), ("libp2p", 1))
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else ""
    sizes = [int(x) for x in args.blob_mb.split(",")]
    results["jobs"] = bench_jobs_and_blobs(sizes, args.rounds, shm, all_paths)
    results["store"] = "tmpfs (/dev/shm)" if shm else "disk"
    print("blobs to disk ...", file=sys.stderr)
    disk = bench_jobs_and_blobs([max(sizes)], args.rounds, "", all_paths[:2])
    results["disk"] = {"size": max(sizes), **disk["blobs"][max(sizes)]}
    results["propagation"] = []
    for n in [int(x) for x in args.sizes.split(",") if x]:
        print(f"propagation, {n} peers ...", file=sys.stderr)
        results["propagation"].append(bench_propagation(n, args.messages))
    print(json.dumps(results, indent=1), file=sys.stderr)
    command = "python " + " ".join(["scripts/bench/p2p.py", *sys.argv[1:]])
    section = render(results, command)
    print(section)
    if args.write:
        write_section(args.write, section)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    import os

    os._exit(0)
