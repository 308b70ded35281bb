"""Hypothesis stateful test: random call sequences on anvil never create or lose money.

After every step:
    token.balanceOf(escrow) == sum(free balances) + sum(stakes, active + unbonding)
                               + sum(maxPayment of live jobs) + sum(bonds of disputed jobs)
and every job's lane state equals the model's. Calls that revert (a deadline passed,
a balance is short …) are part of the game: they must leave the sums unchanged.
Each example runs between ``evm_snapshot`` and ``evm_revert`` on the shared deployment.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from node.chain import errors as E
from node.chain.devnet import TOKEN, Actor, Devnet
from node.chain.jobs import Job
from protocol.lifecycle import JobState

LIVE = (JobState.MATCHED, JobState.SUBMITTED, JobState.DISPUTED)


def test_money_is_conserved(net: Devnet) -> None:
    providers = [net.actor(deposit=50 * TOKEN, stake=120 * TOKEN) for _ in range(2)]
    clients = [net.actor(deposit=200 * TOKEN) for _ in range(2)]
    verifier = net.actor(deposit=100 * TOKEN)
    everyone = [*providers, *clients, verifier, net.resolver]
    bond = net.params.challenge_bond

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.snap = net.snapshot()
            self.jobs: list[tuple[Job, JobState]] = []

        def teardown(self) -> None:
            net.revert(self.snap)

        # ------------------------------------------------------------ helpers
        def _pick(self, states: tuple[JobState, ...], k: int) -> int | None:
            idx = [i for i, (_, s) in enumerate(self.jobs) if s in states]
            return idx[k % len(idx)] if idx else None

        def _set(self, i: int, job: Job, state: JobState) -> None:
            self.jobs[i] = (job, state)

        # ------------------------------------------------------------ rules
        @rule(
            c=st.integers(0, 1), p=st.integers(0, 1), pay=st.integers(1, 80), dl=st.integers(5, 300)
        )
        def create(self, c: int, p: int, pay: int, dl: int) -> None:
            client, provider = clients[c], providers[p]
            try:
                job = net.create(client, provider, max_payment=pay * TOKEN, deadline_in=dl)
            except (E.InsufficientBalance, E.InsufficientStake):
                return
            self.jobs.append((job, JobState.MATCHED))

        @rule(c=st.integers(0, 1), p=st.integers(0, 1), n=st.integers(1, 4))
        def create_batch(self, c: int, p: int, n: int) -> None:
            news = [
                net.new_job(net.offer(providers[p]), max_payment=(k + 1) * TOKEN, spec=bytes([k]))
                for k in range(n)
            ]
            try:
                created, _ = clients[c].escrow.create_jobs(news)
            except (E.InsufficientBalance, E.InsufficientStake):
                return
            self.jobs += [(job, JobState.MATCHED) for job in created]

        @precondition(lambda self: any(s is JobState.MATCHED for _, s in self.jobs))
        @rule(p=st.integers(0, 1), millis=st.integers(0, 10**6))
        def submit_batch(self, p: int, millis: int) -> None:
            provider = providers[p]
            idx = [
                i
                for i, (j, s) in enumerate(self.jobs)
                if s is JobState.MATCHED and j.provider == provider.address
            ]
            if not idx:
                return
            results = [
                net.result_args(
                    self.jobs[i][0],
                    net.attestation(provider, self.jobs[i][0], metered_millis=millis),
                )
                for i in idx
            ]
            try:
                submitted, _ = provider.escrow.submit_results(results)
            except E.DeadlinePassed:
                return
            for i, job in zip(idx, submitted, strict=True):
                self._set(i, job, JobState.SUBMITTED)

        @precondition(lambda self: any(s is JobState.SUBMITTED for _, s in self.jobs))
        @rule(c=st.integers(0, 1))
        def settle_batch(self, c: int) -> None:
            """The client settles all its submitted jobs at once (acceptance)."""
            client = clients[c]
            idx = [
                i
                for i, (j, s) in enumerate(self.jobs)
                if s is JobState.SUBMITTED and j.client == client.address
            ]
            if not idx:
                return
            client.escrow.finalize_many([self.jobs[i][0] for i in idx])
            for i in idx:
                self._set(i, self.jobs[i][0], JobState.FINALIZED)

        @precondition(lambda self: any(s is JobState.MATCHED for _, s in self.jobs))
        @rule(k=st.integers(0, 50), millis=st.integers(0, 10**7))
        def submit(self, k: int, millis: int) -> None:
            i = self._pick((JobState.MATCHED,), k)
            assert i is not None
            job = self.jobs[i][0]
            provider = next(a for a in providers if a.address == job.provider)
            with contextlib.suppress(E.DeadlinePassed):
                self._set(i, net.submit(provider, job, metered_millis=millis), JobState.SUBMITTED)

        @precondition(lambda self: any(s is JobState.SUBMITTED for _, s in self.jobs))
        @rule(k=st.integers(0, 50))
        def accept(self, k: int) -> None:
            i = self._pick((JobState.SUBMITTED,), k)
            assert i is not None
            job = self.jobs[i][0]
            client = next(a for a in clients if a.address == job.client)
            client.escrow.accept_result(job)
            self._set(i, job, JobState.FINALIZED)

        @precondition(lambda self: any(s is JobState.SUBMITTED for _, s in self.jobs))
        @rule(k=st.integers(0, 50))
        def finalize(self, k: int) -> None:
            i = self._pick((JobState.SUBMITTED,), k)
            assert i is not None
            job = self.jobs[i][0]
            try:
                verifier.escrow.finalize(job)
                self._set(i, job, JobState.FINALIZED)
            except E.ChallengeWindowOpen:
                pass

        @precondition(lambda self: any(s is JobState.MATCHED for _, s in self.jobs))
        @rule(k=st.integers(0, 50))
        def refund(self, k: int) -> None:
            i = self._pick((JobState.MATCHED,), k)
            assert i is not None
            job = self.jobs[i][0]
            try:
                verifier.escrow.refund(job)
                self._set(i, job, JobState.REFUNDED)
            except E.DeadlineNotPassed:
                pass

        @precondition(lambda self: any(s is JobState.SUBMITTED for _, s in self.jobs))
        @rule(k=st.integers(0, 50))
        def challenge(self, k: int) -> None:
            i = self._pick((JobState.SUBMITTED,), k)
            assert i is not None
            try:
                disputed, _ = verifier.escrow.challenge(self.jobs[i][0])
                self._set(i, disputed, JobState.DISPUTED)
            except (E.ChallengeWindowClosed, E.InsufficientBalance):
                pass

        @precondition(lambda self: any(s is JobState.DISPUTED for _, s in self.jobs))
        @rule(k=st.integers(0, 50), fault=st.booleans())
        def resolve(self, k: int, fault: bool) -> None:
            i = self._pick((JobState.DISPUTED,), k)
            assert i is not None
            job = self.jobs[i][0]
            net.resolver.escrow.resolve(job, fault)
            self._set(i, job, JobState.SLASHED if fault else JobState.FINALIZED)

        @precondition(
            lambda self: any(s in (JobState.SUBMITTED, JobState.DISPUTED) for _, s in self.jobs)
        )
        @rule(k=st.integers(0, 50))
        def equivocate(self, k: int) -> None:
            i = self._pick((JobState.SUBMITTED, JobState.DISPUTED), k)
            assert i is not None
            job = self.jobs[i][0]
            provider = next(a for a in providers if a.address == job.provider)
            a1 = net.attestation(provider, job, output=b"1")
            a2 = net.attestation(provider, job, output=b"2")
            clients[0].escrow.prove_equivocation(
                job, (a1.signed_data(), a1.signature), (a2.signed_data(), a2.signature)
            )
            self._set(i, job, JobState.SLASHED)

        @rule(who=st.integers(0, 4), amount=st.integers(1, 60))
        def withdraw(self, who: int, amount: int) -> None:
            with contextlib.suppress(E.InsufficientBalance):
                everyone[who].escrow.withdraw(amount * TOKEN)

        @rule(p=st.integers(0, 1), amount=st.integers(1, 60), unstake=st.booleans())
        def stake_moves(self, p: int, amount: int, unstake: bool) -> None:
            a: Actor = providers[p]
            try:
                if unstake:
                    a.escrow.request_unstake(amount * TOKEN)
                else:
                    a.escrow.stake(amount * TOKEN)
            except (E.InsufficientBalance, E.InsufficientStake):
                pass

        @rule(p=st.integers(0, 1))
        def withdraw_stake(self, p: int) -> None:
            with contextlib.suppress(E.NothingUnbonding, E.StakeLocked):
                providers[p].escrow.withdraw_stake()

        @rule(seconds=st.sampled_from([1, 30, 101, 301, 1001]))
        def warp(self, seconds: int) -> None:
            net.warp(seconds)

        # ------------------------------------------------------------ invariants
        @invariant()
        def conserved(self) -> None:
            held = net.token_balance_of_escrow()
            free = sum(net.escrow.balance_of(a.address) for a in everyone)
            staked = 0
            for a in providers:
                info = net.escrow.stake_of(a.address)
                staked += info.active + info.unbonding
            locked = sum(j.max_payment for j, s in self.jobs if s in LIVE)
            bonds = bond * sum(1 for _, s in self.jobs if s is JobState.DISPUTED)
            assert held == free + staked + locked + bonds

        @invariant()
        def states_match(self) -> None:
            for job, state in self.jobs:
                assert net.escrow.job_state(job) is state

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=20,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
