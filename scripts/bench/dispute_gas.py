#!/usr/bin/env python3
"""Gas of one committee dispute, step by step, on a fresh anvil (issue 7).

    .venv/bin/python scripts/bench/dispute_gas.py            # print the table
    .venv/bin/python scripts/bench/dispute_gas.py --size 5   # a 5-member committee

Every figure is ``gasUsed`` of a whole mined transaction (21k base included).
The verifiers are staked and the reward reserve funded beforehand; each row is
the median over ``--disputes`` disputes. "dispute total" is challenge +
openDispute + draw + K commits + K reveals + finalizeDispute: what the
challenger, the K members and the finalizer pay together for one dispute.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from node.chain.anvil import Anvil
from node.chain.committee import CommitteeParams, new_salt, vote_commitment
from node.chain.devnet import TOKEN, Devnet


def measure(size: int, disputes: int, fault: bool) -> dict[str, int]:
    """Median gas per step over ``disputes`` disputes with a ``size``-member committee."""
    rows: dict[str, list[int]] = {}
    with Anvil() as anvil:
        net = Devnet(anvil.url)
        committee = net.deploy_committee(
            CommitteeParams(
                min_stake=100 * TOKEN,
                committee_size=size,
                draw_delay=1,
                commit_window=60,
                reveal_window=60,
                unbonding_delay=1000,
                no_vote_penalty=5 * TOKEN,
                vote_reward=TOKEN,
            )
        )
        net.fund_rewards(1000 * TOKEN)
        verifiers = {v.address: v for v in (net.verifier() for _ in range(size + 2))}
        provider, client = net.actor(deposit=0, stake=10_000 * TOKEN), net.actor()
        challenger = net.actor(deposit=1000 * TOKEN)
        for _ in range(disputes):
            job = net.submit(provider, net.create(client, provider))
            job, res = challenger.escrow.challenge(job)
            steps = {"challenge": res.gas_used}
            steps["openDispute"] = committee.open_dispute(job).gas_used
            net.mine(1)
            drawn = committee.draw(job)
            steps["draw"] = drawn.gas_used
            members = [bytes.fromhex(m[2:]) for m in drawn.named("CommitteeDrawn")[0]["members"]]
            salts = {m: new_salt() for m in members}
            commits = [
                committee.with_signer(verifiers[m].signer)
                .commit_vote(job.job_id, vote_commitment(job.job_id, m, fault, salts[m]))
                .gas_used
                for m in members
            ]
            reveals = [
                committee.with_signer(verifiers[m].signer)
                .reveal_vote(job.job_id, fault, salts[m])
                .gas_used
                for m in members
            ]
            steps["commitVote (each)"] = int(statistics.median(commits))
            steps["revealVote (each)"] = int(statistics.median(reveals))
            steps["finalizeDispute"] = committee.finalize_dispute(job).gas_used
            steps["dispute total"] = (
                steps["challenge"]
                + steps["openDispute"]
                + steps["draw"]
                + sum(commits)
                + sum(reveals)
                + steps["finalizeDispute"]
            )
            for k, v in steps.items():
                rows.setdefault(k, []).append(v)
    return {k: int(statistics.median(v)) for k, v in rows.items()}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=3, help="committee size (odd)")
    parser.add_argument("--disputes", type=int, default=5)
    args = parser.parse_args(argv)
    slashed = measure(args.size, args.disputes, fault=True)
    upheld = measure(args.size, args.disputes, fault=False)
    print(f"| step (K = {args.size}) | provider at fault (Slashed) | provider right (Finalized) |")
    print("|---|---:|---:|")
    for k in slashed:
        print(f"| {k} | {slashed[k]:,} | {upheld[k]:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
