"""The contract's EIP-712 digests, job hashing and job ids equal the Python ones."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.chain.devnet import Devnet
from node.chain.jobs import Job, job_slot
from protocol import eip712
from protocol.lifecycle import JobState

u64 = st.integers(0, 2**64 - 1)
b32 = st.binary(min_size=32, max_size=32)
addr = st.binary(min_size=20, max_size=20)
fast = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_domain_separator(net: Devnet) -> None:
    assert net.escrow.domain_separator() == net.escrow.domain.separator


offers = st.builds(eip712.OfferData, addr, addr, b32, st.integers(0, 2**256 - 1), u64, u64)
attestations = st.builds(eip712.AttestationData, u64, addr, b32, b32, b32, st.integers(0, 255), u64)
jobs = st.builds(
    Job,
    u64,
    addr,
    u64,
    addr,
    st.integers(0, 2**128 - 1),
    st.integers(0, 2**128 - 1),
    u64,
    b32,
    u64,
    u64,
    b32,
    addr,
)


@fast
@given(offers)
def test_offer_digest(net: Devnet, offer: eip712.OfferData) -> None:
    assert net.escrow.offer_digest(offer) == eip712.offer_digest(net.escrow.domain, offer)


@fast
@given(attestations)
def test_attestation_digest(net: Devnet, att: eip712.AttestationData) -> None:
    assert net.escrow.attestation_digest(att) == eip712.attestation_digest(net.escrow.domain, att)


def test_signed_messages_match_contract(net: Devnet) -> None:
    """protocol.messages.Offer/Attestation.create sign exactly what the contract checks."""
    provider, client = net.provider(), net.actor()
    offer = net.offer(provider)
    digest = net.escrow.offer_digest(offer.signed_data())
    assert digest == offer.digest()
    job, _ = client.escrow.create_job(net.new_job(offer))
    assert net.escrow.lane_slot(client.address, job.lane) == job_slot(job, JobState.MATCHED)
    att = net.attestation(provider, job)
    assert net.escrow.attestation_digest(att.signed_data()) == att.digest()
    submitted, _ = provider.escrow.submit_result(net.result_args(job, att))
    assert submitted.result_hash == att.digest()
    slot = net.escrow.lane_slot(client.address, job.lane)
    assert slot == job_slot(submitted, JobState.SUBMITTED)


@fast
@given(jobs)
def test_job_hash(net: Devnet, job: Job) -> None:
    for state in (JobState.MATCHED, JobState.SLASHED):
        assert net.escrow.hash_job(job, state) == job_slot(job, state)
