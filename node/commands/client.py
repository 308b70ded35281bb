"""``gpunet client serve``: a client node with the HTTP API, for non-Python clients.

The node joins the network, settles whatever a previous run of the same data
dir left in flight (a ``kill -9`` included: matched jobs are refunded after
their deadline, submitted ones followed to finalization), and serves the API
until SIGINT/SIGTERM: upload weights and inputs with ``POST /v1/blobs``, submit
with ``POST /v1/jobs``, follow ``GET /v1/jobs/{id}``, fetch the output with
``GET /v1/blobs/{cid}`` (see docs/openapi.yaml). Its data dir is the one
``gpunet submit`` uses (``<data_dir>/client``), so either can resume the other.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from node.commands.common import (
    UserError,
    check_listen,
    config_option,
    keystore_override,
    open_context,
)
from node.commands.market import bootstrap_option, listen_option
from node.commands.provider_api import check_api

if TYPE_CHECKING:
    from node.client import AsyncClient
    from node.commands.client_api import ClientNode

__all__ = ["client"]


@click.group()
def client() -> None:
    """Buy inference: run a client node other programs submit jobs to over HTTP."""


@client.command("serve")
@config_option
@keystore_override
@bootstrap_option
@listen_option
@click.option(
    "--wait",
    type=click.FloatRange(min=0, max=600),
    default=10.0,
    show_default=True,
    help="Seconds to wait for a first offer before serving (jobs need one).",
)
def serve(
    *,
    config_path: Path | None,
    keystore: Path | None,
    bootstrap: tuple[str, ...],
    listen: tuple[str, ...],
    wait: float,
) -> None:
    """Serve the HTTP API of a client node (stops cleanly on Ctrl-C or SIGTERM)."""
    from node import __version__
    from node.client import AsyncClient
    from node.commands.client_api import ClientNode
    from node.commands.market import _check_listen_addrs, _check_peer_addrs
    from node.metrics import Metrics

    _check_peer_addrs(bootstrap)
    _check_listen_addrs(listen)
    ctx = open_context(config_path, keystore)
    cfg = ctx.config
    if not cfg.api.enabled:
        raise UserError("[api] enabled is false", "a client node serves the API: enable it")
    check_api(cfg)  # fail fast on a busy port or an unsafe token file
    check_listen(listen or cfg.p2p.listen_addrs, "--listen" if listen else "[p2p] listen_addrs")
    logging.basicConfig(level=cfg.node.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    for noisy in ("libp2p", "multiaddr", "trio", "aioquic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    metrics = Metrics(__version__)
    sdk = AsyncClient(
        ctx.identity,
        rpc_url=cfg.chain.rpc_url,
        escrow_address=ctx.escrow.address,
        p2p_config=ctx.p2p_config(listen=listen or None),
        data_dir=ctx.data_dir / "client",
        poll_interval_s=max(cfg.chain.poll_interval_s, 0.05),
        max_blob_bytes=cfg.blobs.client_max_bytes,
        blob_collect_s=cfg.blobs.collect_interval_s,
    )
    sdk.rpc.on_error = metrics.rpc_error
    metrics.add_counters("p2p", sdk.p2p.metrics.snapshot)
    asyncio.run(_serve(sdk, ClientNode(sdk, cfg, metrics), bootstrap, wait))


async def _serve(
    sdk: AsyncClient, node: ClientNode, bootstrap: tuple[str, ...], wait: float
) -> None:
    from node.store.records import Role

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sdk:
        for addr in bootstrap:
            try:
                await sdk.connect(addr)
            except Exception as exc:  # noqa: BLE001 - a peer that is down is reported, not fatal
                click.echo(f"cannot reach {addr}: {exc}", err=True)
        for addr in await sdk.p2p.addrs():
            click.echo(f"listening {addr}")
        seen = await sdk.wait_for_offers(1, wait) if wait else 0
        click.echo(f"offers from {seen} provider(s)")
        resumed = len(sdk.store.jobs.in_flight(Role.CLIENT))
        async with node.serve() as url:
            click.echo(f"api {url}")
            click.echo(
                f"client {sdk.identity.checksum_address} ready: {resumed} job(s) in flight resumed"
            )
            await stop.wait()
    click.echo("stopped")
