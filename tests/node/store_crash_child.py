"""Child process of the store crash test: writes to the store in a loop until killed.

Every step is one transaction; its description is appended to the log file
(an unbuffered write, which never blocks the way a full pipe would) only after
the commit returned, so the parent knows each logged step is committed.
Usage: python store_crash_child.py <store path> <seed> <log path>
"""

from __future__ import annotations

import os
import random
import sys

from node.store import NewJob, Role, Store
from protocol.lifecycle import allowed
from tests.node.factories import h, spec


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    log = os.open(sys.argv[3], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def report(line: str) -> None:
        os.write(log, (line + "\n").encode())

    rng = random.Random(seed)
    store = Store(path)  # type: ignore[arg-type]
    cursor = store.chain.get()
    block = cursor.block if cursor else 0
    print("ready", flush=True)
    while True:
        live = [j for role in Role for j in store.jobs.in_flight(role)]
        if len(live) < 4 or rng.random() < 0.2:
            label = f"{seed}-{rng.getrandbits(64)}"
            sp = spec(label)
            job = store.jobs.create(
                NewJob(
                    role=rng.choice(list(Role)),
                    spec=sp,
                    spec_hash=sp.spec_hash(),
                    max_payment=rng.randrange(2**64),
                    price=rng.randrange(2**64),
                    deadline=rng.randrange(2**40),
                    request_id=h(label)[:16],
                )
            )
            report(f"C {job.id}")
            continue
        job = rng.choice(live)
        event = rng.choice(sorted(allowed(job.state), key=lambda e: e.value))
        block += 1
        tx = "0x" + rng.randbytes(32).hex()
        # One step = a transition, a tx hash, an error note and the cursor, atomically;
        # half of them without waiting for the fsync (a killed process loses neither)
        with store.transaction(durable=rng.random() < 0.5):
            store.jobs.record_tx(job.id, event, tx)
            after = store.jobs.transition(
                job.id, event, block=block, tx_hash=tx, job_id=job.job_id or job.id
            )
            store.jobs.set_error(job.id, f"step {block}")
            store.chain.advance(block, h(f"block{block}"), keep=1_000_000)
        report(f"T {job.id} {event.name} {after.state.name} {block} {tx}")


if __name__ == "__main__":
    main()
