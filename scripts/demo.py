"""The devnet demo (the README's first command): a whole marketplace on this machine.

Starts anvil, deploys the test token, the escrow and the verifier committee,
funds and stakes three provider accounts and one verifier, starts three
``gpunet provider start`` daemons (one configured to decline every third
request) and a ``gpunet verify`` daemon as separate processes, then a client
submits real inference jobs (catalog ResNet-18 with seeded random weights, a
mix of batch sizes) and prints one row per job, what the verifier re-ran
(scraped from its ``/metrics``) and the final balances, checking that money
is conserved. Everything is cleaned up at the end.

    scripts/demo.sh [--jobs 24] [--concurrency 3] [--sample-rate 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import torch
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from node.chain.anvil import Anvil, free_port
from node.chain.devnet import TOKEN, Actor, Devnet
from node.client import AsyncClient, Result
from node.keys import create_keystore
from node.p2p.config import P2PConfig
from node.runtime import detect, formats
from protocol.identity import checksum_address

ROOT = Path(__file__).resolve().parent.parent
console = Console(width=None if sys.stdout.isatty() else 150)
PASSWORD = "devnet-demo"
ARCH = "resnet18@1"
CONFIG = {"width": 8, "classes": 10, "image": 32}
PRICES = (2_000_000_000_000, 3_000_000_000_000, 2_500_000_000_000)  # per GPU-second
BATCHES = (1, 2, 4, 8)


def _node_config(home: Path, devnet: Devnet, actor: Actor, price: int, untrusted: bool) -> Path:
    keystore = home / "keystore.json"
    create_keystore(keystore, PASSWORD, identity=actor.identity, scrypt_n=2**12)
    cfg = home / "gpunet.toml"
    cfg.write_text(
        f"""[node]
data_dir = "{home}"
keystore = "keystore.json"
log_level = "warning"

[chain]
rpc_url = "{devnet.rpc.url}"
chain_id = {devnet.escrow.domain.chain_id}
escrow_address = "{checksum_address(devnet.escrow.address)}"
poll_interval_s = 0.05

[p2p]
listen_addrs = ["/ip4/127.0.0.1/tcp/0"]
mdns = false

[provider]
price_per_gpu_second = {price}
max_concurrent_jobs = 2
offer_interval_s = 1
allow_untrusted = {"true" if untrusted else "false"}

[runtime]
pool_size = 1

