"""Attestation verification rate per core: hand-built EIP-712 + coincurve vs eth-account.

Runs every variant side by side in one process (one core), several rounds each,
interleaved, and prints medians and the ratio. Usage:

    .venv/bin/python scripts/bench/crypto.py [--rounds 7] [--n 3000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

from eth_account import Account
from eth_account.messages import encode_typed_data

from protocol import eip712
from protocol.identity import Identity
from protocol.messages import Attestation, Determinism, decode_as, encode


def _attestations(n: int) -> list[Attestation]:
    provider = Identity.generate()
    contract = os.urandom(20)
    return [
        Attestation.create(
            provider,
            chain_id=8453,
            contract=contract,
            job_id=i,
            spec_hash=os.urandom(32),
            output_hash=os.urandom(32),
            runtime="torch-2.13.0+cpu/cpu/catalog-1/exact",
            determinism=Determinism.EXACT,
            metered_millis=1000 + i,
        )
        for i in range(n)
    ]


def _rate(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    n = args.n
    atts = _attestations(n)
    wire = [encode(a) for a in atts]
    slow = atts[: max(n // 10, 50)]

    def fast_verify() -> None:
        for a in atts:
            a.verify()

    def decode_and_verify() -> None:
        for blob in wire:
            decode_as(blob, Attestation).verify()

    def digest_only() -> None:
        for a in atts:
            a.digest()

    def eth_account_generic() -> None:
        for a in slow:
            doc = eip712.typed_data(a.domain(), a.signed_data())
            signer = Account.recover_message(
                encode_typed_data(full_message=doc), signature=a.signature
            )
            assert signer.lower() == "0x" + a.provider.hex()

    variants: dict[str, tuple[Callable[[], None], int]] = {
        "fast path: digest + coincurve recover": (fast_verify, n),
        "wire bytes: strict decode + fast verify": (decode_and_verify, n),
        "digest only (keccak, no signature)": (digest_only, n),
        "eth-account recover_message(encode_typed_data)": (eth_account_generic, len(slow)),
    }
    results: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, (fn, count) in variants.items():  # interleaved: same load for all
            results[name].append(_rate(fn, count))

    print(f"# attestation verification, one core, {args.rounds} rounds, n={n}")
    print(
        f"# python {platform.python_version()}, {platform.machine()}, load {os.getloadavg()[0]:.2f}"
    )
    base = statistics.median(results["eth-account recover_message(encode_typed_data)"])
    print("| variant | median verifications/s | min | max | x eth-account |")
    print("|---|---:|---:|---:|---:|")
    for name, rates in results.items():
        med = statistics.median(rates)
        print(f"| {name} | {med:,.0f} | {min(rates):,.0f} | {max(rates):,.0f} | {med / base:.1f} |")


if __name__ == "__main__":
    main()
