"""``gpunet provider start``: run the provider daemon until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from node.commands.common import (
    Context,
    UserError,
    chain_errors,
    check_listen,
    config_option,
    format_amount,
    keystore_override,
    open_context,
)
from node.commands.provider_api import check_api, provider_api

if TYPE_CHECKING:
    from node.provider import ProviderDaemon

__all__ = ["provider"]


@click.group()
def provider() -> None:
    """Sell GPU (or CPU) time: advertise, run jobs in the sandbox, get paid."""


@provider.command("start")
@config_option
@keystore_override
@click.option("--yes", is_flag=True, help="Stake the minimum without asking, if below it.")
@click.option("--listen", multiple=True, help="libp2p listen multiaddr (repeatable).")
@click.option("--price", type=click.IntRange(min=0), default=None, help="Price per GPU-second.")
@click.option(
    "--decline-every", type=click.IntRange(min=0), default=0, hidden=True,
    help="Demo/testing: decline every Nth request with reason 'capacity'.",
)  # fmt: skip
def start(
    *,
    config_path: Path | None,
    keystore: Path | None,
    yes: bool,
    listen: tuple[str, ...],
    price: int | None,
    decline_every: int,
) -> None:
    """Start the provider daemon (stops cleanly on Ctrl-C or SIGTERM)."""
    # heavy imports (torch, libp2p) only when the command runs: `gpunet --help` stays fast
    from node import __version__
    from node.metrics import Metrics
    from node.provider import ProviderDaemon, ProviderSettings
    from node.runtime import catalog, detect
    from node.runtime.pool import PoolConfig, WorkerPool
    from node.store.store import Store

    ctx = open_context(config_path, keystore)
    cfg = ctx.config
    check_api(cfg)  # fail fast on a busy [api] port
    check_listen(
        listen or cfg.p2p.listen_addrs,
        "--listen" if listen else "[p2p] listen_addrs",
        must_bind=True,
    )
    logging.basicConfig(level=cfg.node.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    for noisy in ("libp2p", "multiaddr", "trio", "aioquic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    report = detect.check()
    tier_ok = report.tier >= cfg.provider.min_sandbox_tier
    if not tier_ok and not cfg.provider.allow_untrusted:
        missing = ", ".join(k for k, v in report.layers.items() if not v.ok)
        raise UserError(
            f"this host gives sandbox tier {report.tier}, below the minimum "
            f"{cfg.provider.min_sandbox_tier} (missing: {missing})",
            "see `gpunet runtime check`; set [provider] allow_untrusted = true to run anyway "
            "(the node then advertises tier 0)",
        )
    _ensure_stake(ctx, yes)
    pool_cfg = PoolConfig(
        slots=cfg.runtime.pool_size,
        timeout_s=cfg.runtime.job_timeout_s,
        memory_bytes=cfg.runtime.memory_limit_mib << 20,
        keep_idle_s=cfg.runtime.keep_child_s,
        min_tier=cfg.provider.min_sandbox_tier,
        insecure=cfg.provider.allow_untrusted and not tier_ok,
        keystores=(str(ctx.data_dir / cfg.node.keystore),),
    )
    settings = ProviderSettings(
        price_per_gpu_second=cfg.provider.price_per_gpu_second if price is None else price,
        known_archs=frozenset(catalog.CATALOG),
        max_concurrent_jobs=cfg.provider.max_concurrent_jobs,
        queue_size=cfg.provider.queue_size,
        offer_interval_s=cfg.provider.offer_interval_s,
        offer_ttl_s=cfg.provider.offer_ttl_s,
        poll_interval_s=min(cfg.chain.poll_interval_s, 0.25),
        decline_every=decline_every,
        ws_url=cfg.chain.ws_url,
        max_blob_bytes=cfg.blobs.provider_max_bytes,
        blob_collect_s=cfg.blobs.collect_interval_s,
    )
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    with WorkerPool(pool_cfg) as pool, Store.open(ctx.data_dir) as store:
        daemon = ProviderDaemon(
            ctx.identity,
            rpc_url=cfg.chain.rpc_url,
            escrow_address=ctx.escrow.address,
            p2p_config=ctx.p2p_config(listen=listen or None),
            pool=pool,
            store=store,
            data_dir=ctx.data_dir,
            settings=settings,
            metrics=Metrics(__version__),
        )
        # the HTTP API ([api] enabled) is served around the daemon's run
        api = provider_api(daemon, cfg, report, trusted=tier_ok)
        asyncio.run(_serve(daemon, api))


async def _serve(daemon: ProviderDaemon, api: AbstractAsyncContextManager[str | None]) -> None:
    async with api as url:
        if url is not None:
            click.echo(f"api {url}")
        await _run_daemon(daemon)


async def _run_daemon(daemon: ProviderDaemon) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(daemon.run(stop))
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        addrs = await daemon.p2p.addrs()
        if not addrs:  # libp2p logs a listener it cannot start and carries on without it
            stop.set()
            await runner
            raise UserError(
                "libp2p could not listen on any address ("
                + ", ".join(daemon.p2p.config.listen_addrs)
                + "): no client could reach this provider",
                "use TCP addresses such as /ip4/0.0.0.0/tcp/4040 in --listen or [p2p] listen_addrs",
            )
        for addr in addrs:
            click.echo(f"listening {addr}", nl=True)
        caps = daemon.capabilities
        click.echo(
            f"provider {daemon.identity.checksum_address} ready: tier {caps.sandbox_tier}, "
            f"{caps.device_class}, price {daemon.settings.price_per_gpu_second}/GPU-s"
        )
    else:
        ready.cancel()
    await runner
    click.echo(f"stopped after {daemon.completed} completed jobs")


def _ensure_stake(ctx: Context, yes: bool) -> None:
    escrow = ctx.escrow
    minimum = escrow.param("minStake")
    active = escrow.stake_of(ctx.identity.address).active
    if active >= minimum:
        return
    missing = minimum - active
    free = escrow.balance_of(ctx.identity.address)
    if free < missing:  # said before asking: a yes could not be honoured
        raise UserError(
            f"a provider needs {format_amount(minimum)} staked; the stake is "
            f"{format_amount(active)} and the free escrow balance {format_amount(free)}",
            f"stake from the wallet first: gpunet stake --amount {missing}",
        )
    if not yes:
        if not sys.stdin.isatty():  # a service or a pipe: no one to answer the question
            raise UserError(
                f"a provider needs {format_amount(minimum)} staked, this one has "
                f"{format_amount(active)}, and there is no terminal to confirm staking",
                "rerun with --yes to stake the rest, or: gpunet stake --amount N",
            )
        if not click.confirm(f"stake {format_amount(missing)} to reach the minimum?"):
            raise UserError("a provider needs the minimum stake", "rerun with --yes to stake")
    with chain_errors("stake"):
        escrow.stake(missing)
    click.echo(f"staked {format_amount(missing)}")
