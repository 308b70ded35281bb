"""The escrow's ``Job`` struct in Python, rebuilt from events.

The contract stores only ``keccak256(abi.encode(job))`` (state in the low byte)
in one slot of the client's *lane*, so whoever moves a job passes the struct
back. :class:`Job` mirrors the
Solidity struct field by field; the ``after_*`` methods apply what each event
says, and :func:`job_slot` reproduces the stored slot so a caller can check its
copy before sending.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak

from protocol.lifecycle import JobState

JOB_ABI_TYPE = (
    "(uint64,address,uint64,address,uint256,uint128,uint64,bytes32,uint64,uint64,bytes32,address)"
)
ZERO_ADDRESS = bytes(20)
ZERO_HASH = bytes(32)


def _addr(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return bytes.fromhex(str(value).removeprefix("0x"))


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """``IGpunetEscrow.Job``."""

    job_id: int
    client: bytes
    lane: int
    provider: bytes
    price_per_gpu_second: int
    max_payment: int
    deadline: int
    spec_hash: bytes
    challenge_end: int = 0
    metered_millis: int = 0
    result_hash: bytes = ZERO_HASH
    challenger: bytes = ZERO_ADDRESS

    def as_tuple(self) -> tuple[Any, ...]:
        """ABI tuple in struct order."""
        return (
            self.job_id,
            "0x" + self.client.hex(),
            self.lane,
            "0x" + self.provider.hex(),
            self.price_per_gpu_second,
            self.max_payment,
            self.deadline,
            self.spec_hash,
            self.challenge_end,
            self.metered_millis,
            self.result_hash,
            "0x" + self.challenger.hex(),
        )

    @classmethod
    def from_created(cls, fields: dict[str, Any]) -> Job:
        """The job a ``JobCreated`` event describes."""
        return cls(
            job_id=fields["jobId"],
            client=_addr(fields["client"]),
            lane=fields["lane"],
            provider=_addr(fields["provider"]),
            price_per_gpu_second=fields["pricePerGpuSecond"],
            max_payment=fields["maxPayment"],
            deadline=fields["deadline"],
            spec_hash=fields["specHash"],
        )

    def after_submit(self, fields: dict[str, Any], result_hash: bytes) -> Job:
        """Apply ``ResultSubmitted`` (``result_hash`` is the attestation's EIP-712 digest)."""
        return dataclasses.replace(
            self,
            challenge_end=fields["challengeEnd"],
            metered_millis=fields["meteredMillis"],
            result_hash=result_hash,
        )

    def after_challenge(self, challenger: bytes) -> Job:
        """Apply ``JobChallenged``."""
        return dataclasses.replace(self, challenger=challenger)


def job_slot(job: Job, state: JobState) -> bytes:
    """The slot value the contract stores for ``job`` in ``state``."""
    digest = bytearray(keccak(abi_encode([JOB_ABI_TYPE], [job.as_tuple()])))
    digest[31] = int(state)
    return bytes(digest)


class LanePool:
    """A client's storage lanes: reuse the lanes of finished jobs (cheap warm slots).

    ``acquire`` returns the lowest free lane; ``release`` returns a lane once its job
    is terminal (Finalized, Refunded or Slashed). A client that lost track can
    rebuild the pool with ``GpunetEscrow.laneState`` views.
    """

    def __init__(self) -> None:
        self._free: list[int] = []
        self._next = 0
        self._busy: set[int] = set()

    def acquire(self) -> int:
        """A lane with no live job."""
        if self._free:
            self._free.sort()
            lane = self._free.pop(0)
        else:
            lane = self._next
            self._next += 1
        self._busy.add(lane)
        return lane

    def release(self, lane: int) -> None:
        """Mark ``lane`` free again (its job is terminal)."""
        if lane in self._busy:
            self._busy.remove(lane)
            self._free.append(lane)

    @property
    def busy(self) -> frozenset[int]:
        """Lanes holding live jobs."""
        return frozenset(self._busy)
