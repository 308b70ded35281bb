"""Verification end to end in one process: real anvil, libp2p, sandbox; provider, verifiers,
committee. A cheating provider is challenged and slashed, an honest one never is."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from node.chain.anvil import Anvil
from node.chain.committee import CommitteeParams, Phase
from node.chain.devnet import TOKEN, Actor, Devnet
from node.chain.escrow import NewJob
from node.chain.jobs import Job as ChainJob
from node.p2p.config import P2PConfig
from node.p2p.service import P2PService
from node.provider import ProviderDaemon, ProviderSettings
from node.runtime import detect, formats
from node.runtime.pool import PoolConfig, RunRequest, RunResult, WorkerPool
from node.store.store import Store
from node.verifier import Outcome, VerifierDaemon, VerifierSettings
from protocol import pricing
from protocol.content import ContentId
from protocol.identity import address_from_peer_id
from protocol.lifecycle import JobState
from protocol.messages import (
    Attestation,
    JobAccept,
    JobRequest,
    JobSpec,
    ModelRef,
    ResultManifest,
)

MLP = {"in": 12, "hidden": 16, "depth": 1, "out": 4}
PRICE = 10**15
COMMIT_S = REVEAL_S = 90  # chain seconds; tests warp past them, so long windows cost nothing

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def devnet() -> Iterator[Devnet]:
    with Anvil() as anvil:
        net = Devnet(anvil.url)
        net.deploy_committee(
            CommitteeParams(
                min_stake=100 * TOKEN,
                committee_size=3,
                draw_delay=1,
                commit_window=COMMIT_S,
                reveal_window=REVEAL_S,
                unbonding_delay=1000,
                no_vote_penalty=5 * TOKEN,
                vote_reward=TOKEN,
            )
        )
        yield net


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    report = detect.check()
    if report.tier < 2:
        pytest.skip(f"this host gives sandbox tier {report.tier}; the e2e path needs 2")
    with WorkerPool(PoolConfig(slots=2, threads=1, timeout_s=30)) as p:
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


class ColludingVerifier(VerifierDaemon):
    """Test-only: votes the opposite of what its re-run shows."""

    async def _decide(self, duty: Any) -> None:
        await super()._decide(duty)
        duty.vote = not duty.vote


def _p2p(devnet: Devnet) -> P2PConfig:
    dom = devnet.escrow.domain
    return P2PConfig(chain_id=dom.chain_id, contract=dom.verifying_contract)


async def _mine(devnet: Devnet, stop: asyncio.Event) -> None:
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
    stop = asyncio.Event()
    task = asyncio.create_task(start(stop))
    try:
        yield
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def provider_daemon(
    devnet: Devnet, pool: Any, tmp: Path, actor: Actor
) -> AsyncIterator[ProviderDaemon]:
    with Store(tmp / f"{actor.identity.peer_id[-8:]}.sqlite") as store:
        daemon = ProviderDaemon(
            actor.identity,
            rpc_url=devnet.rpc.url,
            escrow_address=devnet.escrow.address,
            p2p_config=_p2p(devnet),
            pool=cast(WorkerPool, pool),
            store=store,
            data_dir=tmp / actor.identity.peer_id[-8:],
            settings=ProviderSettings(
                known_archs=frozenset({"mlp@1"}), offer_interval_s=1, price_per_gpu_second=PRICE
            ),
        )
        async with running(daemon.run):
            await asyncio.wait_for(daemon.ready.wait(), 60)
            yield daemon


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
    daemon = cls(
        actor.identity,
        rpc_url=devnet.rpc.url,
        escrow_address=devnet.escrow.address,
        committee_address=devnet.committee.address,
        p2p_config=_p2p(devnet),
        pool=pool,
        data_dir=tmp / ("v" + actor.identity.peer_id[-8:]),
        settings=VerifierSettings(poll_interval_s=0.1, seed=1, **settings),
    )
    async with running(daemon.run):
        await asyncio.wait_for(daemon.ready.wait(), 60)
        await daemon.p2p.connect((await prov.p2p.addrs())[0])
        for _ in range(300):  # the provider's peer id comes from its gossiped offer
            if daemon._provider_peer(prov.identity.address) is not None:
                break
            await asyncio.sleep(0.05)
        yield daemon


class BareClient:
    """A client that lets the challenge window run (the SDK accepts at once, which would
    finalize the job before any verifier could look at it)."""

    def __init__(self, devnet: Devnet, tmp: Path) -> None:
        self.devnet = devnet
        self.actor = devnet.actor(deposit=100 * TOKEN)
        self.manifests: dict[int, ResultManifest] = {}
        self._specs: dict[int, JobSpec] = {}
        self._allowed: set[bytes] = set()
        self.p2p = P2PService(
            self.actor.identity,
            _p2p(devnet),
            on_result=self._on_result,
            authorize=self._authorize,
        )
        from node.p2p.blobstore import BlobStore

        self.blobs = BlobStore(tmp / "client-blobs")
        self.p2p.blob_store = self.blobs
        self._lane = 0

    async def _on_result(self, peer: str, manifest: ResultManifest) -> bool:
        self.manifests[manifest.job_id] = manifest
        return True

    async def _authorize(self, peer: str, cid: ContentId, job_id: int) -> bool:
        return cid.digest in self._allowed

    async def run(self, peer: str, seed: int) -> ChainJob:
        """Request, match and wait for the manifest of one MLP job; no acceptance."""
        weights = formats.random_weights("mlp@1", MLP, seed=seed)
        x = torch.randn(3, 12, generator=torch.Generator().manual_seed(seed))
        inputs = formats.save_safetensors({"x": x})
        w, i = self.blobs.put_bytes(weights), self.blobs.put_bytes(inputs)
        self._allowed |= {w.digest, i.digest}
        spec = JobSpec(
            model=ModelRef(arch="mlp@1", config=MLP, weights=w.digest, weights_size=len(weights)),
            inputs=i.digest,
            inputs_size=len(inputs),
            max_gpu_millis=10_000,
        )
        req = JobRequest(
            request_id=os.urandom(16),
            client=self.actor.address,
            spec=spec,
            max_price_per_gpu_second=PRICE,
            max_payment=pricing.max_payment_for(PRICE, 10_000),
            deadline=int(time.time()) + 300,
        )
        accept = await self.p2p.request_job(peer, req, time_limit=10)
        assert isinstance(accept, JobAccept), accept
        new = NewJob(
            offer=accept.offer.signed_data(),
            offer_sig=accept.offer.signature,
            spec_hash=accept.spec_hash,
            max_payment=req.max_payment,
            deadline=req.deadline,
            lane=self._lane,
        )
        self._lane += 1
        job, _ = await asyncio.to_thread(self.actor.escrow.create_job, new)
        for _ in range(600):
            if job.job_id in self.manifests:
                break
            await asyncio.sleep(0.05)
        assert job.job_id in self.manifests
        return job


@contextlib.asynccontextmanager
async def bare_client(devnet: Devnet, tmp: Path, prov: ProviderDaemon) -> AsyncIterator[BareClient]:
    c = BareClient(devnet, tmp)
    await c.p2p.start()
    try:
        await c.p2p.connect((await prov.p2p.addrs())[0])
        yield c
    finally:
        await c.p2p.stop()


async def _until(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _state(devnet: Devnet, job: ChainJob) -> JobState:
    return devnet.escrow.lane_state(job.client, job.lane)


async def _state_after(devnet: Devnet, job: ChainJob, within: float) -> JobState:
    terminal = (JobState.FINALIZED, JobState.SLASHED, JobState.REFUNDED)
    await _until(lambda: _state(devnet, job) in terminal, within, f"job {job.job_id} to end")
    return _state(devnet, job)


# ---------------------------------------------------------------- scenarios
def test_cheater_is_challenged_outvoted_and_slashed(devnet: Devnet, pool: WorkerPool) -> None:
    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov_actor = devnet.provider()
        sampler, *members = [devnet.verifier() for _ in range(4)]
        cheater = PerturbingPool(pool, cheat=lambda n: True)
        async with (
            running(lambda stop: _mine(devnet, stop)),
            provider_daemon(devnet, cheater, tmp, prov_actor) as prov,
            verifier_daemon(devnet, pool, tmp, sampler, prov, sample_rate=1.0) as v0,
            verifier_daemon(devnet, pool, tmp, members[0], prov, sample_rate=0.0) as v1,
            verifier_daemon(devnet, pool, tmp, members[1], prov, sample_rate=0.0) as v2,
            verifier_daemon(devnet, pool, tmp, members[2], prov, sample_rate=0.0) as v3,
            bare_client(devnet, tmp, prov) as client,
        ):
            client_before = devnet.escrow.balance_of(client.actor.address)
            job = await client.run(prov.p2p.peer_id, seed=1)
            assert await _state_after(devnet, job, 60) is JobState.SLASHED
            assert v0.stats.outcomes[job.job_id] is Outcome.MISMATCH
            assert v0.stats.challenges == 1
            for v in (v1, v2, v3):
                assert v.stats.outcomes[job.job_id] is Outcome.MISMATCH
                assert v.stats.votes_revealed == 1
            assert devnet.escrow.balance_of(client.actor.address) == client_before  # refunded
            slash = devnet.params.slash_amount
            assert devnet.escrow.stake_of(prov_actor.address).active == (
                devnet.params.min_stake - slash
            )
            assert devnet.escrow.balance_of(sampler.address) == 100 * TOKEN + slash

    asyncio.run(scenario())


def test_honest_provider_is_never_challenged(devnet: Devnet, pool: WorkerPool) -> None:
    n_jobs = int(os.environ.get("GPUNET_HONEST_JOBS", "30"))

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov_actor = devnet.provider()
        sampler = devnet.verifier()
        async with (
            running(lambda stop: _mine(devnet, stop)),
            provider_daemon(devnet, pool, tmp, prov_actor) as prov,
            verifier_daemon(devnet, pool, tmp, sampler, prov, sample_rate=1.0) as v0,
            bare_client(devnet, tmp, prov) as client,
        ):
            jobs = [await client.run(prov.p2p.peer_id, seed=100 + k) for k in range(n_jobs)]
            ids = {j.job_id for j in jobs}
            await _until(lambda: ids <= set(v0.stats.outcomes), 60, "every job checked")
            assert {v0.stats.outcomes[i] for i in ids} == {Outcome.MATCH}
            assert v0.stats.challenges == 0
            assert all(_state(devnet, j) is JobState.SUBMITTED for j in jobs)
            assert devnet.escrow.stake_of(prov_actor.address).active == devnet.params.min_stake

    asyncio.run(scenario())


def test_false_challenge_loses_its_bond_despite_an_offline_member_and_a_colluder(
    devnet: Devnet, pool: WorkerPool
) -> None:
    """An honest result, challenged by a liar; of the committee one member is offline
    (never votes) and one colludes with the liar: the honest member decides."""

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov_actor = devnet.provider()
        honest, colluder, offline = [devnet.verifier() for _ in range(3)]
        liar = devnet.actor(deposit=20 * TOKEN)
        async with (
            running(lambda stop: _mine(devnet, stop)),
            provider_daemon(devnet, pool, tmp, prov_actor) as prov,
            verifier_daemon(devnet, pool, tmp, honest, prov, sample_rate=0.0) as v1,
            verifier_daemon(
                devnet, pool, tmp, colluder, prov, sample_rate=0.0, cls=ColludingVerifier
            ) as v2,
            verifier_daemon(
                devnet, pool, tmp, offline, prov, sample_rate=0.0, join_committees=False
            ),
            bare_client(devnet, tmp, prov) as client,
        ):
            job = await client.run(prov.p2p.peer_id, seed=7)
            await _until(lambda: job.job_id in v1._submitted, 30, "submission seen")
            submitted = v1._jobs[job.job_id]
            disputed, _ = await asyncio.to_thread(liar.escrow.challenge, submitted)
            assert devnet.committee is not None
            committee = devnet.committee
            await asyncio.to_thread(committee.with_signer(liar.signer).open_dispute, disputed)
            jid = job.job_id
            await _until(lambda: committee.dispute(jid).commits == 2, 60, "two commits")
            assert committee.dispute(jid).phase is Phase.VOTING
            devnet.warp(COMMIT_S + 1)  # the offline member's commit never comes
            await _until(lambda: committee.dispute(jid).reveals == 2, 60, "two reveals")
            devnet.warp(REVEAL_S + 1)
            assert await _state_after(devnet, job, 60) is JobState.FINALIZED
            d = committee.dispute(jid)
            assert (d.phase, d.fault_votes, d.reveals) == (
                Phase.RESOLVED,
                1,
                2,
            )  # tie: result stands
            assert v1.stats.outcomes[jid] is Outcome.MATCH
            assert v2.stats.votes_revealed == 1
            assert devnet.escrow.balance_of(liar.address) == 10 * TOKEN  # bond gone
            assert committee.verifier(offline.address).stake == 95 * TOKEN  # penalised

    asyncio.run(scenario())


def test_equivocation_is_slashed_without_reexecution(devnet: Devnet, pool: WorkerPool) -> None:
    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov_actor = devnet.provider()
        watcher = devnet.verifier()
        async with (
            running(lambda stop: _mine(devnet, stop)),
            provider_daemon(devnet, pool, tmp, prov_actor) as prov,
            verifier_daemon(devnet, pool, tmp, watcher, prov, sample_rate=0.0) as v0,
            bare_client(devnet, tmp, prov) as client,
        ):
            job = await client.run(prov.p2p.peer_id, seed=9)
            await _until(lambda: job.job_id in v0._submitted, 30, "submission seen")
            recorded = client.manifests[job.job_id].attestation
            dom = devnet.escrow.domain
            other = Attestation.create(  # a second result the provider signed for the job
                prov_actor.identity,
                chain_id=dom.chain_id,
                contract=dom.verifying_contract,
                job_id=job.job_id,
                spec_hash=job.spec_hash,
                output_hash=b"\x07" * 32,
                runtime=recorded.runtime,
                determinism=recorded.determinism,
                metered_millis=recorded.metered_millis,
            )
            assert not await v0.observe_attestation(recorded)  # the recorded one proves nothing
            assert await v0.observe_attestation(other)
            assert _state(devnet, job) is JobState.SLASHED
            assert v0.stats.reexecutions == 0
            assert v0.stats.equivocations_proven == 1
            assert address_from_peer_id(prov.p2p.peer_id) == prov_actor.address

    asyncio.run(scenario())
