"""The client batches concurrent runs' transactions, and a batch that reverts falls
back to one transaction per job, so one bad job fails alone (real anvil)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from node.chain import errors as E
from node.chain.devnet import TOKEN, Devnet
from node.client import AsyncClient, _Created
from node.p2p.config import P2PConfig
from protocol.lifecycle import JobState

MAXP = 10 * TOKEN


def _client(net: Devnet, tmp_path: Path, deposit: int) -> tuple[AsyncClient, object]:
    actor = net.actor(deposit=deposit)
    client = AsyncClient(
        actor.identity,
        rpc_url=net.rpc.url,
        escrow_address=net.escrow.address,
        p2p_config=P2PConfig(chain_id=net.rpc.chain_id, contract=net.escrow.address),
        data_dir=tmp_path / "client",
    )
    return client, actor


def test_create_batch_that_reverts_falls_back_to_one_job_at_a_time(
    net: Devnet, tmp_path: Path
) -> None:
    """Three concurrent creates with a deposit for two: the first goes alone, the other
    two share a ``createJobs`` that reverts (the total is short); one by one, the
    second is created and only the third fails."""
    provider = net.provider()
    client, _ = _client(net, tmp_path, deposit=2 * MAXP)
    news = [
        net.new_job(net.offer(provider), max_payment=MAXP, spec=bytes([i]), lane=i)
        for i in range(3)
    ]

    peer = provider.identity.peer_id

    async def main() -> list[object]:
        outcomes = await asyncio.gather(
            *(client._creator((n, peer)) for n in news), return_exceptions=True
        )
        # every transaction's notice was started as it was signed, and ends (here it
        # cannot be delivered: this client's libp2p is not started; that is only logged)
        notices = [o.notice for o in outcomes if isinstance(o, _Created)]
        await asyncio.gather(*notices)
        return outcomes

    try:
        first, second, third = asyncio.run(main())
    finally:
        client.store.close()
    assert isinstance(third, E.InsufficientBalance), third
    for outcome in (first, second):
        assert isinstance(outcome, _Created), outcome
        assert outcome.jobs_in_tx == 1 and len(outcome.tx.named("JobCreated")) == 1
        assert net.escrow.job_state(outcome.job) is JobState.MATCHED
    assert first.notice is not second.notice  # type: ignore[union-attr]
    assert client._creator.batches == 2 and client._creator.items == 3
    assert net.escrow.balance_of(client.identity.address) == 0


def test_accept_batch_shares_one_transaction_and_falls_back_on_revert(
    net: Devnet, tmp_path: Path
) -> None:
    provider = net.provider()
    client, actor = _client(net, tmp_path, deposit=10 * MAXP)
    news = [
        net.new_job(net.offer(provider), max_payment=MAXP, spec=bytes([i]), lane=i)
        for i in range(5)
    ]
    created, _ = actor.escrow.create_jobs(news)  # type: ignore[attr-defined]
    results = [net.result_args(j, net.attestation(provider, j)) for j in created[:4]]
    submitted, _ = provider.escrow.submit_results(results)

    async def accept(jobs: list[object]) -> list[object]:
        return await asyncio.gather(*(client._acceptor(j) for j in jobs), return_exceptions=True)

    more = [
        net.new_job(net.offer(provider), max_payment=MAXP, spec=bytes([9 + i]), lane=10 + i)
        for i in range(2)
    ]
    more_jobs, _ = actor.escrow.create_jobs(more)  # type: ignore[attr-defined]
    done, _ = provider.escrow.submit_results(
        [net.result_args(j, net.attestation(provider, j)) for j in more_jobs]
    )
    try:
        # one alone, then three in one finalizeMany
        outcomes = asyncio.run(accept(submitted))
        # [done[0]] alone, then [no result yet, done[1]]: that batch reverts; one by one,
        # only the job without a result fails
        outcomes2 = asyncio.run(accept([done[0], created[4], done[1]]))
    finally:
        client.store.close()
    shared = [o[1] for o in outcomes]  # type: ignore[index]
    assert shared == [1, 3, 3, 3]
    assert len({o[0].receipt.tx_hash for o in outcomes[1:]}) == 1  # type: ignore[index]
    assert all(net.escrow.job_state(j) is JobState.FINALIZED for j in submitted)
    assert isinstance(outcomes2[1], E.InvalidState), outcomes2[1]
    assert [o[1] for o in (outcomes2[0], outcomes2[2])] == [1, 1]  # type: ignore[index]
    assert client._acceptor.batches == 4  # [s0], [s1 s2 s3], [d0], [x d1]
    assert all(net.escrow.job_state(j) is JobState.FINALIZED for j in done)
    assert net.escrow.job_state(created[4]) is JobState.MATCHED
