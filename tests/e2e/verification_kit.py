"""Shared parts of the verification end-to-end tests: a devnet with a committee, the real
sandbox pool, provider and verifier daemons, the SDK client in audit mode, and the
test-only adversaries (a perturbing provider, a colluding verifier)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from node.chain import lookup
from node.chain.anvil import Anvil
from node.chain.committee import CommitteeParams
from node.chain.devnet import TOKEN, Actor, Devnet
from node.client import AsyncClient, Result
from node.p2p.config import P2PConfig
from node.provider import ProviderDaemon, ProviderSettings
from node.runtime import detect, formats
from node.runtime.pool import PoolConfig, RunRequest, RunResult, WorkerPool
from node.store.store import Store
from node.verifier import VerifierDaemon, VerifierSettings
from protocol.lifecycle import JobState
from protocol.messages import Determinism

MLP = {"in": 12, "hidden": 16, "depth": 1, "out": 4}
PRICE = 10**15
COMMIT_S = REVEAL_S = 90  # chain seconds; tests warp past them, so long windows cost nothing


def committee_devnet(committee_size: int = 3) -> Iterator[Devnet]:
    """Anvil with the escrow and a committee as its resolver (a fixture body)."""
    with Anvil() as anvil:
        net = Devnet(anvil.url)
        net.deploy_committee(
            CommitteeParams(
                min_stake=100 * TOKEN,
                committee_size=committee_size,
                draw_delay=1,
                commit_window=COMMIT_S,
                reveal_window=REVEAL_S,
                unbonding_delay=1000,
                no_vote_penalty=5 * TOKEN,
                vote_reward=TOKEN,
            )
        )
        yield net


def sandbox_pool(**config: Any) -> Iterator[WorkerPool]:
    """The real sandboxed pool (a fixture body); skips below sandbox tier 2."""
    report = detect.check()
    if report.tier < 2:
        pytest.skip(f"this host gives sandbox tier {report.tier}; the e2e path needs 2")
    with WorkerPool(PoolConfig(**{"slots": 2, "threads": 1, "timeout_s": 30, **config})) as p:
        yield p


class PerturbingPool:
    """Test-only cheater: the real pool, with one output byte flipped on chosen jobs."""

    def __init__(self, pool: WorkerPool, cheat: Callable[[int], bool]) -> None:
        self._pool = pool
        self._cheat = cheat
        self._n = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def run(self, req: RunRequest) -> RunResult:
        result = self._pool.run(req)
        self._n += 1
        if not self._cheat(self._n):
            return result
        out = bytearray(result.output)
        out[-1] ^= 0x01  # last byte of the tensor data: still valid safetensors
        data = bytes(out)
        return dataclasses.replace(result, output=data, output_sha256=hashlib.sha256(data).digest())


class MicroBatchingPool:
    """An honest provider whose runtime differs from the verifier's: the real pool, but it
    runs each sample of a job's batch as its own sandboxed job and concatenates the
    outputs (what a provider short of memory would do). Same function, other kernels:
    a batch-1 matmul rounds differently from the batched one, so the output bytes differ
    in the last bits (measured: every MLP job, rel. error <= 7.6e-7), which only the
    ``tolerance`` tier accepts."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def run(self, req: RunRequest) -> RunResult:
        inputs = formats.parse_safetensors(req.inputs, "inputs")
        batch = next(iter(inputs.values())).shape[0]
        parts = []
        for i in range(batch):
            one = formats.save_safetensors({k: v[i : i + 1] for k, v in inputs.items()})
            parts.append(self._pool.run(dataclasses.replace(req, inputs=one)))
        outs = [formats.parse_safetensors(p.output, "output") for p in parts]
        data, digest = formats.encode_outputs({k: torch.cat([o[k] for o in outs]) for k in outs[0]})
        return dataclasses.replace(
            parts[0],
            output=data,
            output_sha256=digest,
            metered_millis=sum(p.metered_millis for p in parts),
            wall_millis=sum(p.wall_millis for p in parts),
        )


class ColludingVerifier(VerifierDaemon):
    """Test-only: votes the opposite of what its re-run shows."""

    async def _decide(self, duty: Any) -> None:
        await super()._decide(duty)
        duty.vote = not duty.vote


def p2p_config(devnet: Devnet) -> P2PConfig:
    dom = devnet.escrow.domain
    return P2PConfig(chain_id=dom.chain_id, contract=dom.verifying_contract)


