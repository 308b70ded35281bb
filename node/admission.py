"""Provider-side admission: accept a job request or decline it with a reason.

A provider answers every well-formed request (SPEC.md §9). This module decides
which answer, as a pure function of the request, the provider's policy and its
current load, so the daemon's network code only carries the verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from protocol import pricing
from protocol.messages import Capabilities, DeclineReason, JobRequest

__all__ = ["Policy", "Verdict", "admit"]


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """What this provider accepts."""

    capabilities: Capabilities
    price_per_gpu_second: int
    known_archs: Collection[str]
    max_queue: int
    min_deadline_margin_s: int = 30


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """``reason is None`` means accept."""

    reason: DeclineReason | None
    message: str = ""
    retry_after: int = 0

    @property
    def accepted(self) -> bool:
        """True when the request is accepted."""
        return self.reason is None


def admit(request: JobRequest, policy: Policy, *, queue_depth: int, now: int) -> Verdict:
    """Decide on ``request``; the first failing check gives the reason."""
    spec, caps = request.spec, policy.capabilities
    if request.client == bytes(20):
        return Verdict(DeclineReason.BAD_REQUEST, "client address is zero")
    if spec.format not in caps.formats:
        return Verdict(DeclineReason.FORMAT, f"format {spec.format.value} is not accepted here")
    if spec.model.arch not in policy.known_archs:
        return Verdict(DeclineReason.UNKNOWN_MODEL, f"{spec.model.arch} is not in this catalog")
    if spec.determinism not in caps.determinism:
        return Verdict(
            DeclineReason.DETERMINISM, f"tier {spec.determinism.name.lower()} not offered"
        )
    if spec.min_sandbox_tier > caps.sandbox_tier:
        return Verdict(
            DeclineReason.TIER,
            f"sandbox tier {caps.sandbox_tier} is below the required {spec.min_sandbox_tier}",
        )
    size = spec.model.weights_size + spec.inputs_size
    if size > caps.max_job_bytes:
        return Verdict(DeclineReason.SIZE, f"{size} bytes exceeds {caps.max_job_bytes}")
    if request.max_price_per_gpu_second < policy.price_per_gpu_second:
        return Verdict(
            DeclineReason.PRICE,
            f"price is {policy.price_per_gpu_second}/GPU-s, "
            f"max offered {request.max_price_per_gpu_second}",
        )
    needed = pricing.max_payment_for(policy.price_per_gpu_second, min(spec.max_gpu_millis, 1000))
    if request.max_payment < needed:
        return Verdict(
            DeclineReason.PRICE, f"max payment {request.max_payment} is below the minimum {needed}"
        )
    if request.deadline < now + policy.min_deadline_margin_s:
        return Verdict(
            DeclineReason.DEADLINE,
            f"deadline leaves less than {policy.min_deadline_margin_s} s",
        )
    if queue_depth >= policy.max_queue:
        return Verdict(DeclineReason.CAPACITY, f"queue is full ({queue_depth})", retry_after=5)
    return Verdict(None)
