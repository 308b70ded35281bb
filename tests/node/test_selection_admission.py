"""Offer selection (client) and admission (provider): ranking, reasons, explanations."""

from __future__ import annotations

import msgspec
import pytest

from node.admission import Policy, admit
from node.errors import NoMatchingOffer
from node.selection import Reliability, Requirements, rank_offers
from protocol.identity import Identity, checksum_address
from protocol.messages import (
    Capabilities,
    DeclineReason,
    Determinism,
    JobFormat,
    JobRequest,
    JobSpec,
    ModelRef,
    Offer,
)

NOW = 1_800_000_000
CONTRACT = b"\xcc" * 20
CLIENT = Identity.from_private_key(b"\x09" * 32)
PROVIDERS = [Identity.from_private_key(bytes([i + 0x10]) * 32) for i in range(4)]
CAPS = Capabilities(
    device_class="cpu",
    gpu_model="",
    gpu_memory_mib=0,
    gpu_count=0,
    sandbox_tier=2,
    formats=(JobFormat.CATALOG_V1,),
    determinism=(Determinism.EXACT,),
    runtimes=("torch-2.13.0",),
    max_job_bytes=1 << 20,
)


def _offer(
    who: Identity, price: int, *, nonce: int = 1, expiry: int = NOW + 60, **caps: object
) -> Offer:
    return Offer.create(
        who,
        chain_id=31337,
        contract=CONTRACT,
        price_per_gpu_second=price,
        nonce=nonce,
        expiry=expiry,
        capabilities=msgspec.structs.replace(CAPS, **caps),
    )


REQ = Requirements(
    client=CLIENT.address,
    chain_id=31337,
    contract=CONTRACT,
    max_price_per_gpu_second=100,
    job_bytes=1000,
    min_sandbox_tier=1,
    min_stake=10,
)


def test_ranking_prefers_cheap_reliable_staked() -> None:
    offers = [_offer(PROVIDERS[0], 50), _offer(PROVIDERS[1], 40), _offer(PROVIDERS[2], 40)]
    stakes = {PROVIDERS[0].address: 100, PROVIDERS[1].address: 50, PROVIDERS[2].address: 90}
    rel = {PROVIDERS[1].address: Reliability(successes=0, failures=5)}
    ranked, rejected = rank_offers(
        offers,
        REQ,
        now=NOW,
        stake_of=stakes.__getitem__,
        reliability_of=lambda a: rel.get(a, Reliability()),
    )
    assert not rejected
    # P2 (price 40, unknown 0.5 reliability, stake 90) < P0 (50/0.5) < P1 (40 / (1/7))
    assert [c.offer.provider for c in ranked] == [
        PROVIDERS[2].address,
        PROVIDERS[0].address,
        PROVIDERS[1].address,
    ]


def test_newer_nonce_wins_for_the_same_provider() -> None:
    offers = [_offer(PROVIDERS[0], 50, nonce=1), _offer(PROVIDERS[0], 50, nonce=2)]
    ranked, _ = rank_offers(
        offers, REQ, now=NOW, stake_of=lambda _: 100, reliability_of=lambda _: Reliability()
    )
    assert len(ranked) == 1 and ranked[0].offer.nonce == 2


def test_every_shortfall_is_explained() -> None:
    bad = [
        (_offer(PROVIDERS[0], 500), "price 500/GPU-s above max 100"),
        (_offer(PROVIDERS[1], 50, expiry=NOW - 5), "offer expired 5 s ago"),
        (_offer(PROVIDERS[2], 50, sandbox_tier=0), "sandbox tier 0 below required 1"),
        (
            _offer(PROVIDERS[3], 50, max_job_bytes=10),
            "job is 1000 bytes, provider takes at most 10",
        ),
    ]
    poor = Identity.from_private_key(b"\x77" * 32)
    bad.append((_offer(poor, 50), "stake 5 below required 10"))  # fits but for its stake
    asked: list[bytes] = []

    def stake_of(address: bytes) -> int:
        asked.append(address)
        return 5 if address == poor.address else 100

    ranked, rejected = rank_offers(
        [o for o, _ in bad], REQ, now=NOW, stake_of=stake_of, reliability_of=lambda _: Reliability()
    )
    assert ranked == []
    for offer, reason in bad:
        assert reason in "; ".join(rejected[_checksum(offer)])
    assert asked == [poor.address]  # the chain is asked only about an offer that fits
    error = NoMatchingOffer(rejected, offers_seen=len(bad))
    assert "5 provider(s) considered" in str(error)
    assert "price 500/GPU-s above max 100" in str(error)
    assert "no offers known yet" in str(NoMatchingOffer({}, offers_seen=0))


def _checksum(offer: Offer) -> str:
    return checksum_address(offer.provider)


def test_offers_for_other_clients_or_chains_do_not_fit() -> None:
    other = Offer.create(
        PROVIDERS[0],
        chain_id=1,
        contract=CONTRACT,
        price_per_gpu_second=1,
        nonce=1,
        expiry=NOW + 60,
        capabilities=CAPS,
        client=b"\x01" * 20,
    )
    _, rejected = rank_offers(
        [other], REQ, now=NOW, stake_of=lambda _: 100, reliability_of=lambda _: Reliability()
    )
    reasons = "; ".join(rejected[_checksum(other)])
    assert "another chain" in reasons and "another client" in reasons