async def mine(devnet: Devnet, stop: asyncio.Event) -> None:
    """A block every second, as a live chain would (the committee draw needs later blocks).

    Not faster: anvil stamps each block at least one second after the previous one,
    so mining twice a second would run the chain clock ahead of the wall clock and
    close vote windows before a loaded machine has re-run the job.
    """
    while not stop.is_set():
        await asyncio.to_thread(devnet.mine, 1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


@contextlib.asynccontextmanager
async def running(start: Callable[[asyncio.Event], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``start(stop)`` as a task owned by this block: stopped and awaited on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(start(stop))
    try:
        yield
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def provider_daemon(
    devnet: Devnet, pool: Any, tmp: Path, actor: Actor, **settings: Any
) -> AsyncIterator[ProviderDaemon]:
    """A running provider for MLP jobs at :data:`PRICE`; ``settings`` override
    :class:`ProviderSettings` fields."""
    with Store(tmp / f"{actor.identity.peer_id[-8:]}.sqlite") as store:
        daemon = ProviderDaemon(
            actor.identity,
            rpc_url=devnet.rpc.url,
            escrow_address=devnet.escrow.address,
            p2p_config=p2p_config(devnet),
            pool=cast(WorkerPool, pool),
            store=store,
            data_dir=tmp / actor.identity.peer_id[-8:],
            settings=ProviderSettings(
                **{
                    "known_archs": frozenset({"mlp@1"}),
                    "offer_interval_s": 1,
                    "price_per_gpu_second": PRICE,
                    **settings,
                }
            ),
        )
        async with running(daemon.run):
            await asyncio.wait_for(daemon.ready.wait(), 60)
            yield daemon


async def wait_for_provider_peer(daemon: VerifierDaemon, prov: ProviderDaemon) -> None:
    """Until the provider's gossiped offer names its peer id to the verifier."""
    await until(lambda: daemon._provider_peer(prov.identity.address) is not None, 15, "offer")


@contextlib.asynccontextmanager
async def verifier_daemon(
    devnet: Devnet,
    pool: WorkerPool,
    tmp: Path,
    actor: Actor,
    prov: ProviderDaemon,
    *,
    cls: type[VerifierDaemon] = VerifierDaemon,
    **settings: Any,
) -> AsyncIterator[VerifierDaemon]:
    assert devnet.committee is not None
    home = tmp / ("v" + actor.identity.peer_id[-8:])
    with Store.open(home) as store:
        daemon = cls(
            actor.identity,
            rpc_url=devnet.rpc.url,
            escrow_address=devnet.escrow.address,
            committee_address=devnet.committee.address,
            p2p_config=p2p_config(devnet),
            pool=pool,
            store=store,
            data_dir=home / "verifier",
            settings=VerifierSettings(poll_interval_s=0.1, seed=1, **settings),
        )
        async with running(daemon.run):
            await asyncio.wait_for(daemon.ready.wait(), 60)
            await daemon.p2p.connect((await prov.p2p.addrs())[0])
            await wait_for_provider_peer(daemon, prov)
            yield daemon


@contextlib.asynccontextmanager
async def sdk_client(
    devnet: Devnet, tmp: Path, prov: ProviderDaemon, *, lanes: int = 64
) -> AsyncIterator[AsyncClient]:
    """The SDK's AsyncClient, funded, connected to the provider and seeing its offer.

    Jobs are run in audit mode (``accept=False``): acceptance would finalize a job at
    once and close its challenge window, so each audited job holds a lane until it
    finalizes; ``lanes`` must cover the jobs of a test.
    """
    actor = devnet.actor(deposit=100 * TOKEN)
    client = AsyncClient(
        actor.identity,
        rpc_url=devnet.rpc.url,
        escrow_address=devnet.escrow.address,
        p2p_config=p2p_config(devnet),
        data_dir=tmp / f"client-{actor.identity.peer_id[-8:]}",
        lanes=lanes,
    )
    async with client:
        await client.connect((await prov.p2p.addrs())[0])
        assert await client.wait_for_offers(1, 30) == 1
        yield client


async def audit_job(
    client: AsyncClient,
    seed: int,
    *,
    determinism: Determinism = Determinism.EXACT,
    batch: int = 3,
    weights_seed: int | None = None,
) -> Result:
    """One MLP job through the SDK in audit mode: checked, not accepted. Its inputs come
    from ``seed``, its weights from ``weights_seed`` (default: ``seed``)."""
    wseed = seed if weights_seed is None else weights_seed
    weights = formats.random_weights("mlp@1", MLP, seed=wseed)
    x = torch.randn(batch, MLP["in"], generator=torch.Generator().manual_seed(seed))
    result = await client.run(
        ("mlp@1", MLP, weights), {"x": x}, max_price=PRICE, accept=False, determinism=determinism
    )
    assert "acceptResult" not in result.receipts  # the challenge window stays open
    return result


async def until(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def state(devnet: Devnet, job_id: int) -> JobState:
    """The job's state onchain (its client's lane)."""
    job = lookup.rebuild_job(devnet.escrow, lookup.job_events(devnet.escrow, job_id))
    assert job is not None, job_id
    return devnet.escrow.lane_state(job.client, job.lane)


async def state_after(devnet: Devnet, job_id: int, within: float) -> JobState:
    """The job's state once it is terminal."""
    terminal = (JobState.FINALIZED, JobState.SLASHED, JobState.REFUNDED)
    await until(lambda: state(devnet, job_id) in terminal, within, f"job {job_id} to end")
    return state(devnet, job_id)
