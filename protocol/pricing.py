"""Integer money arithmetic: prices per GPU-second, metered time, caps, refunds.

All amounts are integers in the payment token's smallest unit ("wei"), never
floats. Metered time is in milliseconds of device time. The contract does the
same arithmetic; these functions are the reference the tests compare it with.

    cost    = floor(pricePerGpuSecond * meteredMillis / 1000)
    payment = min(cost, maxPayment)
    refund  = maxPayment - payment
"""

from __future__ import annotations

import dataclasses
from typing import Final

from protocol.errors import PricingError

__all__ = [
    "MAX_UINT256",
    "MILLIS_PER_SECOND",
    "Settlement",
    "cost",
    "max_payment_for",
    "settle",
]

MAX_UINT256: Final = 2**256 - 1
MILLIS_PER_SECOND: Final = 1000


def _check(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PricingError(f"{name} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_UINT256:
        raise PricingError(f"{name} must be in [0, 2**256), got {value}")


def cost(price_per_gpu_second: int, metered_millis: int) -> int:
    """Cost of ``metered_millis`` of device time at ``price_per_gpu_second`` (rounded down)."""
    _check("price_per_gpu_second", price_per_gpu_second)
    _check("metered_millis", metered_millis)
    product = price_per_gpu_second * metered_millis
    if product > MAX_UINT256:
        raise PricingError("price x time overflows uint256")
    return product // MILLIS_PER_SECOND


def max_payment_for(price_per_gpu_second: int, max_millis: int) -> int:
    """The escrow a client must lock to cover up to ``max_millis`` at that price (rounded up)."""
    _check("price_per_gpu_second", price_per_gpu_second)
    _check("max_millis", max_millis)
    product = price_per_gpu_second * max_millis
    if product > MAX_UINT256:
        raise PricingError("price x time overflows uint256")
    return -(-product // MILLIS_PER_SECOND)


@dataclasses.dataclass(frozen=True, slots=True)
class Settlement:
    """How a job's escrow splits at finalisation."""

    payment: int  # to the provider
    refund: int  # back to the client


def settle(price_per_gpu_second: int, metered_millis: int, max_payment: int) -> Settlement:
    """``payment = min(cost, max_payment)``, the rest refunded; conserves ``max_payment``."""
    _check("max_payment", max_payment)
    payment = min(cost(price_per_gpu_second, metered_millis), max_payment)
    return Settlement(payment=payment, refund=max_payment - payment)
