"""The HTTP API of a running provider (``[api] enabled``): built from the daemon's parts.

:func:`provider_api` serves :func:`node.api.create_app` for the duration of an
``async with`` block: the provider's store, the daemon's :class:`node.metrics.Metrics`
(the daemon updates queue depth, device utilisation, earnings and RPC errors; the
p2p counters are exported at each scrape), ``GET /v1/node`` from the sandbox
report and the offer's capabilities, and the catalog as the known models;
``gpunet_p2p_peers`` is sampled every few seconds. ``POST /v1/jobs`` answers
``422 not_a_client``: a provider node does not submit jobs (``gpunet client
serve`` runs a client node whose API does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from node.commands.common import UserError

if TYPE_CHECKING:
    from node.api import NodeInfo, SubmitRequest
    from node.config import Config
    from node.metrics import Metrics
    from node.provider import ProviderDaemon
    from node.runtime.detect import SandboxReport

__all__ = ["check_api", "provider_api"]

log = logging.getLogger("gpunet.api")
#: Seconds between samples of the connected-peer gauge.
PEER_SAMPLE_S: Final = 2.0


def check_api(config: Config) -> None:
    """Fail fast, before the worker pool starts: the token file and the port are usable."""
    if not config.api.enabled:
        return
    import socket

    from node.api import TokenError, load_or_create_token

    try:
        load_or_create_token(config.api_token_path)
    except TokenError as exc:
        raise UserError(str(exc), "fix the file, or set [api] token_file") from None
    if config.api.port == 0:
        return
    try:
        infos = socket.getaddrinfo(config.api.host, config.api.port, type=socket.SOCK_STREAM)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        raise UserError(
            f"cannot serve the API on {config.api.host}:{config.api.port}: {exc.strerror or exc}",
            "choose another [api] port, or set [api] enabled = false",
        ) from None


@contextlib.asynccontextmanager
async def provider_api(
    daemon: ProviderDaemon, config: Config, report: SandboxReport, *, trusted: bool
) -> AsyncIterator[str | None]:
    """Serve the API while the block runs; yields its URL (None when disabled)."""
    if not config.api.enabled:
        yield None
        return
    import msgspec

    from node import __version__
    from node.api import (
        DeviceInfo,
        NodeInfo,
        SubmitRejected,
        TokenError,
        create_app,
        load_or_create_token,
        serve,
    )
    from node.api import (
        SandboxReport as ApiSandboxReport,
    )
    from node.runtime import catalog
    from protocol.identity import checksum_address

    try:
        token = load_or_create_token(config.api_token_path)
    except TokenError as exc:
        raise UserError(str(exc), "fix the file, or set [api] token_file") from None
    metrics = daemon.metrics
    metrics.add_counters("p2p", daemon.p2p.metrics.snapshot)
    sandbox = msgspec.convert(report.to_dict() | {"trusted": trusted}, ApiSandboxReport)

    async def node_info() -> NodeInfo:
        caps = daemon.capabilities
        return NodeInfo(
            version=__version__,
            address=daemon.identity.checksum_address,
            peer_id=daemon.identity.peer_id,
            roles=["provider"],
            chain_id=config.chain.chain_id,
            escrow_address=checksum_address(daemon.escrow.address),
            sandbox=sandbox,
            devices=[
                DeviceInfo(
                    name=caps.gpu_model or caps.device_class,
                    device_class=caps.device_class,
                    memory_mib=caps.gpu_memory_mib,
                    count=max(caps.gpu_count, 1),
                )
            ],
        )

    async def submit(request: SubmitRequest) -> int:
        raise SubmitRejected(
            "not_a_client",
            "this node runs as a provider and does not submit jobs; "
            "run a client node (`gpunet client serve`), the Python SDK or `gpunet submit`",
        )

    known = frozenset(catalog.CATALOG)
    app = create_app(
        store=daemon.store,
        token=token,
        metrics=metrics,
        node_info=node_info,
        submit=submit,
        config=config.api,
        client=config.client,
        known_models=lambda: known,
    )
    async with contextlib.AsyncExitStack() as stack:
        try:
            port = await stack.enter_async_context(serve(app, config.api.host, config.api.port))
        except OSError as exc:
            raise UserError(
                f"cannot serve the API on {config.api.host}:{config.api.port}: "
                f"{exc.strerror or exc}",
                "choose another [api] port, or set [api] enabled = false",
            ) from None
        peers = asyncio.create_task(_count_peers(daemon, metrics), name="api-peer-gauge")
        try:
            yield f"http://{config.api.host}:{port}"
        finally:
            peers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await peers


async def _count_peers(daemon: ProviderDaemon, metrics: Metrics) -> None:
    """Keep ``gpunet_p2p_peers`` current while the daemon runs (every few seconds)."""
    await daemon.ready.wait()
    while True:
        try:
            metrics.p2p_peers.set(len(await daemon.p2p.peers()))
        except Exception as exc:  # noqa: BLE001 - a stopping p2p service just skips a sample
            log.debug("peer count unavailable: %s", exc)
        await asyncio.sleep(PEER_SAMPLE_S)