[api]
enabled = false
"""
    )
    return cfg


@contextlib.contextmanager
def daemons(
    commands: list[tuple[Path, list[str], str]],
) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """Start one ``gpunet`` process per (config, arguments, role); wait until each is
    ready; yield (process, listen address); stop them all.

    Each daemon writes to ``<role>.log`` in its home (a pipe nobody drains would
    eventually block it).
    """
    env = {**os.environ, "GPUNET_PASSWORD": PASSWORD}
    procs: list[tuple[subprocess.Popen[bytes], Path, str]] = []
    try:
        for cfg, args, role in commands:
            cmd = [sys.executable, "-m", "node.cli", *args, "--config", str(cfg)]
            log = cfg.parent / f"{role}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
            procs.append((proc, log, role))
        started = []
        for proc, log, role in procs:
            addr = ""
            deadline = time.monotonic() + 120
            while not addr:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{role} failed to start:\n{log.read_text()[-3000:]}")
                lines = log.read_text(errors="replace").splitlines()
                ready = [ln for ln in lines if ln.startswith(f"{role} ") and "ready" in ln]
                listening = [ln.split()[1] for ln in lines if ln.startswith("listening /ip4/127.")]
                if ready and (listening or role == "verifier"):
                    console.print(f"  [green]{ready[0]}[/]")
                    addr = listening[0] if listening else "-"
                else:
                    time.sleep(0.1)
            started.append((proc, addr))
        yield started
    finally:
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _, _ in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _run_jobs(
    client: AsyncClient, jobs: int, concurrency: int, progress: Progress
) -> list[tuple[int, int, Result | Exception]]:
    weights = formats.random_weights(ARCH, CONFIG, seed=2026)
    gate = asyncio.Semaphore(concurrency)
    task_id = progress.add_task("jobs", total=jobs)

    async def one(i: int) -> tuple[int, int, Result | Exception]:
        batch = BATCHES[i % len(BATCHES)]
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(i))
        async with gate:
            try:
                result: Result | Exception = await client.run(
                    (ARCH, CONFIG, weights), {"x": x}, max_price=5_000_000_000_000
                )
            except Exception as exc:  # noqa: BLE001 - shown in the table as this job's outcome
                result = exc
        progress.advance(task_id)
        return i, batch, result

    return list(await asyncio.gather(*(one(i) for i in range(jobs))))


def _short(address: bytes) -> str:
    text = checksum_address(address)
    return text[:8] + "…" + text[-4:]


async def main_async(args: argparse.Namespace) -> int:
    report = detect.check()
    untrusted = report.tier < 2
    if untrusted:
        console.print(
            f"[yellow]this host gives sandbox tier {report.tier}: providers run with "
            "allow_untrusted and advertise tier 0 (see `gpunet runtime check`)[/]"
        )
    with Anvil() as anvil, tempfile.TemporaryDirectory(prefix="gpunet-devnet-") as tmp:
        console.print(f"[bold]anvil[/] at {anvil.url}")
        devnet = Devnet(anvil.url)
        committee = devnet.deploy_committee()
        console.print(
            f"deployed token {checksum_address(devnet.token.address)}, escrow "
            f"{checksum_address(devnet.escrow.address)} "
            f"(min stake {devnet.params.min_stake // TOKEN}, challenge window "
            f"{devnet.params.challenge_window} s) and verifier committee "
            f"{checksum_address(committee.address)}"
        )
        actors = [devnet.provider() for _ in PRICES]
        configs = []
        for n, (actor, price) in enumerate(zip(actors, PRICES, strict=True)):
            home = Path(tmp) / f"provider{n}"
            home.mkdir()
            decline_every = 3 if n == 0 else 0
            configs.append((_node_config(home, devnet, actor, price, untrusted), decline_every))
        client_actor = devnet.actor(deposit=100 * TOKEN)
        # staked in the committee (so providers serve it a job's blobs), with an escrow
        # deposit for challenge bonds
        verifier_actor = devnet.verifier(stake=100 * TOKEN, deposit=20 * TOKEN)
        vhome = Path(tmp) / "verifier"
        vhome.mkdir()
        vcfg = _node_config(vhome, devnet, verifier_actor, 0, untrusted)
        metrics_port = free_port()
        supply_before = devnet.token_balance_of_escrow()
        console.print("starting 3 provider daemons (separate processes)…")
        commands = [
            (cfg, ["provider", "start", "--yes", "--decline-every", str(n)], "provider")
            for cfg, n in configs
        ]
        with daemons(commands) as started, contextlib.ExitStack() as stack:
            console.print("starting the verifier daemon (a separate process)…")
            verify = ["verify", "--sample-rate", str(args.sample_rate)]
            verify += ["--metrics-port", str(metrics_port)]
            for _, addr in started:
                verify += ["--connect", addr]
            stack.enter_context(daemons([(vcfg, verify, "verifier")]))
            domain = devnet.escrow.domain
            client = AsyncClient(
                client_actor.identity,
                rpc_url=anvil.url,
                escrow_address=devnet.escrow.address,
                p2p_config=P2PConfig(chain_id=domain.chain_id, contract=domain.verifying_contract),
                data_dir=Path(tmp) / "client",
            )
            async with client:
                for _, addr in started:
                    await client.connect(addr)
                seen = await client.wait_for_offers(len(started), 30)
                console.print(f"client sees offers from {seen} providers")
                t0 = time.monotonic()
                with Progress(console=console, transient=True) as progress:
                    outcomes = await _run_jobs(client, args.jobs, args.concurrency, progress)
                elapsed = time.monotonic() - t0
            ok = sum(1 for _, _, r in outcomes if not isinstance(r, Exception))
            audit = await _verifier_done(metrics_port, ok)
        return _report(
            devnet,
            actors=actors,
            client_actor=client_actor,
            outcomes=outcomes,
            elapsed=elapsed,
            escrow_before=supply_before,
            verifier=verifier_actor,
            audit=audit,
        )


async def _verifier_done(port: int, results: int, within: float = 120) -> dict[str, float]:
    """The verifier's counters (its ``/metrics``), once it has seen every result and
    finished every check it sampled (or ``within`` seconds have passed)."""
    counters: dict[str, float] = {}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        counters = {
            s.name.removeprefix("gpunet_verifier_").removesuffix("_total"): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("gpunet_verifier_")
        }
        checked = sum(v for k, v in counters.items() if k.startswith("outcome_"))
        if counters.get("attestations_seen", 0) >= results and checked >= counters.get(
            "sampled", 0
        ):
            break
        await asyncio.sleep(0.2)
    return counters


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _report(
    devnet: Devnet,
    *,
    actors: list[Actor],
    client_actor: Actor,
    outcomes: list[tuple[int, int, Result | Exception]],
    elapsed: float,
    escrow_before: int,
    verifier: Actor,
    audit: dict[str, float],
) -> int:
    table = Table(title=f"{len(outcomes)} jobs: {ARCH} {CONFIG}, exact tier, CPU sandbox")
    for col in ("#", "job", "provider", "batch", "price/GPU-s", "GPU-ms", "paid", "latency",
                "output sha256", "attested", "client gas", "declined by"):  # fmt: skip
        table.add_column(
            col, justify="right" if col not in ("provider", "output sha256") else "left"
        )
    failures = 0
    paid = 0
    for i, batch, r in sorted(outcomes, key=lambda o: o[0]):
        if isinstance(r, Exception):
            failures += 1
            table.add_row(
                str(i), "-", "-", str(batch), "-", "-", "-", "-", f"[red]{r}[/]", "", "", ""
            )
            continue
        paid += r.cost
        try:
            r.attestation.verify()
            attested = "[green]✓[/]"
        except Exception:  # noqa: BLE001 - shown as a failed check
            attested = "[red]✗[/]"
        table.add_row(
            str(i), str(r.job_id), _short(r.provider), str(batch), f"{r.price_per_gpu_second:,}",
            str(r.attestation.metered_millis), f"{r.cost:,}", f"{r.latency_s * 1000:.0f} ms",
            r.attestation.output_hash.hex()[:12] + "…", attested, f"{r.gas_used:,}",
            ", ".join(f"{_short(bytes.fromhex(a[2:]))} ({why.value})" for a, why in r.declined_by),
        )  # fmt: skip
    console.print(table)
    ok = len(outcomes) - failures
    console.print(
        f"{ok}/{len(outcomes)} jobs verified and paid in {elapsed:.1f} s "
        f"({ok / elapsed:.1f} jobs/s)"
    )

    count = {k: int(v) for k, v in audit.items()}
    challenges = count.get("challenges", 0)
    mismatches = count.get("outcome_mismatch", 0)
    audited = count.get("attestations_seen", 0) >= ok and count.get("reexecutions", 0) == (
        count.get("sampled", -1)
    )
    console.print(
        f"verifier {_short(verifier.address)}: saw {count.get('attestations_seen', 0)} results, "
        f"sampled {count.get('sampled', 0)}, re-executed {count.get('reexecutions', 0)}, "
        f"matched {count.get('outcome_match', 0)}, mismatched {mismatches}, "
        f"unavailable {count.get('outcome_unavailable', 0)}, challenges {challenges}: "
        + (
            "[green]every sampled result re-ran bit for bit[/]"
            if audited and challenges == mismatches == 0
            else "[red]THE AUDIT DID NOT COME OUT CLEAN[/]"
        )
    )

    assert devnet.committee is not None
    committee = devnet.committee
    balances = Table(title="balances (token units of 1e-18)")
    for col in ("account", "escrow free balance", "escrow active stake", "committee stake"):
        balances.add_column(col, justify="right" if col != "account" else "left")
    accounts = [(f"provider {n}", a) for n, a in enumerate(actors)]
    accounts += [("client", client_actor), ("verifier", verifier)]
    for name, actor in accounts:
        stake = devnet.escrow.stake_of(actor.address)
        balances.add_row(
            f"{name} {_short(actor.address)}",
            f"{devnet.escrow.balance_of(actor.address):,}",
            f"{stake.active:,}",
            f"{committee.verifier(actor.address).stake:,}",
        )
    console.print(balances)
    in_committee = devnet.token.balance_of(committee.address)
    committee_owed = (
        committee.verifier(verifier.address).stake
        + committee.balance_of(verifier.address)
        + committee.reward_reserve()
    )
    console.print(
        f"committee holds {in_committee:,} = verifier stake + balances + reward reserve "
        f"{committee_owed:,}"
    )
    held = devnet.token_balance_of_escrow()
    accounted = sum(
        devnet.escrow.balance_of(a.address)
        + devnet.escrow.stake_of(a.address).active
        + devnet.escrow.stake_of(a.address).unbonding
        for a in devnet.actors
    )
    earned = sum(devnet.escrow.balance_of(a.address) for a in actors)  # providers only
    conserved = (
        held == accounted == escrow_before and earned == paid and in_committee == committee_owed
    )
    console.print(
        f"escrow holds {held:,}; balances + stakes add up to {accounted:,}; "
        f"before the jobs it held {escrow_before:,}; providers earned {earned:,} = paid {paid:,}: "
        + ("[green]money is conserved[/]" if conserved else "[red]MONEY IS NOT CONSERVED[/]")
    )
    clean = audited and challenges == mismatches == 0
    return 0 if conserved and failures == 0 and clean else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--sample-rate", type=float, default=0.5, help="verifier's sample rate")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
