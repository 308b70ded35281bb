"""Verification end to end in one process: real anvil, libp2p, sandbox; provider, verifiers,
committee, and the SDK's client in audit mode (``run(..., accept=False)``). A cheating
provider is challenged and slashed, an honest one never is."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.chain.committee import Phase
from node.chain.devnet import TOKEN, Devnet
from node.client import AsyncClient
from node.runtime.pool import WorkerPool
from node.verifier import Outcome
from protocol.identity import address_from_peer_id
from protocol.lifecycle import JobState
from protocol.messages import Attestation
from tests.e2e.verification_kit import (
    COMMIT_S,
    REVEAL_S,
    ColludingVerifier,
    PerturbingPool,
    audit_job,
    committee_devnet,
    mine,
    provider_daemon,
    running,
    sandbox_pool,
    sdk_client,
    state,
    state_after,
    until,
    verifier_daemon,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def devnet() -> Iterator[Devnet]:
    yield from committee_devnet()


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    yield from sandbox_pool()


def _local_states(client: AsyncClient) -> list[JobState]:
    return [j.state for j in client.store.jobs.select(limit=10)]


# ---------------------------------------------------------------- scenarios
def test_cheater_is_challenged_outvoted_and_slashed(devnet: Devnet, pool: WorkerPool) -> None:
    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov_actor = devnet.provider()
        sampler, *members = [devnet.verifier() for _ in range(4)]
        cheater = PerturbingPool(pool, cheat=lambda n: True)
        async with (
            running(lambda stop: mine(devnet, stop)),
            provider_daemon(devnet, cheater, tmp, prov_actor) as prov,
            verifier_daemon(devnet, pool, tmp, sampler, prov, sample_rate=1.0) as v0,
            verifier_daemon(devnet, pool, tmp, members[0], prov, sample_rate=0.0) as v1,
            verifier_daemon(devnet, pool, tmp, members[1], prov, sample_rate=0.0) as v2,
            verifier_daemon(devnet, pool, tmp, members[2], prov, sample_rate=0.0) as v3,
            sdk_client(devnet, tmp, prov) as client,
        ):
            client_before = devnet.escrow.balance_of(client.identity.address)
            job = await audit_job(client, seed=1)
            assert await state_after(devnet, job.job_id, 60) is JobState.SLASHED
            assert v0.stats.outcomes[job.job_id] is Outcome.MISMATCH
            assert v0.stats.challenges == 1
            for v in (v1, v2, v3):
                assert v.stats.outcomes[job.job_id] is Outcome.MISMATCH
                assert v.stats.votes_revealed == 1
            assert devnet.escrow.balance_of(client.identity.address) == client_before  # refunded
            # the SDK followed its audited job to the verdict and freed the lane
            await until(lambda: _local_states(client) == [JobState.SLASHED], 30, "client store")
            assert not client._busy_lanes
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
            running(lambda stop: mine(devnet, stop)),
            provider_daemon(devnet, pool, tmp, prov_actor) as prov,
            verifier_daemon(devnet, pool, tmp, sampler, prov, sample_rate=1.0) as v0,
            sdk_client(devnet, tmp, prov, lanes=n_jobs + 8) as client,
        ):
            jobs = [await audit_job(client, seed=100 + k) for k in range(n_jobs)]
            ids = {j.job_id for j in jobs}
            assert all(j.provider == prov_actor.address for j in jobs)
            await until(lambda: ids <= set(v0.stats.outcomes), 60, "every job checked")
            assert {v0.stats.outcomes[i] for i in ids} == {Outcome.MATCH}
            assert v0.stats.challenges == 0
            assert all(state(devnet, j.job_id) is JobState.SUBMITTED for j in jobs)
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
            running(lambda stop: mine(devnet, stop)),
            provider_daemon(devnet, pool, tmp, prov_actor) as prov,
            verifier_daemon(devnet, pool, tmp, honest, prov, sample_rate=0.0) as v1,
            verifier_daemon(
                devnet, pool, tmp, colluder, prov, sample_rate=0.0, cls=ColludingVerifier
            ) as v2,
            verifier_daemon(
                devnet, pool, tmp, offline, prov, sample_rate=0.0, join_committees=False
            ),
            sdk_client(devnet, tmp, prov) as client,
        ):
            job = await audit_job(client, seed=7)
            await until(lambda: job.job_id in v1._submitted, 30, "submission seen")
            submitted = v1._jobs[job.job_id]
            disputed, _ = await asyncio.to_thread(liar.escrow.challenge, submitted)
            assert devnet.committee is not None
            committee = devnet.committee
            await asyncio.to_thread(committee.with_signer(liar.signer).open_dispute, disputed)
            jid = job.job_id
            await until(lambda: committee.dispute(jid).commits == 2, 60, "two commits")
            assert committee.dispute(jid).phase is Phase.VOTING
            devnet.warp(COMMIT_S + 1)  # the offline member's commit never comes
            await until(lambda: committee.dispute(jid).reveals == 2, 60, "two reveals")
            devnet.warp(REVEAL_S + 1)
            assert await state_after(devnet, job.job_id, 60) is JobState.FINALIZED
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
            await until(lambda: _local_states(client) == [JobState.FINALIZED], 30, "client store")

    asyncio.run(scenario())


def test_equivocation_is_slashed_without_reexecution(devnet: Devnet, pool: WorkerPool) -> None:
    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov_actor = devnet.provider()
        watcher = devnet.verifier()
        async with (
            running(lambda stop: mine(devnet, stop)),
            provider_daemon(devnet, pool, tmp, prov_actor) as prov,
            verifier_daemon(devnet, pool, tmp, watcher, prov, sample_rate=0.0) as v0,
            sdk_client(devnet, tmp, prov) as client,
        ):
            job = await audit_job(client, seed=9)
            await until(lambda: job.job_id in v0._submitted, 30, "submission seen")
            recorded = job.attestation  # what the SDK checked against the chain
            dom = devnet.escrow.domain
            other = Attestation.create(  # a second result the provider signed for the job
                prov_actor.identity,
                chain_id=dom.chain_id,
                contract=dom.verifying_contract,
                job_id=job.job_id,
                spec_hash=recorded.spec_hash,
                output_hash=b"\x07" * 32,
                runtime=recorded.runtime,
                determinism=recorded.determinism,
                metered_millis=recorded.metered_millis,
            )
            assert not await v0.observe_attestation(recorded)  # the recorded one proves nothing
            assert await v0.observe_attestation(other)
            assert state(devnet, job.job_id) is JobState.SLASHED
            assert v0.stats.reexecutions == 0
            assert v0.stats.equivocations_proven == 1
            assert address_from_peer_id(prov.p2p.peer_id) == prov_actor.address

    asyncio.run(scenario())
