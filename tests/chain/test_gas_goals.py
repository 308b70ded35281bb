"""Regression guard for the issue's gas goals (full figures: scripts/bench/gas.py).

Steady state: the provider already holds a balance and jobs reuse freed client lanes.
"""

from __future__ import annotations

from node.chain.devnet import TOKEN, Devnet

UNBATCHED_GOAL = 150_000
BATCHED_64_GOAL = 60_000


def test_unbatched_lifecycle_within_goal(net: Devnet) -> None:
    provider, client = net.provider(), net.actor(deposit=1000 * TOKEN)
    client.escrow.accept_result(net.submit(provider, net.create(client, provider, lane=0)))
    totals = []
    for _ in range(3):
        job, r1 = client.escrow.create_job(net.new_job(net.offer(provider), lane=0))
        att = net.attestation(provider, job)
        submitted, r2 = provider.escrow.submit_result(net.result_args(job, att))
        r3 = client.escrow.accept_result(submitted)
        totals.append(r1.gas_used + r2.gas_used + r3.gas_used)
    assert sorted(totals)[1] <= UNBATCHED_GOAL, totals


def test_batched_lifecycle_within_goal(net: Devnet) -> None:
    n = 64
    provider, client = net.provider(), net.actor(deposit=2 * n * 10 * TOKEN)
    client.escrow.accept_result(net.submit(provider, net.create(client, provider, lane=0)))
    per_job = []
    for _round in range(2):  # the second round reuses the lanes of the first
        news = [net.new_job(net.offer(provider), spec=bytes([k]), lane=k) for k in range(n)]
        created, r1 = client.escrow.create_jobs(news)
        results = [net.result_args(j, net.attestation(provider, j)) for j in created]
        submitted, r2 = provider.escrow.submit_results(results)
        r3 = client.escrow.finalize_many(submitted)
        per_job.append((r1.gas_used + r2.gas_used + r3.gas_used) // n)
    assert per_job[1] <= BATCHED_64_GOAL, per_job
