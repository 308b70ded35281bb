"""A committee member killed with SIGKILL between commitVote and revealVote, restarted,
still reveals its vote: the salt was in the node store before the commit was sent.

Real anvil, libp2p, sandbox, and a real ``gpunet verify`` process for the member. The
committee is that member plus one that never votes, so reveals open only when the
commit window ends (the test warps past it while the member is down). Without the
stored salt the restarted member could not open its commitment: no vote would be
revealed, the tie rule would keep the cheater's result and the member would be
penalised; the test asserts the opposite.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.chain.devnet import TOKEN, Actor, Devnet
from node.runtime.pool import WorkerPool
from node.store.store import Store
from protocol.lifecycle import JobState
from tests.e2e.node_process import NodeProcess
from tests.e2e.verification_kit import (
    COMMIT_S,
    REVEAL_S,
    PerturbingPool,
    audit_job,
    committee_devnet,
    mine,
    provider_daemon,
    running,
    sandbox_pool,
    sdk_client,
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


def verifier_process(devnet: Devnet, actor: Actor, home: Path, provider_addr: str) -> NodeProcess:
    """``gpunet verify`` in its own process, restartable on the same data dir and key."""
    return NodeProcess.make(
        home, devnet, actor,
        ["verify", "--sample-rate", "0", "--connect", provider_addr],
        '[p2p]\nlisten_addrs = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n[runtime]\npool_size = 1\n',
        poll_interval_s=0.1,
    )  # fmt: skip


def test_member_killed_between_commit_and_reveal_reveals_after_restart(
    devnet: Devnet, pool: WorkerPool
) -> None:
    assert devnet.committee is not None
    committee = devnet.committee

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov_actor = devnet.provider()
        sampler = devnet.verifier()  # challenges, so it is never drawn
        member = devnet.verifier()  # the `gpunet verify` process
        offline = devnet.verifier()  # drawn, never commits
        cheater = PerturbingPool(pool, cheat=lambda n: True)
        async with (
            running(lambda stop: mine(devnet, stop)),
            provider_daemon(devnet, cheater, tmp, prov_actor) as prov,
        ):
            proc = verifier_process(devnet, member, tmp / "member", (await prov.p2p.addrs())[0])
            await asyncio.to_thread(proc.start, " ready")
            try:
                async with (
                    verifier_daemon(devnet, pool, tmp, sampler, prov, sample_rate=1.0),
                    sdk_client(devnet, tmp, prov) as client,
                ):
                    jid = (await audit_job(client, seed=5)).job_id
                    me = member.address

                    def committed() -> bool:
                        return committee.ballot(jid, me).commitment != bytes(32)

                    await until(committed, 120, "the member's commit")
                    await asyncio.to_thread(proc.kill)  # between commit and reveal
                    assert set(committee.members(jid)) == {me, offline.address}
                    d = committee.dispute(jid)
                    assert (d.commits, d.reveals) == (1, 0)
                    with Store.open(proc.home) as store:  # durable before the commit was sent
                        vote = store.votes.get(committee.address, jid, me)
                    assert vote is not None and vote.fault and vote.revealed_at is None
                    assert vote.commitment == committee.ballot(jid, me).commitment
                    devnet.warp(COMMIT_S + 1)  # the offline member never commits: reveals open

                    await asyncio.to_thread(proc.start, " ready")  # same key, same data dir
                    await until(lambda: committee.ballot(jid, me).revealed, 120, "the reveal")
                    devnet.warp(REVEAL_S + 1)
                    assert await state_after(devnet, jid, 60) is JobState.SLASHED
                    d = committee.dispute(jid)
                    assert (d.fault_votes, d.reveals) == (1, 1)
                    assert committee.verifier(me).stake == 100 * TOKEN  # not penalised
                    assert committee.verifier(offline.address).stake == 95 * TOKEN
            finally:
                await asyncio.to_thread(proc.stop)
            with Store.open(proc.home) as store:
                vote = store.votes.get(committee.address, jid, me)
                assert vote is not None and vote.revealed_at is not None

    asyncio.run(scenario())
