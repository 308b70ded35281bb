"""Typed exceptions of the client SDK and the roles: each says why a job did not complete."""

from __future__ import annotations

from collections.abc import Mapping

from protocol.messages import DeclineReason

__all__ = [
    "AttestationInvalid",
    "DeadlineMissed",
    "GpunetError",
    "JobFailed",
    "NoMatchingOffer",
    "ProviderDeclined",
    "ProviderUnreachable",
]


class GpunetError(Exception):
    """Base class of every error the SDK raises on purpose."""


class NoMatchingOffer(GpunetError):
    """No known offer satisfies the job; ``reasons`` says what each candidate lacked."""

    def __init__(self, reasons: Mapping[str, list[str]], *, offers_seen: int) -> None:
        self.reasons = dict(reasons)
        self.offers_seen = offers_seen
        if not reasons:
            detail = "no offers known yet (is the node connected to any provider?)"
        else:
            lines = [f"  {who}: {'; '.join(why)}" for who, why in sorted(reasons.items())]
            detail = f"{len(reasons)} provider(s) considered:\n" + "\n".join(lines)
        super().__init__(f"no matching offer among {offers_seen} seen; {detail}")


class ProviderDeclined(GpunetError):
    """Every provider tried declined; ``reason`` is the last machine-readable reason."""

    def __init__(self, provider: str, reason: DeclineReason, message: str = "") -> None:
        super().__init__(
            f"provider {provider} declined: {reason.value}" + (f" ({message})" if message else "")
        )
        self.provider = provider
        self.reason = reason
        self.message = message


class ProviderUnreachable(GpunetError):
    """A provider could not be reached or did not answer in time."""


class DeadlineMissed(GpunetError):
    """The provider did not submit a result before the job's deadline; escrow was refunded."""

    def __init__(self, job_id: int, refund_tx: str | None = None) -> None:
        msg = f"job {job_id}: provider missed the deadline"
        super().__init__(msg + (f"; refunded in {refund_tx}" if refund_tx else ""))
        self.job_id = job_id
        self.refund_tx = refund_tx


class AttestationInvalid(GpunetError):
    """The result's attestation or output does not check out; the result was not accepted."""


class JobFailed(GpunetError):
    """The job ran but failed (for instance the model raised, or a limit was hit)."""
