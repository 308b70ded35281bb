#!/usr/bin/env python3
"""Chain client latency and throughput on a fresh anvil, one Python thread.

    .venv/bin/python scripts/bench/chain.py [--n 300] [--write-docs]

Measures a small contract transaction (``cancelNonces``) end to end — encode, sign
locally, send, receipt — with gas given, both with ``eth_sendRawTransactionSync``
(the receipt comes with the answer) and with ``eth_sendRawTransaction`` and a
polled receipt (alternated); with ``eth_estimateGas`` first; a pipelined variant (send all, then
collect receipts); an ``eth_call`` view; and signing alone, this node's signer against
eth-account's (alternated).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from eth_account import Account
from eth_utils.address import to_checksum_address

from node.chain.anvil import Anvil
from node.chain.devnet import Devnet
from node.chain.txsign import TxSigner

DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
HEADING = "## Chain client (issue 3)"


def _row(name: str, samples: list[float]) -> str:
    p50 = statistics.median(samples) * 1000
    rate = len(samples) / sum(samples)
    return f"| {name} | {p50:.2f} | {rate:,.0f} |"


def measure(n: int) -> list[str]:
    """Run the measurements; return markdown table rows."""
    rows = []
    with Anvil() as node:
        net = Devnet(node.url)
        p = net.provider()
        esc = p.escrow
        fn = esc.abi.functions["cancelNonces"]
        for k in range(20):  # warm up connections and caches
            esc.cancel_nonces([k], gas=60_000)
        fast: dict[bool, list[float]] = {True: [], False: []}
        for k in range(2 * n):  # alternated, so both see the same machine
            p.signer.sync_send = sync = k % 2 == 0
            t0 = time.perf_counter()
            esc.transact("cancelNonces", 1000 + k, 1, gas=60_000)
            fast[sync].append(time.perf_counter() - t0)
        rows.append(_row("contract tx, gas given (sign, eth_sendRawTransactionSync)", fast[True]))
        rows.append(_row("contract tx, gas given (sign, send raw, poll receipt)", fast[False]))
        est = []
        for k in range(n):
            t0 = time.perf_counter()
            esc.transact("cancelNonces", 5000 + k, 1)
            est.append(time.perf_counter() - t0)
        rows.append(_row("contract tx with eth_estimateGas first", est))
        t0 = time.perf_counter()
        hashes = [p.signer.send(esc.address, fn.encode(9000 + k, 1), gas=60_000) for k in range(n)]
        for h in hashes:
            assert p.signer.wait(h).status == 1
        total = time.perf_counter() - t0
        rows.append(_row("pipelined: send all, then receipts (per tx)", [total / n] * n))
        calls = []
        for k in range(n):
            t0 = time.perf_counter()
            esc.nonce_used(p.address, k)
            calls.append(time.perf_counter() - t0)
        rows.append(_row("eth_call view (nonceUsed)", calls))
    rows.extend(_signing(n))
    return rows


def _signing(n: int) -> list[str]:
    """Signing one transaction alone (no chain): this node's signer against
    eth-account's ``sign_transaction`` (the same bytes), alternated."""
    key = bytes(range(1, 33))
    ours, theirs = TxSigner(key), Account.from_key(key)
    data, to = bytes(4 + 64), bytes(range(20))
    times: dict[bool, list[float]] = {True: [], False: []}
    for k in range(2 * n):
        mine = k % 2 == 0
        t0 = time.perf_counter()
        if mine:
            ours.sign(
                chain_id=31337,
                nonce=k,
                max_priority_fee=1,
                max_fee=2 * 10**9,
                gas=60_000,
                to=to,
                value=0,
                data=data,
            )
        else:
            theirs.sign_transaction(
                {
                    "chainId": 31337,
                    "nonce": k,
                    "maxPriorityFeePerGas": 1,
                    "maxFeePerGas": 2 * 10**9,
                    "gas": 60_000,
                    "to": to_checksum_address(to),
                    "value": 0,
                    "data": data,
                    "type": 2,
                }
            )
        times[mine].append(time.perf_counter() - t0)
    return [
        _row("sign a transaction (node.chain.txsign)", times[True]),
        _row("sign a transaction (eth-account sign_transaction)", times[False]),
    ]


def render(rows: list[str], n: int) -> str:
    """The markdown section."""
    return (
        "\n".join(
            [
                HEADING,
                "",
                "Command: `.venv/bin/python scripts/bench/chain.py --write-docs`",
                f"(anvil 1.7.1, n = {n}, one Python thread, 2 cores shared with other jobs:",
                f"expect noise; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load",
                f"average {os.getloadavg()[0]:.1f} at the end). Transactions are signed by",
                "`node.chain.txsign` (the last two rows compare it with eth-account alone).",
                "",
                "| operation | p50 ms | per second |",
                "|---|---:|---:|",
                *rows,
            ]
        )
        + "\n"
    )


def write_docs(section: str) -> None:
    """Replace (or append) this section of docs/benchmarks.md."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    start = text.find(HEADING)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + ("" if nxt == -1 else "\n" + text[nxt + 1 :])
    DOCS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    section = render(measure(args.n), args.n)
    print(section)
    if args.write_docs:
        write_docs(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
