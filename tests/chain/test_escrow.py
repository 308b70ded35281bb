"""Every escrow transition and every revert, on anvil, with its custom error and amounts."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from node.chain import errors as E
from node.chain.devnet import TOKEN, Actor, Devnet
from node.chain.escrow import ResultArgs
from node.chain.jobs import Job
from protocol import eip712
from protocol.lifecycle import JobState
from protocol.pricing import settle

PRICE = TOKEN // 100  # per GPU-second
MAXP = 10 * TOKEN


def _matched(net: Devnet) -> tuple[Actor, Actor, Job]:
    provider, client = net.provider(), net.actor()
    return provider, client, net.create(client, provider, max_payment=MAXP)


def _submitted(net: Devnet, millis: int = 1500) -> tuple[Actor, Actor, Job]:
    provider, client, job = _matched(net)
    return provider, client, net.submit(provider, job, metered_millis=millis)


# ---------------------------------------------------------------- money in/out, staking
def test_deposit_withdraw(net: Devnet) -> None:
    a = net.actor(deposit=5 * TOKEN)
    assert a.escrow.balance_of(a.address) == 5 * TOKEN
    res = a.escrow.withdraw(2 * TOKEN)
    assert res.named("Withdrawn") == [{"account": "0x" + a.address.hex(), "amount": 2 * TOKEN}]
    assert net.token.balance_of(a.address) == 2 * TOKEN
    assert a.escrow.balance_of(a.address) == 3 * TOKEN
    with pytest.raises(E.InsufficientBalance) as info:
        a.escrow.withdraw(4 * TOKEN)
    assert info.value.fields["needed"] == 4 * TOKEN
    with pytest.raises(E.ZeroAmount):
        a.escrow.withdraw(0)
    with pytest.raises(E.ZeroAmount):
        a.escrow.deposit(0)


def test_deposit_without_allowance_bubbles_token_error(net: Devnet) -> None:
    a = net.actor(deposit=0)
    with pytest.raises(E.ContractRevert) as info:
        a.escrow.deposit(TOKEN)
    assert info.value.name == "ERC20InsufficientAllowance"


def test_stake_unbond_withdraw(net: Devnet) -> None:
    p = net.actor(deposit=300 * TOKEN)
    p.escrow.stake(200 * TOKEN)
    assert net.escrow.stake_of(p.address).active == 200 * TOKEN
    with pytest.raises(E.InsufficientStake):
        p.escrow.request_unstake(201 * TOKEN)
    with pytest.raises(E.NothingUnbonding):
        p.escrow.withdraw_stake()
    res = p.escrow.request_unstake(150 * TOKEN)
    (ev,) = res.named("UnstakeRequested")
    info = net.escrow.stake_of(p.address)
    assert (info.active, info.unbonding, info.unlock_at) == (
        50 * TOKEN,
        150 * TOKEN,
        ev["unlockAt"],
    )
    assert ev["unlockAt"] == net.now() + net.params.unbonding_delay
    with pytest.raises(E.StakeLocked):
        p.escrow.withdraw_stake()
    net.warp(net.params.unbonding_delay)
    p.escrow.withdraw_stake()
    assert net.escrow.stake_of(p.address).unbonding == 0
    assert p.escrow.balance_of(p.address) == 250 * TOKEN
    with pytest.raises(E.InsufficientBalance):
        p.escrow.stake(251 * TOKEN)
    with pytest.raises(E.ZeroAmount):
        p.escrow.stake(0)


def test_stake_overflow_is_refused(net: Devnet) -> None:
    p = net.actor(deposit=2**96)
    with pytest.raises(E.SafeCastOverflowedUintDowncast):
        p.escrow.stake(2**96)


# ---------------------------------------------------------------- create
def test_create_locks_payment_and_uses_nonce(net: Devnet) -> None:
    provider, client = net.provider(), net.actor()
    offer = net.offer(provider, price=PRICE)
    new = net.new_job(offer, max_payment=MAXP)
    job, res = client.escrow.create_job(new)
    assert net.escrow.job_state(job) is JobState.MATCHED
    assert job.job_id == net.escrow.next_job_id() - 1 and job.lane == new.lane
    assert client.escrow.balance_of(client.address) == 1000 * TOKEN - MAXP
    assert net.escrow.nonce_used(provider.address, offer.nonce)
    assert job == Job(
        job.job_id,
        client.address,
        new.lane,
        provider.address,
        PRICE,
        MAXP,
        new.deadline,
        new.spec_hash,
    )
    assert [e.name for e in res.events] == ["JobCreated"]
    with pytest.raises(E.NonceUsed):
        client.escrow.create_job(net.new_job(offer, max_payment=MAXP))


def test_create_reverts(net: Devnet) -> None:
    provider, client, other = net.provider(), net.actor(), net.actor()
    unstaked = net.actor(deposit=0)
    # bad signature: signed by someone else / tampered / malformed
    forged = net.offer(other)
    bad = dataclasses.replace(
        net.new_job(forged),
        offer=dataclasses.replace(forged.signed_data(), provider=provider.address),
    )
    with pytest.raises(E.InvalidSignature):
        client.escrow.create_job(bad)
    good = net.new_job(net.offer(provider))
    tampered = dataclasses.replace(
        good, offer=dataclasses.replace(good.offer, price_per_gpu_second=1)
    )
    with pytest.raises(E.InvalidSignature):
        client.escrow.create_job(tampered)
    with pytest.raises(E.InvalidSignature):
        client.escrow.create_job(dataclasses.replace(good, offer_sig=good.offer_sig[:64]))
    # expired offer
    expired = net.new_job(net.offer(provider, expiry_in=5))
    net.warp(10)
    with pytest.raises(E.OfferExpired):
        client.escrow.create_job(expired)
    # offer bound to another client
    bound = net.new_job(net.offer(provider, client=other.address))
    with pytest.raises(E.WrongClient):
        client.escrow.create_job(bound)
    other.escrow.create_job(bound)  # the bound client may
    # insufficient stake
    with pytest.raises(E.InsufficientStake):
        client.escrow.create_job(net.new_job(net.offer(unstaked)))
    # insufficient balance
    with pytest.raises(E.InsufficientBalance):
        client.escrow.create_job(net.new_job(net.offer(provider), max_payment=1001 * TOKEN))
    # deadline not in the future, zero payment, absurd price
    with pytest.raises(E.InvalidDeadline):
        client.escrow.create_job(net.new_job(net.offer(provider), deadline_in=0))
    too_far = net.params.unbonding_delay - net.params.challenge_window + 5
    with pytest.raises(E.InvalidDeadline):  # stake could unbond before the window closes
        client.escrow.create_job(net.new_job(net.offer(provider), deadline_in=too_far))
    with pytest.raises(E.ZeroAmount):
        client.escrow.create_job(net.new_job(net.offer(provider), max_payment=0))
    with pytest.raises(E.PriceTooHigh):
        client.escrow.create_job(net.new_job(net.offer(provider, price=2**128)))


def test_cancelled_nonce_cannot_match(net: Devnet) -> None:
    provider, client = net.provider(), net.actor()
    offers = [net.offer(provider) for _ in range(3)]
    provider.escrow.cancel_nonces([offers[0].nonce, offers[2].nonce])
    assert net.escrow.nonce_used(provider.address, offers[0].nonce)
    assert not net.escrow.nonce_used(provider.address, offers[1].nonce)
    with pytest.raises(E.NonceUsed):
        client.escrow.create_job(net.new_job(offers[0]))
    client.escrow.create_job(net.new_job(offers[1]))
    with pytest.raises(E.NonceUsed):
        client.escrow.create_job(net.new_job(offers[2]))


# ---------------------------------------------------------------- submit
def test_submit_records_attestation(net: Devnet) -> None:
    provider, _client, job = _matched(net)
    att = net.attestation(provider, job, metered_millis=4321)
    submitted, res = provider.escrow.submit_result(net.result_args(job, att))
    (ev,) = res.named("ResultSubmitted")
    assert ev["outputHash"] == att.output_hash and ev["runtimeId"] == att.runtime_id
    assert ev["challengeEnd"] == net.now() + net.params.challenge_window
    assert submitted.metered_millis == 4321 and submitted.result_hash == att.digest()
    assert net.escrow.job_state(job) is JobState.SUBMITTED
    with pytest.raises(E.InvalidState) as info:  # double submit
        provider.escrow.submit_result(net.result_args(job, att))
    assert info.value.fields["current"] == JobState.SUBMITTED


def test_submit_reverts(net: Devnet) -> None:
    provider, client, job = _matched(net)
    att = net.attestation(provider, job)
    args = net.result_args(job, att)
    with pytest.raises(E.NotProvider):
        client.escrow.submit_result(args)
    with pytest.raises(E.InvalidSignature):  # metered time changed after signing
        provider.escrow.submit_result(dataclasses.replace(args, metered_millis=9999))
    other = net.actor()
    forged = net.attestation(other, job)
    with pytest.raises(E.InvalidSignature):
        provider.escrow.submit_result(dataclasses.replace(args, sig=forged.signature))
    with pytest.raises(E.JobMismatch):  # struct does not match the stored hash
        provider.escrow.submit_result(
            dataclasses.replace(args, job=dataclasses.replace(job, max_payment=1))
        )
    with pytest.raises(E.InvalidState) as info:  # unknown job (unused lane)
        provider.escrow.submit_result(
            dataclasses.replace(args, job=dataclasses.replace(job, lane=job.lane + 10**6))
        )
    assert info.value.fields["current"] == JobState.NONE
    net.warp(601)
    with pytest.raises(E.DeadlinePassed):  # late submit
        provider.escrow.submit_result(args)


def test_mined_revert_is_decoded_by_replay(net: Devnet) -> None:
    """With an explicit gas limit nothing is estimated: the tx is mined with status 0."""
    provider, client, job = _matched(net)
    att = net.attestation(provider, job)
    with pytest.raises(E.NotProvider):
        client.escrow.submit_result(net.result_args(job, att), gas=200_000)


# ---------------------------------------------------------------- settle
@pytest.mark.parametrize("millis", [0, 1, 1500, 999_999, 2**64 - 1])
def test_accept_pays_exactly_protocol_pricing(net: Devnet, millis: int) -> None:
    provider, client, job = _submitted(net, millis)
    before = client.escrow.balance_of(client.address)
    res = client.escrow.accept_result(job)
    expected = settle(PRICE, millis, MAXP)
    assert res.named("JobFinalized") == [
        {"jobId": job.job_id, "payment": expected.payment, "refund": expected.refund}
    ]
    assert net.escrow.balance_of(provider.address) == expected.payment
    assert net.escrow.balance_of(client.address) == before + expected.refund
    assert net.escrow.job_state(job) is JobState.FINALIZED


def test_accept_and_finalize_reverts(net: Devnet) -> None:
    provider, client, job = _submitted(net)
    with pytest.raises(E.NotClient):
        provider.escrow.accept_result(job)
    with pytest.raises(E.ChallengeWindowOpen):
        provider.escrow.finalize(job)
    net.warp(net.params.challenge_window + 1)
    res = provider.escrow.finalize(job)
    assert res.named("JobFinalized")[0]["payment"] == settle(PRICE, 1500, MAXP).payment
    with pytest.raises(E.InvalidState):
        client.escrow.accept_result(job)


def test_refund_after_deadline_with_penalty(net: Devnet) -> None:
    provider, client, job = _matched(net)
    with pytest.raises(E.DeadlineNotPassed):
        client.escrow.refund(job)
    net.warp(601)
    before = client.escrow.balance_of(client.address)
    res = net.actor().escrow.refund(job)  # anyone
    penalty = net.params.refund_penalty
    assert res.named("JobRefunded") == [{"jobId": job.job_id, "refund": MAXP, "penalty": penalty}]
    assert client.escrow.balance_of(client.address) == before + MAXP + penalty
    assert net.escrow.stake_of(provider.address).active == net.params.min_stake - penalty
    assert net.escrow.job_state(job) is JobState.REFUNDED


# ---------------------------------------------------------------- disputes
def test_challenge_and_resolve_provider_wrong(net: Devnet) -> None:
    _provider, client, job = _submitted(net)
    verifier = net.actor(deposit=20 * TOKEN)
    disputed, res = verifier.escrow.challenge(job)
    assert res.named("JobChallenged")[0]["bond"] == net.params.challenge_bond
    assert disputed.challenger == verifier.address
    assert verifier.escrow.balance_of(verifier.address) == 10 * TOKEN
    with pytest.raises(E.NotResolver):
        verifier.escrow.resolve(disputed, True)
    client_before = client.escrow.balance_of(client.address)
    res = net.resolver.escrow.resolve(disputed, True)
    slash = net.params.slash_amount
    assert res.named("JobSlashed") == [
        {"jobId": job.job_id, "rewarded": "0x" + verifier.address.hex(), "slashed": slash}
    ]
    assert client.escrow.balance_of(client.address) == client_before + MAXP
    assert verifier.escrow.balance_of(verifier.address) == 20 * TOKEN + slash
    assert net.escrow.job_state(job) is JobState.SLASHED


def test_resolve_provider_right_forfeits_bond(net: Devnet) -> None:
    provider, _client, job = _submitted(net)
    verifier = net.actor(deposit=10 * TOKEN)
    disputed, _ = verifier.escrow.challenge(job)
    res = net.resolver.escrow.resolve(disputed, False)
    expected = settle(PRICE, 1500, MAXP)
    assert res.named("JobFinalized")[0]["payment"] == expected.payment
    assert net.escrow.balance_of(provider.address) == expected.payment + net.params.challenge_bond
    assert verifier.escrow.balance_of(verifier.address) == 0
    assert net.escrow.job_state(job) is JobState.FINALIZED


def test_challenge_reverts(net: Devnet) -> None:
    _provider, _client, job = _submitted(net)
    poor = net.actor(deposit=TOKEN)
    with pytest.raises(E.InsufficientBalance):
        poor.escrow.challenge(job)
    net.warp(net.params.challenge_window + 1)
    with pytest.raises(E.ChallengeWindowClosed):  # late challenge
        net.actor().escrow.challenge(job)


def _equivocation(
    net: Devnet, provider: Actor, job: Job
) -> tuple[tuple[eip712.AttestationData, bytes], tuple[eip712.AttestationData, bytes]]:
    a1 = net.attestation(provider, job, output=b"one")
    a2 = net.attestation(provider, job, output=b"two")
    return (a1.signed_data(), a1.signature), (a2.signed_data(), a2.signature)


@pytest.mark.parametrize("disputed", [False, True])
def test_prove_equivocation(net: Devnet, disputed: bool) -> None:
    provider, client, job = _submitted(net)
    verifier = net.actor(deposit=10 * TOKEN)
    if disputed:
        job, _ = verifier.escrow.challenge(job)
    prover = net.actor(deposit=0)
    first, second = _equivocation(net, provider, job)
    client_before = client.escrow.balance_of(client.address)
    res = prover.escrow.prove_equivocation(job, first, second)
    slash = net.params.slash_amount
    finder = verifier if disputed else prover
    assert res.named("JobSlashed") == [
        {"jobId": job.job_id, "rewarded": "0x" + finder.address.hex(), "slashed": slash}
    ]
    # client: full refund + half the slash; finder: the other half (+ bond back if disputed)
    assert client.escrow.balance_of(client.address) == client_before + MAXP + slash - slash // 2
    assert verifier.escrow.balance_of(verifier.address) == 10 * TOKEN + (
        slash // 2 if disputed else 0
    )
    assert prover.escrow.balance_of(prover.address) == (0 if disputed else slash // 2)
    assert net.escrow.stake_of(provider.address).active == net.params.min_stake - slash
    assert net.escrow.job_state(job) is JobState.SLASHED


def test_self_reported_equivocation_still_costs_the_provider(net: Devnet) -> None:
    provider, _client, job = _submitted(net)
    first, second = _equivocation(net, provider, job)
    provider.escrow.prove_equivocation(job, first, second)
    slash = net.params.slash_amount
    assert net.escrow.balance_of(provider.address) == slash // 2  # it gets only half back
    assert net.escrow.stake_of(provider.address).active == net.params.min_stake - slash


def test_prove_equivocation_reverts(net: Devnet) -> None:
    provider, client, job = _submitted(net)
    first, second = _equivocation(net, provider, job)
    with pytest.raises(E.NotEquivocation):
        client.escrow.prove_equivocation(job, first, first)
    other_job = dataclasses.replace(second[0], job_id=job.job_id + 1)
    with pytest.raises(E.AttestationMismatch):
        client.escrow.prove_equivocation(job, first, (other_job, second[1]))
    with pytest.raises(E.InvalidSignature):
        client.escrow.prove_equivocation(job, first, (second[0], first[1]))


def test_slash_takes_unbonding_stake_when_active_is_short(net: Devnet) -> None:
    provider, client, job = _submitted(net)
    provider.escrow.request_unstake(80 * TOKEN)  # active 20, unbonding 80
    first, second = _equivocation(net, provider, job)
    client.escrow.prove_equivocation(job, first, second)
    info = net.escrow.stake_of(provider.address)
    assert (info.active, info.unbonding) == (0, 50 * TOKEN)


# ---------------------------------------------------------------- batches
def test_batches(net: Devnet) -> None:
    provider, client = net.provider(), net.actor()
    news = [net.new_job(net.offer(provider), max_payment=MAXP, spec=bytes([i])) for i in range(5)]
    created, res = client.escrow.create_jobs(news)
    assert len(created) == 5 and len(res.named("JobCreated")) == 5
    assert client.escrow.balance_of(client.address) == 1000 * TOKEN - 5 * MAXP
    results: list[ResultArgs] = []
    assert [j.job_id for j in created] == list(range(created[0].job_id, created[0].job_id + 5))
    for k, job in enumerate(created):
        att = net.attestation(provider, job, metered_millis=1000 * (k + 1))
        results.append(net.result_args(job, att))
    submitted, _ = provider.escrow.submit_results(results)
    with pytest.raises(E.ChallengeWindowOpen):  # a stranger must wait for the window
        provider.escrow.finalize_many(submitted)
    client.escrow.finalize_many(submitted)  # the client accepts all at once
    paid = sum(settle(PRICE, 1000 * (k + 1), MAXP).payment for k in range(5))
    assert net.escrow.balance_of(provider.address) == paid
    assert client.escrow.balance_of(client.address) == 1000 * TOKEN - paid
    assert all(net.escrow.job_state(j) is JobState.FINALIZED for j in submitted)
    with pytest.raises(E.EmptyBatch):
        client.escrow.finalize_many([])
    with pytest.raises(E.EmptyBatch):
        client.escrow.create_jobs([])
    with pytest.raises(E.EmptyBatch):
        provider.escrow.submit_results([])


def test_batch_is_atomic(net: Devnet) -> None:
    provider, client = net.provider(), net.actor()
    offer = net.offer(provider)
    with pytest.raises(E.NonceUsed):
        client.escrow.create_jobs([net.new_job(offer), net.new_job(offer, spec=b"x")])
    assert not net.escrow.nonce_used(provider.address, offer.nonce)


# ---------------------------------------------------------------- governance
def test_set_resolver(net: Devnet) -> None:
    stranger = net.actor(deposit=0)
    with pytest.raises(E.OwnableUnauthorizedAccount):
        stranger.escrow.set_resolver(stranger.address)
    with pytest.raises(E.ZeroAddress):
        net.escrow.set_resolver(bytes(20))
    net.escrow.set_resolver(stranger.address)
    _provider, _client, job = _submitted(net)
    disputed, _ = net.actor().escrow.challenge(job)
    with pytest.raises(E.NotResolver):
        net.resolver.escrow.resolve(disputed, True)
    stranger.escrow.resolve(disputed, True)


def test_spec_hash_is_bound(net: Devnet) -> None:
    provider, _client, job = _matched(net)
    att = net.attestation(
        provider, dataclasses.replace(job, spec_hash=hashlib.sha256(b"x").digest())
    )
    with pytest.raises(E.InvalidSignature):
        provider.escrow.submit_result(net.result_args(job, att))


def test_lane_reuse_after_terminal(net: Devnet) -> None:
    provider, client = net.provider(), net.actor()
    job = net.create(client, provider, lane=7)
    with pytest.raises(E.LaneBusy) as info:
        client.escrow.create_job(net.new_job(net.offer(provider), lane=7))
    assert info.value.fields["current"] == JobState.MATCHED
    job = net.submit(provider, job)
    with pytest.raises(E.LaneBusy):
        client.escrow.create_job(net.new_job(net.offer(provider), lane=7))
    client.escrow.accept_result(job)
    assert net.escrow.lane_slot(client.address, 7) == bytes(31) + bytes([JobState.FINALIZED])
    reused, _res = client.escrow.create_job(net.new_job(net.offer(provider), lane=7))
    assert reused.job_id == job.job_id + 1 and net.escrow.job_state(reused) is JobState.MATCHED
    with pytest.raises(E.InvalidState):  # the old job is gone from the lane
        client.escrow.accept_result(job)
    # another client's lane 7 is independent
    other = net.actor()
    other.escrow.create_job(net.new_job(net.offer(provider), lane=7))


def test_equivocation_against_recorded_batch_result(net: Devnet) -> None:
    """A batch submit carries no signature; the recorded result itself is one side."""
    provider, client = net.provider(), net.actor()
    job = net.create(client, provider)
    att = net.attestation(provider, job, output=b"recorded")
    (submitted,), _ = provider.escrow.submit_results([net.result_args(job, att)])
    assert submitted.result_hash == att.digest()
    other = net.attestation(provider, job, output=b"what the client was sent")
    with pytest.raises(E.InvalidSignature):  # an unsigned non-recorded attestation is no proof
        client.escrow.prove_equivocation(
            submitted, (other.signed_data(), b""), (att.signed_data(), att.signature)
        )
    client.escrow.prove_equivocation(
        submitted, (att.signed_data(), b""), (other.signed_data(), other.signature)
    )
    assert net.escrow.job_state(submitted) is JobState.SLASHED


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"token": bytes(20)}, E.ZeroAddress),
        ({"resolver": bytes(20)}, E.ZeroAddress),
        ({"challenge_bond": 0}, E.ZeroAmount),
        ({"unbonding_delay": 100, "challenge_window": 100}, E.InvalidDeadline),
    ],
)
def test_constructor_rejects_bad_parameters(net: Devnet, change: dict, error: type) -> None:  # type: ignore[type-arg]
    from eth_abi.abi import encode

    from node.chain.artifacts import load_artifact
    from node.chain.escrow import Escrow
    from node.chain.rpc import revert_data

    p = {
        "token": net.token.address,
        "resolver": net.resolver.address,
        "min_stake": 1,
        "unbonding_delay": 1000,
        "challenge_window": 100,
        "challenge_bond": 1,
        "slash_amount": 1,
        "refund_penalty": 1,
    } | change
    args = [
        "0x" + p["token"].hex(),
        "0x" + p["resolver"].hex(),
        p["min_stake"],
        p["unbonding_delay"],
        p["challenge_window"],
        p["challenge_bond"],
        p["slash_amount"],
        p["refund_penalty"],
    ]
    data = load_artifact("GpunetEscrow").bytecode + encode(
        list(Escrow.abi.constructor_inputs), args
    )
    with pytest.raises(E.RpcError) as info:
        net.rpc.request(
            "eth_call",
            [{"from": "0x" + net.resolver.address.hex(), "data": "0x" + data.hex()}, "latest"],
        )
    raw = revert_data(info.value)
    assert raw is not None
    assert isinstance(E.decode_revert(raw, Escrow.abi.errors), error)
