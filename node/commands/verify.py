"""``gpunet verify``: run the verifier daemon (sample, re-run, challenge, vote) until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from node.commands.common import (
    Context,
    UserError,
    chain_errors,
    check_listen,
    check_port,
    config_option,
    format_amount,
    keystore_override,
    open_context,
    parse_amount,
)
from protocol.identity import checksum_address

if TYPE_CHECKING:
    from node.chain.committee import Committee
    from node.verifier import VerifierDaemon

__all__ = ["verify"]


@click.command("verify")
@config_option
@keystore_override
@click.option(
    "--sample-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Fraction of submitted results to re-run.",
)
@click.option(
    "--flag",
    "flagged",
    multiple=True,
    type=click.IntRange(min=1),
    help="Job id to always check (repeatable).",
)
@click.option(
    "--stake",
    "stake_text",
    metavar="N",
    default=None,
    help="First stake this much (token base units, e.g. 100e18) from the wallet in the committee.",
)
@click.option("--no-challenge", is_flag=True, help="Only report mismatches; never challenge.")
@click.option("--no-committee", is_flag=True, help="Never vote when drawn (costs the penalty).")
@click.option("--listen", multiple=True, help="libp2p listen multiaddr (repeatable).")
@click.option(
    "--connect",
    "peers",
    multiple=True,
    help="Multiaddr of a provider or bootstrap peer to dial (repeatable).",
)
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=0,
    help="Serve Prometheus /metrics on 127.0.0.1:PORT (0: off).",
)  # fmt: skip
def verify(
    *,
    config_path: Path | None,
    keystore: Path | None,
    sample_rate: float,
    flagged: tuple[int, ...],
    stake_text: str | None,
    no_challenge: bool,
    no_committee: bool,
    listen: tuple[str, ...],
    peers: tuple[str, ...],
    metrics_port: int,
) -> None:
    """Audit results: re-run a sample in the attested tier, challenge mismatches, vote."""
    from node.chain.committee import Committee
    from node.chain.rpc import Signer
    from node.commands.market import _check_peer_addrs
    from node.runtime.pool import PoolConfig, WorkerPool
    from node.store.store import Store
    from node.verifier import VerifierDaemon, VerifierSettings

    _check_peer_addrs(peers, "--connect")
    stake = 0 if stake_text is None else parse_amount(stake_text, "--stake")
    ctx = open_context(config_path, keystore)
    cfg = ctx.config
    check_listen(listen or cfg.p2p.listen_addrs, "--listen" if listen else "[p2p] listen_addrs")
    if metrics_port:
        check_port("127.0.0.1", metrics_port, "/metrics", "choose another --metrics-port (0: none)")
    logging.basicConfig(level=cfg.node.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    for noisy in ("libp2p", "multiaddr", "trio", "aioquic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    committee_address = ctx.escrow.resolver()
    committee = Committee(ctx.rpc, committee_address, Signer(ctx.rpc, ctx.identity.private_key))
    _check_committee(committee)
    if stake:
        _stake(ctx, committee, stake)
    settings = VerifierSettings(
        sample_rate=sample_rate,
        flagged=frozenset(flagged),
        challenge=not no_challenge,
        join_committees=not no_committee,
        poll_interval_s=max(cfg.chain.poll_interval_s, 0.1),
        max_blob_bytes=cfg.blobs.verifier_max_bytes,
        blob_collect_s=cfg.blobs.collect_interval_s,
    )
    pool_cfg = PoolConfig(
        slots=cfg.runtime.pool_size,
        timeout_s=cfg.runtime.job_timeout_s,
        memory_bytes=cfg.runtime.memory_limit_mib << 20,
        keep_idle_s=cfg.runtime.keep_child_s,
        keystores=(str(ctx.data_dir / cfg.node.keystore),),
    )
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    # the node store keeps committee votes and their salts across restarts
    with WorkerPool(pool_cfg) as pool, Store.open(ctx.data_dir) as store:
        daemon = VerifierDaemon(
            ctx.identity,
            rpc_url=cfg.chain.rpc_url,
            escrow_address=ctx.escrow.address,
            committee_address=committee_address,
            p2p_config=ctx.p2p_config(listen=listen or None),
            pool=pool,
            store=store,
            data_dir=ctx.data_dir / "verifier",
            settings=settings,
        )
        asyncio.run(_serve(daemon, peers, metrics_port))


def _check_committee(committee: Committee) -> None:
    from node.chain.errors import ChainError

    try:
        committee.param("committeeSize")
    except ChainError:
        raise UserError(
            f"the escrow's resolver 0x{committee.address.hex()} is not a verifier committee",
            "deploy VerifierCommittee and make it the resolver (escrow.setResolver); "
            "a devnet from gpunet devnet up has one",
        ) from None


def _stake(ctx: Context, committee: Committee, amount: int) -> None:
    from node.chain.deploy import Token

    assert ctx.escrow.signer is not None
    token = Token(ctx.escrow.signer, ctx.escrow.token_address())
    with chain_errors("stake in the committee"):
        have = token.balance_of(ctx.identity.address)
        if have < amount:
            raise UserError(
                f"--stake: the wallet holds {format_amount(have)}, {format_amount(amount)} needed",
                "on a devnet: gpunet devnet up --fund <address> --amount N",
            )
        token.approve(committee.address, amount)
        committee.stake(amount)
    click.echo(f"staked {format_amount(amount)} in committee {checksum_address(committee.address)}")


async def _serve(daemon: VerifierDaemon, peers: tuple[str, ...], metrics_port: int) -> None:
    from aiohttp import web

    from node.metrics import CONTENT_TYPE, Metrics

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics()
    metrics.add_counters("verifier", daemon.stats.counters)
    daemon.rpc.on_error = metrics.rpc_error
    runner: web.AppRunner | None = None
    if metrics_port:

        async def handle(_: web.Request) -> web.Response:
            return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", metrics_port).start()
    try:
        runner_task = asyncio.create_task(daemon.run(stop))
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait({runner_task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            for addr in peers:
                try:
                    await daemon.p2p.connect(addr)
                except Exception as exc:  # noqa: BLE001 - a bad peer address is reported, not fatal
                    click.echo(f"cannot connect {addr}: {exc}", err=True)
            click.echo(f"verifier {daemon.identity.checksum_address} ready")
        else:
            ready.cancel()
        await runner_task
    finally:
        if runner is not None:
            await runner.cleanup()
    c = daemon.stats.counters()
    click.echo(f"stopped: {c['reexecutions']} re-executions, {c['challenges']} challenges")
