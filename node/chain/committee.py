"""Typed wrapper of the VerifierCommittee contract (the escrow's dispute resolver).

One method per function. Votes are committed as
``keccak256(abi.encode(jobId, member, providerAtFault, salt))``;
:func:`vote_commitment` computes the same value offline, and :func:`new_salt`
draws a fresh secret for it.
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
from typing import Any, ClassVar

from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak

from node.chain.abi import Abi
from node.chain.artifacts import load_artifact
from node.chain.contract import BoundContract, TxResult
from node.chain.deploy import deploy_contract
from node.chain.jobs import Job
from node.chain.rpc import Rpc, Signer


class Phase(enum.IntEnum):
    """``VerifierCommittee.Phase``."""

    NONE = 0
    DRAWING = 1
    VOTING = 2
    RESOLVED = 3
    CANCELLED = 4


@dataclasses.dataclass(frozen=True, slots=True)
class CommitteeParams:
    """Constructor parameters (token units, blocks and seconds)."""

    min_stake: int = 100 * 10**18
    committee_size: int = 3
    draw_delay: int = 2
    commit_window: int = 600
    reveal_window: int = 600
    unbonding_delay: int = 7 * 24 * 3600
    no_vote_penalty: int = 5 * 10**18
    vote_reward: int = 1 * 10**18


@dataclasses.dataclass(frozen=True, slots=True)
class DisputeInfo:
    """``VerifierCommittee.Dispute``."""

    job_hash: bytes
    draw_block: int
    commit_end: int
    reveal_end: int
    commits: int
    reveals: int
    fault_votes: int
    phase: Phase


@dataclasses.dataclass(frozen=True, slots=True)
class BallotInfo:
    """``VerifierCommittee.Ballot``."""

    commitment: bytes
    member: bool
    revealed: bool
    provider_at_fault: bool


@dataclasses.dataclass(frozen=True, slots=True)
class VerifierInfo:
    """``VerifierCommittee.Verifier``."""

    stake: int
    unlock_at: int
    open_disputes: int
    exiting: bool


def vote_commitment(job_id: int, member: bytes, provider_at_fault: bool, salt: bytes) -> bytes:
    """The commitment the contract expects for a vote (``voteCommitment``)."""
    if len(salt) != 32:
        raise ValueError("salt must be 32 bytes")
    return keccak(
        abi_encode(
            ["uint64", "address", "bool", "bytes32"],
            [job_id, "0x" + member.hex(), provider_at_fault, salt],
        )
    )


def new_salt() -> bytes:
    """A fresh 32-byte vote secret."""
    return secrets.token_bytes(32)


def _addr(value: Any) -> bytes:
    return bytes.fromhex(str(value).removeprefix("0x"))


class Committee(BoundContract):
    """A deployed VerifierCommittee, optionally with a signer."""

    abi = Abi(load_artifact("VerifierCommittee").abi)
    _revert_errors: ClassVar[dict[bytes, Any]] = {
        **Abi(load_artifact("GpunetEscrow").abi).errors,
        **Abi(load_artifact("TestToken").abi).errors,
        **abi.errors,
    }

    def __init__(self, rpc: Rpc, address: bytes, signer: Signer | None = None) -> None:
        super().__init__(rpc, address, signer)

    def with_signer(self, signer: Signer) -> Committee:
        """The same contract driven by another account."""
        return Committee(self.rpc, self.address, signer)

    # ------------------------------------------------------------ views
    def param(self, name: str) -> int:
        """An immutable parameter: minStake, committeeSize, commitWindow, …"""
        (value,) = self._call(name)
        return int(value)

    def escrow_address(self) -> bytes:
        """The escrow this committee resolves."""
        (addr,) = self._call("escrow")
        return _addr(addr)

    def dispute(self, job_id: int) -> DisputeInfo:
        """A dispute's record (phase NONE if never opened)."""
        ((h, draw, c_end, r_end, commits, reveals, fault, phase),) = self._call("dispute", job_id)
        return DisputeInfo(bytes(h), draw, c_end, r_end, commits, reveals, fault, Phase(phase))

    def members(self, job_id: int) -> list[bytes]:
        """The committee drawn for a dispute."""
        (addrs,) = self._call("members", job_id)
        return [_addr(a) for a in addrs]

    def ballot(self, job_id: int, member: bytes) -> BallotInfo:
        """A member's ballot."""
        ((c, m, r, v),) = self._call("ballot", job_id, "0x" + member.hex())
        return BallotInfo(bytes(c), bool(m), bool(r), bool(v))

    def verifier(self, account: bytes) -> VerifierInfo:
        """A verifier's stake record."""
        ((s, unlock, open_, exiting),) = self._call("verifierOf", "0x" + account.hex())
        return VerifierInfo(int(s), int(unlock), int(open_), bool(exiting))

    def is_active(self, account: bytes) -> bool:
        """Whether ``account`` can be drawn."""
        (active,) = self._call("isActive", "0x" + account.hex())
        return bool(active)

    def active_count(self) -> int:
        """Size of the active set."""
        (n,) = self._call("activeCount")
        return int(n)

    def balance_of(self, account: bytes) -> int:
        """Free (reward) balance."""
        (bal,) = self._call("balanceOf", "0x" + account.hex())
        return int(bal)

    def reward_reserve(self) -> int:
        """Tokens set aside for vote rewards."""
        (r,) = self._call("rewardReserve")
        return int(r)

    def vote_commitment(self, job_id: int, member: bytes, fault: bool, salt: bytes) -> bytes:
        """The contract's own commitment computation."""
        (c,) = self._call("voteCommitment", job_id, "0x" + member.hex(), fault, salt)
        return bytes(c)

    # ------------------------------------------------------------ staking and money
    def stake(self, amount: int, *, gas: int | None = None) -> TxResult:
        """Stake (approve the committee for ``amount`` first)."""
        return self.transact("stake", amount, gas=gas)

    def request_exit(self, *, gas: int | None = None) -> TxResult:
        """Leave the active set; unbonding starts."""
        return self.transact("requestExit", gas=gas)

    def withdraw_stake(self, *, gas: int | None = None) -> TxResult:
        """Withdraw the stake after exit."""
        return self.transact("withdrawStake", gas=gas)

    def withdraw(self, amount: int, *, gas: int | None = None) -> TxResult:
        """Withdraw rewards."""
        return self.transact("withdraw", amount, gas=gas)

    def fund_rewards(self, amount: int, *, gas: int | None = None) -> TxResult:
        """Top up the reward reserve (approve first)."""
        return self.transact("fundRewards", amount, gas=gas)

    # ------------------------------------------------------------ disputes
    def open_dispute(self, job: Job, *, gas: int | None = None) -> TxResult:
        """Open the dispute of a Disputed job (struct with its challenger)."""
        return self.transact("openDispute", job.as_tuple(), gas=gas)

    def draw(self, job: Job, *, gas: int | None = None) -> TxResult:
        """Draw the committee (after the seed block)."""
        return self.transact("draw", job.as_tuple(), gas=gas)

    def commit_vote(self, job_id: int, commitment: bytes, *, gas: int | None = None) -> TxResult:
        """Commit a hidden vote."""
        return self.transact("commitVote", job_id, commitment, gas=gas)

    def reveal_vote(
        self, job_id: int, provider_at_fault: bool, salt: bytes, *, gas: int | None = None
    ) -> TxResult:
        """Reveal a committed vote."""
        return self.transact("revealVote", job_id, provider_at_fault, salt, gas=gas)

    def finalize_dispute(self, job: Job, *, gas: int | None = None) -> TxResult:
        """Tally, settle verifiers and resolve the escrow."""
        return self.transact("finalizeDispute", job.as_tuple(), gas=gas)


def deploy_committee(signer: Signer, escrow: bytes, params: CommitteeParams) -> Committee:
    """Deploy a VerifierCommittee for ``escrow`` (then ``escrow.set_resolver`` it)."""
    args = (
        "0x" + escrow.hex(),
        params.min_stake,
        params.committee_size,
        params.draw_delay,
        params.commit_window,
        params.reveal_window,
        params.unbonding_delay,
        params.no_vote_penalty,
        params.vote_reward,
    )
    address = deploy_contract(signer, "VerifierCommittee", Committee.abi.constructor_inputs, args)
    return Committee(signer.rpc, address, signer)
