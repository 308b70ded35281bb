"""Client-side offer selection: filter offers by what a job needs, rank, and explain.

Pure logic over decoded offers plus two lookups (provider stake, observed
reliability), so the SDK can tell a user exactly why no provider fits
(:class:`node.errors.NoMatchingOffer` lists every candidate's shortfalls).

Ranking: the expected price of a successful job, i.e. the offer's price divided
by the provider's reliability (Laplace-smoothed success rate), then higher
stake, then the more recent offer.

A provider's stake is a chain look-up, so it is asked last and lazily: only for
offers that meet every other requirement, best expected price first, until
:data:`MAX_CANDIDATES` providers qualify or :data:`MAX_STAKE_LOOKUPS` were asked.
Offers cost nothing to sign with fresh keys: a book full of unstaked offers must
not make a client ask the chain for each (it did, one blocking call per offer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from protocol.identity import checksum_address
from protocol.messages import (
    ADVERTISEMENT_CLIENT,
    ZERO_ADDRESS,
    Determinism,
    JobFormat,
    Offer,
)

__all__ = [
    "MAX_CANDIDATES",
    "MAX_STAKE_LOOKUPS",
    "Candidate",
    "Reliability",
    "Requirements",
    "rank_offers",
]

#: Providers a ranking returns at most (a client tries them in order).
MAX_CANDIDATES = 32
#: Stake look-ups one ranking makes at most (the client caches their answers).
MAX_STAKE_LOOKUPS = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Requirements:
    """What a job needs from a provider."""

    client: bytes
    chain_id: int
    contract: bytes
    max_price_per_gpu_second: int
    job_bytes: int
    format: JobFormat = JobFormat.CATALOG_V1
    determinism: Determinism = Determinism.EXACT
    min_sandbox_tier: int = 0
    device_class: str | None = None
    min_gpu_memory_mib: int = 0
    min_stake: int = 0
    runtime: str | None = None


@dataclasses.dataclass(slots=True)
class Reliability:
    """Observed outcomes with one provider (successes vs. declines, timeouts, failures)."""

    successes: int = 0
    failures: int = 0

    @property
    def score(self) -> float:
        """Laplace-smoothed success rate in (0, 1): an unknown provider scores 0.5."""
        return (self.successes + 1) / (self.successes + self.failures + 2)


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    """An offer that fits, with what ranked it."""

    offer: Offer
    stake: int
    reliability: float

    @property
    def expected_price(self) -> float:
        """Price per GPU-second divided by the chance the provider delivers."""
        return self.offer.price_per_gpu_second / self.reliability


def _shortfalls(offer: Offer, req: Requirements, now: int) -> list[str]:
    """What ``offer`` lacks for ``req``, the provider's stake aside."""
    caps = offer.capabilities
    why: list[str] = []
    if offer.expiry <= now:
        why.append(f"offer expired {now - offer.expiry} s ago")
    if offer.chain_id != req.chain_id or offer.contract != req.contract:
        why.append("offer is for another chain or escrow contract")
    if offer.client not in (ZERO_ADDRESS, ADVERTISEMENT_CLIENT, req.client):
        why.append("offer is reserved for another client")
    if offer.price_per_gpu_second > req.max_price_per_gpu_second:
        why.append(
            f"price {offer.price_per_gpu_second}/GPU-s above max {req.max_price_per_gpu_second}"
        )
    if req.format not in caps.formats:
        why.append(f"format {req.format.value} not offered")
    if req.determinism not in caps.determinism:
        why.append(f"determinism tier {req.determinism.name.lower()} not offered")
    if caps.sandbox_tier < req.min_sandbox_tier:
        why.append(f"sandbox tier {caps.sandbox_tier} below required {req.min_sandbox_tier}")
    if req.job_bytes > caps.max_job_bytes:
        why.append(f"job is {req.job_bytes} bytes, provider takes at most {caps.max_job_bytes}")
    if req.device_class is not None and caps.device_class != req.device_class:
        why.append(f"device class {caps.device_class}, wanted {req.device_class}")
    if caps.gpu_memory_mib < req.min_gpu_memory_mib:
        why.append(f"{caps.gpu_memory_mib} MiB device memory, wanted {req.min_gpu_memory_mib}")
    if req.runtime is not None and req.runtime not in caps.runtimes:
        why.append(f"runtime {req.runtime} not offered")
    return why


def rank_offers(
    offers: Iterable[Offer],
    req: Requirements,
    *,
    now: int,
    stake_of: Callable[[bytes], int],
    reliability_of: Callable[[bytes], Reliability],
) -> tuple[list[Candidate], dict[str, list[str]]]:
    """Offers that fit ``req``, best first, and for every other provider what it lacked.

    Only the best-ranked fitting offer per provider is kept; at most
    :data:`MAX_CANDIDATES` are returned, and ``stake_of`` is called at most
    :data:`MAX_STAKE_LOOKUPS` times, never for an offer that fails another
    requirement (see the module docstring).
    """
    best: dict[bytes, tuple[float, int, Offer]] = {}  # provider -> (expected, -nonce, offer)
    rejected: dict[str, list[str]] = {}
    for offer in offers:
        why = _shortfalls(offer, req, now)
        if why:
            rejected.setdefault(checksum_address(offer.provider), why)
            continue
        score = reliability_of(offer.provider).score
        key = (offer.price_per_gpu_second / score, -offer.nonce, offer)
        current = best.get(offer.provider)
        if current is None or key[:2] < current[:2]:
            best[offer.provider] = key
    for provider in best:
        rejected.pop(checksum_address(provider), None)
    fitting = sorted(best.values(), key=lambda k: k[:2])
    chosen: list[Candidate] = []
    asked = 0
    for i, (expected, _, offer) in enumerate(fitting):
        # the last qualifier's equals still count: stake breaks ties between them
        full = len(chosen) >= MAX_CANDIDATES and expected > chosen[-1].expected_price
        if full or asked >= MAX_STAKE_LOOKUPS:
            for _, _, left in fitting[i:]:
                rejected[checksum_address(left.provider)] = [
                    "not considered: enough better offers were checked first"
                ]
            break
        stake = stake_of(offer.provider)
        asked += 1
        if stake < req.min_stake:
            low = f"stake {stake} below required {req.min_stake}"
            rejected[checksum_address(offer.provider)] = [low]
            continue
        chosen.append(Candidate(offer, stake, reliability_of(offer.provider).score))
    return sorted(chosen, key=_key)[:MAX_CANDIDATES], rejected


def _key(c: Candidate) -> tuple[float, int, int]:
    return (c.expected_price, -c.stake, -c.offer.nonce)
