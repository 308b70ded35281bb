"""Typed wrapper of the GpunetEscrow contract: one method per function.

Transactions are encoded with cached selectors and ``eth_abi``; gas is
estimated (which also surfaces reverts as typed exceptions before anything is
sent) unless the caller passes ``gas=``. A transaction mined with status 0 is
replayed with ``eth_call`` on its parent block to recover the custom error.
Methods that move a job return the job's new :class:`~node.chain.jobs.Job`,
rebuilt from the events, ready to pass to the next call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from node.chain.abi import Abi
from node.chain.artifacts import load_artifact
from node.chain.contract import BoundContract, EventRecord, TxResult
from node.chain.jobs import Job
from node.chain.rpc import Rpc, Signer
from protocol import eip712
from protocol.lifecycle import JobState

__all__ = [
    "GAS_ACCEPT_RESULT",
    "GAS_CREATE_JOB",
    "GAS_SUBMIT_RESULT",
    "Escrow",
    "EventRecord",
    "NewJob",
    "ResultArgs",
    "StakeInfo",
    "TxResult",
    "gas_create_jobs",
    "gas_finalize_many",
    "gas_submit_results",
]

# Gas limits for the calls on a job's hot path, so they skip ``eth_estimateGas`` (a
# round trip and a full execution on the node: ~4 ms of a ~12 ms transaction, see
# docs/benchmarks.md "Chain client"). Each is the measured ``gasUsed`` of the dearest
# case plus at least 50 %: a never-used lane, a fresh nonce word, and balances that go
# from zero to non-zero (a provider's first credit; a client whose whole deposit was
# locked gets its refund into an empty slot). Measured on anvil: createJob 87,931,
# submitResult 43,143, acceptResult 77,996; a batch of 4 such jobs: createJobs 201,454,
# submitResults 87,575, finalizeMany 117,358. Only the gas used is paid; a call that
# would revert is mined with status 0 and its custom error recovered by replay.
GAS_CREATE_JOB = 140_000
GAS_SUBMIT_RESULT = 70_000
GAS_ACCEPT_RESULT = 120_000


def gas_create_jobs(n: int) -> int:
    """Limit for ``createJobs`` of ``n`` (~50k a job in the dearest case)."""
    return 60_000 + 80_000 * n


def gas_submit_results(n: int) -> int:
    """Limit for ``submitResults`` of ``n`` (~22k a job, 38k for one)."""
    return 50_000 + 35_000 * n


def gas_finalize_many(n: int) -> int:
    """Limit for ``finalizeMany`` of ``n`` (117,358 for 4 jobs of one client; each job
    whose client slot is empty adds a fresh-slot write, ~17k measured on createJob)."""
    return 60_000 + 50_000 * n


@dataclasses.dataclass(frozen=True, slots=True)
class StakeInfo:
    """A provider's stake."""

    active: int
    unbonding: int
    unlock_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class NewJob:
    """Arguments of one createJob (also the batch item)."""

    offer: eip712.OfferData
    offer_sig: bytes
    spec_hash: bytes
    max_payment: int
    deadline: int
    lane: int


@dataclasses.dataclass(frozen=True, slots=True)
class ResultArgs:
    """Arguments of one submitResult (the batch form ignores ``sig``)."""

    job: Job
    output_hash: bytes
    runtime_id: bytes
    determinism: int
    metered_millis: int
    sig: bytes = b""


def _offer_tuple(o: eip712.OfferData) -> tuple[Any, ...]:
    return (
        "0x" + o.provider.hex(),
        "0x" + o.client.hex(),
        o.capabilities_hash,
        o.price_per_gpu_second,
        o.nonce,
        o.expiry,
    )


def _attestation_tuple(a: eip712.AttestationData) -> tuple[Any, ...]:
    return (
        a.job_id,
        "0x" + a.provider.hex(),
        a.spec_hash,
        a.output_hash,
        a.runtime_id,
        a.determinism,
        a.metered_millis,
    )


