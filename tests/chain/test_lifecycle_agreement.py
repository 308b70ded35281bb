"""The contract and protocol/lifecycle.py agree on every (state, event) pair.

For each state, a job is driven into it on anvil and snapshotted; then each event
is tried from that snapshot with every other precondition satisfied (right
caller, right time, valid signatures). The call must succeed exactly when
TRANSITIONS allows the pair, leave the job in the table's next state, and
otherwise revert with ``InvalidState`` naming the current state.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from node.chain import errors as E
from node.chain.devnet import TOKEN, Actor, Devnet
from node.chain.escrow import NewJob
from node.chain.jobs import Job
from protocol.lifecycle import TRANSITIONS, JobEvent, JobState

SOURCE = Path(__file__).resolve().parents[2] / "contracts" / "src" / "IGpunetEscrow.sol"


def test_solidity_enum_mirrors_python() -> None:
    match = re.search(r"enum JobState \{([^}]*)\}", SOURCE.read_text())
    assert match is not None
    names = [n.strip() for n in match.group(1).split(",") if n.strip()]
    assert [n.upper() for n in names] == [s.name for s in JobState]
    assert [s.value for s in JobState] == list(range(len(names)))


class Case:
    """One job driven into a state, and the calls that apply each event to it."""

    def __init__(self, net: Devnet, provider: Actor, client: Actor, verifier: Actor) -> None:
        self.net, self.provider, self.client, self.verifier = net, provider, client, verifier
        self.offer_new: NewJob = net.new_job(net.offer(provider), max_payment=10 * TOKEN)
        self.job = Job(  # the struct the job would have: an unused lane is in state NONE
            net.escrow.next_job_id(),
            client.address,
            self.offer_new.lane,
            provider.address,
            1,
            10 * TOKEN,
            net.now() + 600,
            bytes(32),
        )

    # ---------------------------------------------------------------- drive
    def drive(self, state: JobState) -> None:
        net = self.net
        if state is JobState.NONE:
            return
        self.job, _ = self.client.escrow.create_job(self.offer_new)
        if state is JobState.MATCHED:
            return
        if state is JobState.REFUNDED:
            net.warp(601)
            self.client.escrow.refund(self.job)
            return
        self.job = net.submit(self.provider, self.job)
        if state is JobState.FINALIZED:
            self.client.escrow.accept_result(self.job)
        elif state is JobState.DISPUTED:
            self.job, _ = self.verifier.escrow.challenge(self.job)
        elif state is JobState.SLASHED:
            self._equivocate()

    # ---------------------------------------------------------------- events
    def _equivocate(self) -> None:
        a1 = self.net.attestation(self.provider, self.job, output=b"a")
        a2 = self.net.attestation(self.provider, self.job, output=b"b")
        self.verifier.escrow.prove_equivocation(
            self.job, (a1.signed_data(), a1.signature), (a2.signed_data(), a2.signature)
        )

    def apply(self, event: JobEvent) -> None:
        """Perform ``event`` on the job (for CREATE: create it again from its offer)."""
        net, job = self.net, self.job
        actions: dict[JobEvent, Callable[[], object]] = {
            JobEvent.CREATE: lambda: self.client.escrow.create_job(self.offer_new),
            JobEvent.SUBMIT: lambda: net.submit(self.provider, job),
            JobEvent.REFUND: lambda: (net.warp(601), self.client.escrow.refund(job)),
            JobEvent.ACCEPT: lambda: self.client.escrow.accept_result(job),
            JobEvent.FINALIZE: lambda: (
                net.warp(net.params.challenge_window + 1),
                self.client.escrow.finalize(job),
            ),
            JobEvent.CHALLENGE: lambda: self.verifier.escrow.challenge(job),
            JobEvent.RESOLVE_PROVIDER_WRONG: lambda: net.resolver.escrow.resolve(job, True),
            JobEvent.RESOLVE_PROVIDER_RIGHT: lambda: net.resolver.escrow.resolve(job, False),
            JobEvent.PROVE_EQUIVOCATION: self._equivocate,
        }
        actions[event]()


@pytest.mark.parametrize("state", list(JobState), ids=lambda s: s.name)
def test_contract_agrees_with_transition_table(net: Devnet, state: JobState) -> None:
    provider, client = net.provider(), net.actor()
    verifier = net.actor(deposit=100 * TOKEN)
    case = Case(net, provider, client, verifier)
    case.drive(state)
    assert net.escrow.job_state(case.job) is state
    snap = net.snapshot()
    outcomes = {}
    for event in JobEvent:
        expected = TRANSITIONS.get((state, event))
        try:
            case.apply(event)
        except E.InvalidState as exc:
            outcomes[event] = None
            assert exc.fields["current"] == state, (state, event)
        except (E.NonceUsed, E.InvalidDeadline):
            # CREATE again on an existing job: its offer's nonce is spent (or, after the
            # warp to REFUNDED, its deadline too), so the same job can never be re-matched
            assert event is JobEvent.CREATE and state is not JobState.NONE
            outcomes[event] = None
        else:
            outcomes[event] = net.escrow.job_state(case.job)
        assert outcomes[event] == expected, f"{state.name} x {event.name}"
        net.revert(snap)
        snap = net.snapshot()
