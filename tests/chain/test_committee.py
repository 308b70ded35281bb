"""VerifierCommittee on anvil: staking, draw, commit-reveal, every verdict path and revert."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from node.chain import errors as E
from node.chain.committee import (
    Committee,
    CommitteeParams,
    Phase,
    deploy_committee,
    new_salt,
    vote_commitment,
)
from node.chain.devnet import TOKEN, Actor, Devnet
from node.chain.jobs import Job
from protocol.lifecycle import JobState
from protocol.pricing import settle

MAXP = 10 * TOKEN
PRICE = TOKEN // 100


@dataclasses.dataclass
class Setup:
    """A committee, three staked verifiers, a disputed job and its parties."""

    net: Devnet
    committee: Committee
    verifiers: list[Actor]
    provider: Actor
    client: Actor
    challenger: Actor
    job: Job


@pytest.fixture
def cnet(net: Devnet) -> Iterator[Devnet]:
    net.deploy_committee()
    yield net
    net.committee = None


def _committee(net: Devnet) -> Committee:
    assert net.committee is not None
    return net.committee


def _disputed(net: Devnet, *, n_verifiers: int = 3) -> Setup:
    committee = _committee(net)
    verifiers = [net.verifier() for _ in range(n_verifiers)]
    provider, client = net.provider(), net.actor()
    job = net.submit(provider, net.create(client, provider, max_payment=MAXP))
    challenger = net.verifier()  # staked too: must never sit on its own dispute
    job, _ = challenger.escrow.challenge(job)
    return Setup(net, committee, verifiers, provider, client, challenger, job)


def _open_and_draw(s: Setup) -> list[bytes]:
    s.committee.with_signer(s.challenger.signer).open_dispute(s.job)
    s.net.mine(1)
    res = s.committee.with_signer(s.challenger.signer).draw(s.job)
    (ev,) = res.named("CommitteeDrawn")
    return [bytes.fromhex(a[2:]) for a in ev["members"]]


def _by_addr(s: Setup) -> dict[bytes, Actor]:
    return {v.address: v for v in s.verifiers}


def _vote(s: Setup, votes: dict[bytes, bool]) -> None:
    """Commit then reveal ``votes`` (member -> providerAtFault)."""
    actors = _by_addr(s)
    salts = {m: new_salt() for m in votes}
    for m, fault in votes.items():
        c = s.committee.with_signer(actors[m].signer)
        c.commit_vote(s.job.job_id, vote_commitment(s.job.job_id, m, fault, salts[m]))
    if len(votes) < len(s.committee.members(s.job.job_id)):
        s.net.warp(s.committee.param("commitWindow") + 1)
    for m, fault in votes.items():
        s.committee.with_signer(actors[m].signer).reveal_vote(s.job.job_id, fault, salts[m])


def _conserved(net: Devnet, s: Setup) -> None:
    c = _committee(net)
    total = c.reward_reserve()
    for a in net.actors:
        total += c.verifier(a.address).stake + c.balance_of(a.address)
    assert net.token.balance_of(c.address) == total


# ---------------------------------------------------------------- staking
def test_stake_exit_withdraw(cnet: Devnet) -> None:
    c = _committee(cnet)
    v = cnet.verifier(stake=60 * TOKEN)
    assert not c.is_active(v.address)  # below minStake
    token = cnet.token.with_signer(v.signer)
    token.mint(v.address, 40 * TOKEN)
    token.approve(c.address, 40 * TOKEN)
    res = c.with_signer(v.signer).stake(40 * TOKEN)
    assert res.named("VerifierStaked")[0]["active"] is True
    assert c.is_active(v.address) and c.active_count() == 1
    mine = c.with_signer(v.signer)
    with pytest.raises(E.ZeroAmount):
        mine.stake(0)
    with pytest.raises(E.NotExiting):
        mine.withdraw_stake()
    mine.request_exit()
    assert not c.is_active(v.address) and c.active_count() == 0
    with pytest.raises(E.AlreadyExiting):
        mine.request_exit()
    with pytest.raises(E.StakeLocked):
        mine.withdraw_stake()
    cnet.warp(1000)
    res = mine.withdraw_stake()
    assert res.named("StakeWithdrawn")[0]["amount"] == 100 * TOKEN
    assert cnet.token.balance_of(v.address) == 100 * TOKEN
    assert c.verifier(v.address).stake == 0
    with pytest.raises(E.ZeroAmount):
        mine.request_exit()
    with pytest.raises(E.ZeroAmount):
        mine.withdraw(0)
    with pytest.raises(E.InsufficientBalance):
        mine.withdraw(1)


def test_constructor_rejects_bad_parameters(cnet: Devnet) -> None:
    good = CommitteeParams(min_stake=TOKEN, no_vote_penalty=TOKEN)
    for bad in (
        dataclasses.replace(good, committee_size=2),
        dataclasses.replace(good, committee_size=33),
        dataclasses.replace(good, draw_delay=0),
        dataclasses.replace(good, commit_window=0),
        dataclasses.replace(good, no_vote_penalty=2 * TOKEN),
    ):
        with pytest.raises(E.ChainError):
            deploy_committee(cnet.deployer, cnet.escrow.address, bad)
    deploy_committee(cnet.deployer, cnet.escrow.address, good)


# ---------------------------------------------------------------- verdicts
def test_provider_at_fault_unanimous(cnet: Devnet) -> None:
    s = _disputed(cnet)
    cnet.fund_rewards(10 * TOKEN)
    members = _open_and_draw(s)
    assert sorted(members) == sorted(v.address for v in s.verifiers)
    assert s.challenger.address not in members and s.provider.address not in members
    client_before = cnet.escrow.balance_of(s.client.address)
    chal_before = cnet.escrow.balance_of(s.challenger.address)
    _vote(s, dict.fromkeys(members, True))
    res = s.committee.finalize_dispute(s.job)
    assert res.named("DisputeResolved")[0]["providerAtFault"] is True
    assert len(res.named("VerifierRewarded")) == 3
    assert cnet.escrow.job_state(s.job) is JobState.SLASHED
    slash, bond = cnet.params.slash_amount, cnet.params.challenge_bond
    assert cnet.escrow.balance_of(s.client.address) == client_before + MAXP
    assert cnet.escrow.balance_of(s.challenger.address) == chal_before + bond + slash
    for m in members:
        assert s.committee.balance_of(m) == TOKEN  # voteReward from the reserve
        assert s.committee.verifier(m).open_disputes == 0
    assert s.committee.reward_reserve() == 7 * TOKEN
    assert s.committee.dispute(s.job.job_id).phase is Phase.RESOLVED
    _conserved(cnet, s)


def test_provider_right_challenger_loses_bond(cnet: Devnet) -> None:
    s = _disputed(cnet)
    members = _open_and_draw(s)
    _vote(s, dict.fromkeys(members, False))
    res = s.committee.finalize_dispute(s.job)
    assert res.named("DisputeResolved")[0]["providerAtFault"] is False
    assert cnet.escrow.job_state(s.job) is JobState.FINALIZED
    payment = settle(PRICE, 1500, MAXP).payment
    assert cnet.escrow.balance_of(s.provider.address) == payment + cnet.params.challenge_bond
    assert cnet.escrow.stake_of(s.provider.address).active == cnet.params.min_stake
    _conserved(cnet, s)


def test_offline_member_does_not_block_and_is_penalised(cnet: Devnet) -> None:
    s = _disputed(cnet)
    members = _open_and_draw(s)
    offline = members[0]
    _vote(s, dict.fromkeys(members[1:], True))
    with pytest.raises(E.VotingOpen):
        s.committee.finalize_dispute(s.job)
    cnet.warp(s.committee.param("revealWindow") + 1)
    res = s.committee.finalize_dispute(s.job)
    penalty = s.committee.param("noVotePenalty")
    assert res.named("VerifierPenalized") == [
        {"jobId": s.job.job_id, "member": "0x" + offline.hex(), "penalty": penalty}
    ]
    assert cnet.escrow.job_state(s.job) is JobState.SLASHED
    assert s.committee.verifier(offline).stake == 100 * TOKEN - penalty
    assert not s.committee.is_active(offline)  # fell below minStake
    for m in members[1:]:  # the penalty is shared by the winners (no reserve funded)
        assert s.committee.balance_of(m) == penalty // 2
    _conserved(cnet, s)


def test_colluding_minority_cannot_flip(cnet: Devnet) -> None:
    s = _disputed(cnet)
    members = _open_and_draw(s)
    colluder = members[0]
    _vote(s, {colluder: False, members[1]: True, members[2]: True})
    s.committee.finalize_dispute(s.job)
    assert cnet.escrow.job_state(s.job) is JobState.SLASHED
    assert s.committee.balance_of(colluder) == 0
    assert s.committee.verifier(colluder).stake == 100 * TOKEN  # voted: no penalty


def test_no_votes_keeps_the_result(cnet: Devnet) -> None:
    s = _disputed(cnet)
    members = _open_and_draw(s)
    cnet.warp(s.committee.param("commitWindow") + s.committee.param("revealWindow") + 1)
    res = s.committee.finalize_dispute(s.job)
    assert res.named("DisputeResolved")[0] == {
        "jobId": s.job.job_id,
        "providerAtFault": False,
        "faultVotes": 0,
        "reveals": 0,
    }
    assert len(res.named("VerifierPenalized")) == len(members)
    assert cnet.escrow.job_state(s.job) is JobState.FINALIZED
    assert s.committee.reward_reserve() == 3 * s.committee.param("noVotePenalty")
    _conserved(cnet, s)


def test_empty_committee_resolves_at_once(cnet: Devnet) -> None:
    s = _disputed(cnet, n_verifiers=0)  # only the challenger is staked: not eligible
    assert _open_and_draw(s) == []
    s.committee.finalize_dispute(s.job)
    assert cnet.escrow.job_state(s.job) is JobState.FINALIZED


def test_equivocation_during_dispute_cancels(cnet: Devnet) -> None:
    s = _disputed(cnet)
    members = _open_and_draw(s)
    a1 = cnet.attestation(s.provider, s.job, output=b"one")
    a2 = cnet.attestation(s.provider, s.job, output=b"two")
    s.client.escrow.prove_equivocation(
        s.job, (a1.signed_data(), a1.signature), (a2.signed_data(), a2.signature)
    )
    _vote(s, dict.fromkeys(members, True))
    res = s.committee.finalize_dispute(s.job)
    assert res.named("DisputeCancelled") == [{"jobId": s.job.job_id}]
    assert s.committee.dispute(s.job.job_id).phase is Phase.CANCELLED
    assert all(s.committee.verifier(m).open_disputes == 0 for m in members)


def test_draw_is_rescheduled_when_the_seed_ages_out(cnet: Devnet) -> None:
    s = _disputed(cnet)
    s.committee.open_dispute(s.job)
    cnet.mine(260)
    res = s.committee.draw(s.job)
    (ev,) = res.named("DrawRescheduled")
    assert s.committee.dispute(s.job.job_id).draw_block == ev["drawBlock"]
    with pytest.raises(E.DrawTooEarly):
        s.committee.draw(s.job)
    cnet.mine(1)
    assert len(s.committee.draw(s.job).named("CommitteeDrawn")[0]["members"]) == 3


def test_committee_is_the_only_resolver(cnet: Devnet) -> None:
    s = _disputed(cnet)
    with pytest.raises(E.NotResolver):
        cnet.resolver.escrow.resolve(s.job, True)


# ---------------------------------------------------------------- reverts
def test_dispute_reverts(cnet: Devnet) -> None:
    s = _disputed(cnet)
    c, jid = s.committee, s.job.job_id
    undisputed = dataclasses.replace(s.job, challenger=bytes(20))
    with pytest.raises(E.NotDisputed):
        c.open_dispute(undisputed)
    with pytest.raises(E.WrongPhase):
        c.draw(s.job)
    c.open_dispute(s.job)
    with pytest.raises(E.DisputeExists):
        c.open_dispute(s.job)
    with pytest.raises(E.DrawTooEarly):
        c.draw(s.job)
    cnet.mine(1)
    with pytest.raises(E.JobMismatch):
        c.draw(dataclasses.replace(s.job, max_payment=1))
    c.draw(s.job)
    members = c.members(jid)
    actors = _by_addr(s)
    m0 = c.with_signer(actors[members[0]].signer)
    salt = new_salt()
    with pytest.raises(E.NotMember):
        c.with_signer(s.challenger.signer).commit_vote(jid, b"\x01" * 32)
    with pytest.raises(E.ZeroAmount):
        m0.commit_vote(jid, bytes(32))
    m0.commit_vote(jid, vote_commitment(jid, members[0], True, salt))
    assert c.vote_commitment(jid, members[0], True, salt) == vote_commitment(
        jid, members[0], True, salt
    )
    with pytest.raises(E.AlreadyCommitted):
        m0.commit_vote(jid, b"\x02" * 32)
    with pytest.raises(E.RevealNotOpen):
        m0.reveal_vote(jid, True, salt)
    with pytest.raises(E.VotingOpen):
        c.finalize_dispute(s.job)
    cnet.warp(c.param("commitWindow") + 1)
    with pytest.raises(E.CommitClosed):
        c.with_signer(actors[members[1]].signer).commit_vote(jid, b"\x01" * 32)
    with pytest.raises(E.NoCommitment):
        c.with_signer(actors[members[1]].signer).reveal_vote(jid, True, salt)
    with pytest.raises(E.BadReveal):
        m0.reveal_vote(jid, False, salt)
    m0.reveal_vote(jid, True, salt)
    with pytest.raises(E.AlreadyRevealed):
        m0.reveal_vote(jid, True, salt)
    cnet.warp(c.param("revealWindow") + 1)
    with pytest.raises(E.RevealClosed):
        m0.reveal_vote(jid, True, salt)
    with pytest.raises(E.JobMismatch):
        c.finalize_dispute(dataclasses.replace(s.job, max_payment=1))
    res = c.finalize_dispute(s.job)
    assert res.named("DisputeResolved")[0]["providerAtFault"] is True  # 1 of 1 revealed
    with pytest.raises(E.WrongPhase):
        c.finalize_dispute(s.job)
    with pytest.raises(E.WrongPhase):
        m0.commit_vote(jid, b"\x01" * 32)
    with pytest.raises(E.WrongPhase):
        m0.reveal_vote(jid, True, salt)


def test_member_stake_locked_until_dispute_ends(cnet: Devnet) -> None:
    s = _disputed(cnet)
    members = _open_and_draw(s)
    actors = _by_addr(s)
    mine = s.committee.with_signer(actors[members[0]].signer)
    mine.request_exit()
    cnet.warp(1000)
    with pytest.raises(E.StakeLocked):
        mine.withdraw_stake()
    s.committee.finalize_dispute(s.job)  # reveal window long over: everyone penalised
    mine.withdraw_stake()
    assert s.committee.verifier(members[0]).stake == 0