POLICY = Policy(
    capabilities=CAPS, price_per_gpu_second=100, known_archs={"resnet18@1"}, max_queue=2
)


def _request(**changes: object) -> JobRequest:
    spec = JobSpec(
        model=ModelRef(arch="resnet18@1", config={}, weights=b"\x01" * 32, weights_size=1000),
        inputs=b"\x02" * 32,
        inputs_size=1000,
    )
    spec_changes = {k[5:]: v for k, v in changes.items() if k.startswith("spec_")}
    base = JobRequest(
        request_id=b"\x00" * 16,
        client=CLIENT.address,
        spec=msgspec.structs.replace(spec, **spec_changes),
        max_price_per_gpu_second=100,
        max_payment=10**6,
        deadline=NOW + 600,
    )
    return msgspec.structs.replace(
        base, **{k: v for k, v in changes.items() if not k.startswith("spec_")}
    )


UNKNOWN_MODEL = ModelRef(arch="evil@1", weights=b"\x01" * 32, weights_size=1)


@pytest.mark.parametrize(
    ("changes", "queue", "reason"),
    [
        ({}, 0, None),
        ({"client": bytes(20)}, 0, DeclineReason.BAD_REQUEST),
        ({"spec_format": JobFormat.EXPORT_V2}, 0, DeclineReason.FORMAT),
        (
            {"spec_model": ModelRef(arch="evil@1", weights=b"\x01" * 32, weights_size=1)},
            0,
            DeclineReason.UNKNOWN_MODEL,
        ),
        ({"spec_determinism": Determinism.TOLERANCE}, 0, DeclineReason.DETERMINISM),
        ({"spec_min_sandbox_tier": 3}, 0, DeclineReason.TIER),
        ({"spec_inputs_size": 2 << 20}, 0, DeclineReason.SIZE),
        ({"max_price_per_gpu_second": 99}, 0, DeclineReason.PRICE),
        ({"max_payment": 99}, 0, DeclineReason.PRICE),
        ({"deadline": NOW + 10}, 0, DeclineReason.DEADLINE),
        ({}, 2, DeclineReason.CAPACITY),
    ],
)
def test_admission_reasons(
    changes: dict[str, object], queue: int, reason: DeclineReason | None
) -> None:
    verdict = admit(_request(**changes), POLICY, queue_depth=queue, now=NOW)
    assert verdict.reason is reason
    assert verdict.accepted == (reason is None)
    if reason is not None:
        assert verdict.message


def test_a_flood_of_unstaked_offers_costs_bounded_stake_look_ups() -> None:
    """Offers are free to sign with fresh keys: ranking asks the chain only about
    offers that fit otherwise, cheapest first, at most MAX_STAKE_LOOKUPS times, and
    returns at most MAX_CANDIDATES providers."""
    from node.selection import MAX_CANDIDATES, MAX_STAKE_LOOKUPS

    honest = [Identity.from_private_key(bytes([0x40 + i]) * 32) for i in range(40)]
    fake = [Identity.generate() for _ in range(MAX_STAKE_LOOKUPS // 2)]
    misfits = [Identity.generate() for _ in range(200)]
    offers = [_offer(f, 10) for f in fake]  # the cheapest, all unstaked
    offers += [_offer(h, 60 + i) for i, h in enumerate(honest)]
    offers += [_offer(m, 1, sandbox_tier=0) for m in misfits]  # cheaper still, but unfit
    staked = {h.address for h in honest}
    asked: list[bytes] = []

    def stake_of(address: bytes) -> int:
        asked.append(address)
        return 100 if address in staked else 0

    ranked, rejected = rank_offers(
        offers, REQ, now=NOW, stake_of=stake_of, reliability_of=lambda _: Reliability()
    )
    assert len(asked) == len(fake) + MAX_CANDIDATES  # no misfit, no honest past the cap
    assert not {m.address for m in misfits} & set(asked)
    assert [c.offer.provider for c in ranked] == [h.address for h in honest[:MAX_CANDIDATES]]
    assert all("stake 0 below" in rejected[checksum_address(f.address)][0] for f in fake)
    late = rejected[checksum_address(honest[-1].address)][0]
    assert late.startswith("not considered")

    # past the look-up budget the rest are not asked about, and say so
    many = [Identity.generate() for _ in range(MAX_STAKE_LOOKUPS + 5)]
    asked.clear()
    ranked, rejected = rank_offers(
        [_offer(f, 10) for f in many] + [_offer(honest[0], 60)],
        REQ,
        now=NOW,
        stake_of=stake_of,
        reliability_of=lambda _: Reliability(),
    )
    assert len(asked) == MAX_STAKE_LOOKUPS and ranked == []
    assert rejected[checksum_address(honest[0].address)][0].startswith("not considered")
