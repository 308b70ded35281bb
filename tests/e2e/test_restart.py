"""Crashes and restarts: a provider process killed with SIGKILL mid-job, a client that leaves.

Real anvil, a real ``gpunet provider start`` process, real libp2p and sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import torch

from node.chain.anvil import Anvil, free_port
from node.chain.devnet import TOKEN, Actor, Devnet
from node.client import AsyncClient
from node.errors import DeadlineMissed
from node.p2p.config import P2PConfig
from node.runtime import detect, formats
from node.store.store import Store
from protocol.lifecycle import JobState
from tests.e2e.node_process import PROCESS_ESCROW, NodeProcess

pytestmark = pytest.mark.timeout(300)

PRICE = 10**15
RESNET = {"width": 16, "classes": 10, "image": 64}


@pytest.fixture(scope="module")
def devnet() -> Iterator[Devnet]:
    if detect.check().tier < 2:
        pytest.skip("the provider process needs sandbox tier 2 on this host")
    with Anvil() as anvil:
        yield Devnet(anvil.url, PROCESS_ESCROW)


class ProviderProcess(NodeProcess):
    """``gpunet provider start`` in its own process, restartable on the same data dir."""

    @classmethod
    def at(cls, devnet: Devnet, actor: Actor, home: Path, bootstrap: str) -> ProviderProcess:
        return cls.make(
            home, devnet, actor, ["provider", "start", "--yes"],
            f'[p2p]\nlisten_addrs = ["/ip4/127.0.0.1/tcp/0"]\nbootstrap_peers = ["{bootstrap}"]\n'
            f"mdns = false\n[provider]\nprice_per_gpu_second = {PRICE}\noffer_interval_s = 1\n"
            "[runtime]\npool_size = 1\n[api]\nenabled = false\n",
        )  # fmt: skip

    def store_states(self) -> list[JobState]:
        with Store.open(self.home) as store:
            return [j.state for j in store.jobs.select(limit=100)]


@contextlib.asynccontextmanager
async def client_at(devnet: Devnet, tmp: Path, port: int) -> AsyncIterator[AsyncClient]:
    actor = devnet.actor(deposit=100 * TOKEN)
    dom = devnet.escrow.domain
    c = AsyncClient(
        actor.identity,
        rpc_url=devnet.rpc.url,
        escrow_address=devnet.escrow.address,
        p2p_config=P2PConfig(
            chain_id=dom.chain_id,
            contract=dom.verifying_contract,
            listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",),
        ),
        data_dir=tmp / "client",
    )
    async with c:
        yield c


@contextlib.asynccontextmanager
async def client_and_provider(
    devnet: Devnet, actor: Actor
) -> AsyncIterator[tuple[AsyncClient, ProviderProcess]]:
    """A client in this process and ``actor``'s provider process bootstrapped to it,
    its offer seen; the provider is stopped on the way out."""
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    async with client_at(devnet, tmp, port) as c:
        bootstrap = f"/ip4/127.0.0.1/tcp/{port}/p2p/{c.identity.peer_id}"
        prov = ProviderProcess.at(devnet, actor, tmp / "provider", bootstrap)
        prov.start()
        try:
            assert await c.wait_for_offers(1, 30) == 1
            yield c, prov
        finally:
            prov.stop()


def _job() -> tuple[tuple[str, dict[str, int], bytes], dict[str, torch.Tensor]]:
    weights = formats.random_weights("resnet18@1", RESNET, seed=11)
    x = torch.randn(32, 3, 64, 64, generator=torch.Generator().manual_seed(12))
    return ("resnet18@1", RESNET, weights), {"x": x}


def test_provider_killed_mid_job_resumes_after_restart(devnet: Devnet) -> None:
    async def scenario() -> None:
        actor = devnet.provider()
        async with client_and_provider(devnet, actor) as (c, prov):
            matched = asyncio.Event()

            def progress(stage: str, detail: str) -> None:
                if stage == "matched":
                    matched.set()

            model, inputs = _job()
            run = asyncio.create_task(
                c.run(model, inputs, max_price=2 * PRICE, deadline_s=120, progress=progress)
            )
            await asyncio.wait_for(matched.wait(), 60)
            prov.kill()  # SIGKILL right after createJob: nothing graceful happens
            assert not run.done()
            prov.start()  # same data dir: the store and the peer log survive
            result = await asyncio.wait_for(run, 120)
            assert result.cost > 0
            result.attestation.verify()
            for _ in range(100):
                if prov.store_states() == [JobState.FINALIZED]:
                    break
                await asyncio.sleep(0.1)
            assert prov.store_states() == [JobState.FINALIZED]

    asyncio.run(scenario())


def test_provider_gone_for_good_means_refund_with_penalty(devnet: Devnet) -> None:
    async def scenario() -> None:
        actor = devnet.provider()
        async with client_and_provider(devnet, actor) as (c, prov):
            matched = asyncio.Event()
            model, inputs = _job()
            before = devnet.escrow.balance_of(c.identity.address)
            stake_before = devnet.escrow.stake_of(actor.address).active
            run = asyncio.create_task(
                c.run(
                    model,
                    inputs,
                    max_price=2 * PRICE,
                    deadline_s=32,
                    progress=lambda stage, _: matched.set() if stage == "matched" else None,
                )
            )
            await asyncio.wait_for(matched.wait(), 60)
            prov.kill()
            with pytest.raises(DeadlineMissed) as info:
                await asyncio.wait_for(run, 120)
            assert info.value.refund_tx is not None
            penalty = devnet.params.refund_penalty
            assert devnet.escrow.balance_of(c.identity.address) == before + penalty
            assert devnet.escrow.stake_of(actor.address).active == stake_before - penalty

    asyncio.run(scenario())


def test_client_that_never_accepts_still_pays_after_the_window(devnet: Devnet) -> None:
    async def scenario() -> None:
        actor = devnet.provider()
        async with client_and_provider(devnet, actor) as (c, prov):
            fetching = asyncio.Event()
            model, inputs = _job()
            earned_before = devnet.escrow.balance_of(actor.address)
            run = asyncio.create_task(
                c.run(
                    model,
                    inputs,
                    max_price=2 * PRICE,
                    progress=lambda stage, _: fetching.set() if stage == "fetching" else None,
                )
            )
            await asyncio.wait_for(fetching.wait(), 90)
            run.cancel()  # the client walks away after the result, before acceptResult
            with contextlib.suppress(asyncio.CancelledError):
                await run
            for _ in range(300):  # challenge window 4 s, then the provider finalizes
                if prov.store_states() == [JobState.FINALIZED]:
                    break
                await asyncio.sleep(0.1)
            assert prov.store_states() == [JobState.FINALIZED]
            assert devnet.escrow.balance_of(actor.address) > earned_before

    asyncio.run(scenario())


def test_client_restarted_after_create_job_claims_its_refund(devnet: Devnet) -> None:
    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        port = free_port()
        actor = devnet.actor(deposit=100 * TOKEN)
        dom = devnet.escrow.domain

        def make_client() -> AsyncClient:
            return AsyncClient(
                actor.identity,
                rpc_url=devnet.rpc.url,
                escrow_address=devnet.escrow.address,
                p2p_config=P2PConfig(
                    chain_id=dom.chain_id,
                    contract=dom.verifying_contract,
                    listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",),
                ),
                data_dir=tmp / "client",
            )

        first = make_client()
        await first.start()
        bootstrap = f"/ip4/127.0.0.1/tcp/{port}/p2p/{actor.identity.peer_id}"
        prov = ProviderProcess.at(devnet, devnet.provider(), tmp / "provider", bootstrap)
        prov.start()
        try:
            assert await first.wait_for_offers(1, 30) == 1
            matched = asyncio.Event()
            model, inputs = _job()
            before = devnet.escrow.balance_of(actor.address)
            run = asyncio.create_task(
                first.run(
                    model,
                    inputs,
                    max_price=2 * PRICE,
                    deadline_s=32,
                    progress=lambda stage, _: matched.set() if stage == "matched" else None,
                )
            )
            await asyncio.wait_for(matched.wait(), 60)
            prov.kill()  # the provider never delivers ...
            run.cancel()  # ... and the client process goes away after createJob
            with contextlib.suppress(asyncio.CancelledError):
                await run
            await first.stop()
            with Store.open(tmp / "client") as store:
                assert [j.state for j in store.jobs.select(limit=10)] == [JobState.MATCHED]
            second = make_client()  # a new process would do exactly this
            await second.start()
            try:
                assert len(second._refunds) == 1
                refund_tx = await asyncio.wait_for(second._refunds[0], 120)
                assert refund_tx is not None
                states = [j.state for j in second.store.jobs.select(limit=10)]
                assert states == [JobState.REFUNDED]
                penalty = devnet.params.refund_penalty
                assert devnet.escrow.balance_of(actor.address) == before + penalty
            finally:
                await second.stop()
        finally:
            prov.stop()

    asyncio.run(scenario())


def test_audit_mode_leaves_the_window_open_then_the_provider_finalizes(devnet: Devnet) -> None:
    async def scenario() -> None:
        actor = devnet.provider()
        async with client_and_provider(devnet, actor) as (c, _prov):
            model, inputs = _job()
            earned_before = devnet.escrow.balance_of(actor.address)
            result = await c.run(model, inputs, max_price=2 * PRICE, accept=False)
            assert "acceptResult" not in result.receipts
            states = [j.state for j in c.store.jobs.select(limit=10)]
            assert states == [JobState.SUBMITTED]  # open: a verifier could still challenge
            for _ in range(300):  # window 4 s; the provider finalizes, the client follows
                states = [j.state for j in c.store.jobs.select(limit=10)]
                if states == [JobState.FINALIZED]:
                    break
                await asyncio.sleep(0.1)
            assert states == [JobState.FINALIZED]
            assert not c._busy_lanes
            assert devnet.escrow.balance_of(actor.address) == earned_before + result.cost

    asyncio.run(scenario())
