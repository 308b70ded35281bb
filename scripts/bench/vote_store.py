#!/usr/bin/env python3
"""What persisting a committee vote costs a verifier before each commitVote (issue 7).

    .venv/bin/python scripts/bench/vote_store.py [--votes 200]

Times ``store.votes.remember`` (one fsynced sqlite transaction, WAL,
``synchronous=FULL``: the write that must be durable before the commit transaction
is sent) and ``record_commit`` + ``mark_revealed`` afterwards, in a fresh store in a
temporary directory; prints medians and 90th percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from node.store.store import Store  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=200)
    args = parser.parse_args(argv)
    committee, member = os.urandom(20), os.urandom(20)
    before, after = [], []
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp)) as store:
        for job in range(args.votes):
            t0 = time.perf_counter()
            store.votes.remember(
                committee, job, member, fault=bool(job % 2), salt=os.urandom(32),
                commitment=os.urandom(32),
            )  # fmt: skip
            t1 = time.perf_counter()
            store.votes.record_commit(committee, job, member, "0x" + os.urandom(32).hex())
            store.votes.mark_revealed(committee, job, member)
            t2 = time.perf_counter()
            before.append((t1 - t0) * 1000)
            after.append((t2 - t1) * 1000)
    for name, xs in (("remember (before commitVote)", before), ("record + reveal", after)):
        q = statistics.quantiles(xs, n=10)
        print(f"{name}: median {statistics.median(xs):.2f} ms, p90 {q[-1]:.2f} ms, n={len(xs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