def _addr(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


class Escrow(BoundContract):
    """A deployed GpunetEscrow, optionally with a signer for transactions."""

    abi = Abi(load_artifact("GpunetEscrow").abi)
    _revert_errors: ClassVar[dict[bytes, Any]] = {
        **abi.errors,
        **Abi(load_artifact("TestToken").abi).errors,
    }

    def __init__(self, rpc: Rpc, address: bytes, signer: Signer | None = None) -> None:
        super().__init__(rpc, address, signer)
        self._domain: eip712.Domain | None = None

    def with_signer(self, signer: Signer) -> Escrow:
        """The same contract driven by another account."""
        return Escrow(self.rpc, self.address, signer)

    @property
    def domain(self) -> eip712.Domain:
        """EIP-712 domain of this deployment."""
        if self._domain is None:
            self._domain = eip712.Domain(self.rpc.chain_id(), self.address)
        return self._domain

    # ------------------------------------------------------------ views
    def lane_state(self, client: bytes, lane: int) -> JobState:
        """State of the job in a client's lane (NONE if never used)."""
        (state,) = self._call("laneState", "0x" + client.hex(), lane)
        return JobState(state)

    def job_state(self, job: Job) -> JobState:
        """State of ``job``'s lane (the job's state unless the lane was reused since)."""
        return self.lane_state(job.client, job.lane)

    def lane_slot(self, client: bytes, lane: int) -> bytes:
        """The stored slot (struct hash with the state in the low byte)."""
        (slot,) = self._call("laneSlot", "0x" + client.hex(), lane)
        return bytes(slot)

    def next_job_id(self) -> int:
        """Id the next created job gets."""
        (n,) = self._call("nextJobId")
        return int(n)

    def balance_of(self, account: bytes) -> int:
        """Free (withdrawable) balance."""
        (bal,) = self._call("balanceOf", "0x" + account.hex())
        return int(bal)

    def stake_of(self, provider: bytes) -> StakeInfo:
        """A provider's stake."""
        active, unbonding, unlock_at = self._call("stakeOf", "0x" + provider.hex())
        return StakeInfo(active, unbonding, unlock_at)

    def nonce_used(self, provider: bytes, nonce: int) -> bool:
        """Whether an offer nonce is used or cancelled."""
        (used,) = self._call("nonceUsed", "0x" + provider.hex(), nonce)
        return bool(used)

    def offer_digest(self, offer: eip712.OfferData) -> bytes:
        """The contract's EIP-712 digest of an offer."""
        (d,) = self._call("offerDigest", _offer_tuple(offer))
        return bytes(d)

    def attestation_digest(self, att: eip712.AttestationData) -> bytes:
        """The contract's EIP-712 digest of an attestation."""
        (d,) = self._call("attestationDigest", _attestation_tuple(att))
        return bytes(d)

    def domain_separator(self) -> bytes:
        """The contract's EIP-712 domain separator."""
        (d,) = self._call("domainSeparator")
        return bytes(d)

    def hash_job(self, job: Job, state: JobState) -> bytes:
        """The contract's slot value for ``job`` in ``state``."""
        (d,) = self._call("hashJob", job.as_tuple(), int(state))
        return bytes(d)

    def param(self, name: str) -> int:
        """An immutable parameter: minStake, challengeWindow, challengeBond, …"""
        (value,) = self._call(name)
        return int(value)

    def token_address(self) -> bytes:
        """The payment token."""
        (addr,) = self._call("token")
        return _addr(addr)

    # ------------------------------------------------------------ money
    def deposit(self, amount: int, *, gas: int | None = None) -> TxResult:
        """Deposit tokens (approve the escrow first)."""
        return self.transact("deposit", amount, gas=gas)

    def withdraw(self, amount: int, *, gas: int | None = None) -> TxResult:
        """Withdraw free balance."""
        return self.transact("withdraw", amount, gas=gas)

    def stake(self, amount: int, *, gas: int | None = None) -> TxResult:
        """Move free balance into active stake."""
        return self.transact("stake", amount, gas=gas)

    def request_unstake(self, amount: int, *, gas: int | None = None) -> TxResult:
        """Start unbonding."""
        return self.transact("requestUnstake", amount, gas=gas)

    def withdraw_stake(self, *, gas: int | None = None) -> TxResult:
        """Move unlocked unbonding stake to the free balance."""
        return self.transact("withdrawStake", gas=gas)

    def cancel_nonces(self, nonces: Sequence[int], *, gas: int | None = None) -> list[TxResult]:
        """Cancel offer nonces (one transaction per 256-nonce word)."""
        words: dict[int, int] = {}
        for n in nonces:
            if not 0 <= n < 2**64:
                raise ValueError(f"nonce {n} out of uint64 range")
            words[n >> 8] = words.get(n >> 8, 0) | (1 << (n & 0xFF))
        return [self.transact("cancelNonces", w, m, gas=gas) for w, m in sorted(words.items())]

    def resolver(self) -> bytes:
        """The dispute resolver (the VerifierCommittee once deployed)."""
        (addr,) = self._call("resolver")
        return _addr(addr)

    def set_resolver(self, resolver: bytes, *, gas: int | None = None) -> TxResult:
        """Owner: replace the resolver."""
        return self.transact("setResolver", "0x" + resolver.hex(), gas=gas)

    # ------------------------------------------------------------ jobs
    @staticmethod
    def _new_tuple(j: NewJob) -> tuple[Any, ...]:
        return (_offer_tuple(j.offer), j.offer_sig, j.spec_hash, j.max_payment, j.deadline, j.lane)

    def create_job(
        self,
        new: NewJob,
        *,
        gas: int | None = None,
        on_signed: Callable[[bytes], None] | None = None,
    ) -> tuple[Job, TxResult]:
        """Match a job; returns the job struct and the tx (``on_signed``: as in
        :meth:`~node.chain.contract.Contract.transact`)."""
        res = self.transact("createJob", *self._new_tuple(new), gas=gas, on_signed=on_signed)
        (created,) = res.named("JobCreated")
        return Job.from_created(created), res

    def create_jobs(
        self,
        jobs: Sequence[NewJob],
        *,
        gas: int | None = None,
        on_signed: Callable[[bytes], None] | None = None,
    ) -> tuple[list[Job], TxResult]:
        """Batch create; returns the jobs in input order and the tx."""
        res = self.transact(
            "createJobs", [self._new_tuple(j) for j in jobs], gas=gas, on_signed=on_signed
        )
        return [Job.from_created(c) for c in res.named("JobCreated")], res

    def _result_hash(self, r: ResultArgs) -> bytes:
        return eip712.attestation_digest(
            self.domain,
            eip712.AttestationData(
                job_id=r.job.job_id,
                provider=r.job.provider,
                spec_hash=r.job.spec_hash,
                output_hash=r.output_hash,
                runtime_id=r.runtime_id,
                determinism=r.determinism,
                metered_millis=r.metered_millis,
            ),
        )

    @staticmethod
    def _result_tuple(r: ResultArgs) -> tuple[Any, ...]:
        return (r.job.as_tuple(), r.output_hash, r.runtime_id, r.determinism, r.metered_millis)

    def submit_result(
        self,
        r: ResultArgs,
        *,
        gas: int | None = None,
        on_signed: Callable[[bytes], None] | None = None,
    ) -> tuple[Job, TxResult]:
        """Record a signed attestation; returns the submitted job (``on_signed``: as in
        :meth:`Contract.transact`)."""
        res = self.transact(
            "submitResult", *self._result_tuple(r), r.sig, gas=gas, on_signed=on_signed
        )
        (ev,) = res.named("ResultSubmitted")
        return r.job.after_submit(ev, self._result_hash(r)), res

    def submit_results(
        self,
        results: Sequence[ResultArgs],
        *,
        gas: int | None = None,
        on_signed: Callable[[bytes], None] | None = None,
    ) -> tuple[list[Job], TxResult]:
        """Batch submit (no signatures); returns the submitted jobs in input order."""
        res = self.transact(
            "submitResults",
            [self._result_tuple(r) for r in results],
            gas=gas,
            on_signed=on_signed,
        )
        evs = res.named("ResultSubmitted")
        return [
            r.job.after_submit(ev, self._result_hash(r)) for r, ev in zip(results, evs, strict=True)
        ], res

    def accept_result(self, job: Job, *, gas: int | None = None) -> TxResult:
        """Client accepts (Submitted -> Finalized)."""
        return self.transact("acceptResult", job.as_tuple(), gas=gas)

    def finalize(self, job: Job, *, gas: int | None = None) -> TxResult:
        """Finalize after the challenge window."""
        return self.transact("finalize", job.as_tuple(), gas=gas)

    def finalize_many(self, jobs: Sequence[Job], *, gas: int | None = None) -> TxResult:
        """Batch finalize/accept."""
        return self.transact("finalizeMany", [j.as_tuple() for j in jobs], gas=gas)

    def refund(self, job: Job, *, gas: int | None = None) -> TxResult:
        """Refund after a missed deadline."""
        return self.transact("refund", job.as_tuple(), gas=gas)

    def challenge(self, job: Job, *, gas: int | None = None) -> tuple[Job, TxResult]:
        """Challenge with the bond; returns the disputed job."""
        res = self.transact("challenge", job.as_tuple(), gas=gas)
        (ev,) = res.named("JobChallenged")
        return job.after_challenge(_addr(ev["challenger"])), res

    def resolve(self, job: Job, provider_at_fault: bool, *, gas: int | None = None) -> TxResult:
        """Resolver's verdict."""
        return self.transact("resolve", job.as_tuple(), provider_at_fault, gas=gas)

    def prove_equivocation(
        self,
        job: Job,
        first: tuple[eip712.AttestationData, bytes],
        second: tuple[eip712.AttestationData, bytes],
        *,
        gas: int | None = None,
    ) -> TxResult:
        """Slash with two different attestations for one job (``first`` may be the
        recorded result with an empty signature)."""
        return self.transact(
            "proveEquivocation",
            job.as_tuple(),
            _attestation_tuple(first[0]),
            first[1],
            _attestation_tuple(second[0]),
            second[1],
            gas=gas,
        )
