"""Crash safety for real: a child process writes to the store and is killed with
SIGKILL at random points; after each kill the reopened store must be consistent
and hold every step the child reported as committed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from node.store import Job, Store
from protocol.lifecycle import JobEvent, JobState, apply

CHILD = Path(__file__).with_name("store_crash_child.py")
ROOT = Path(__file__).resolve().parents[2]
KILLS = 6


def run_and_kill(path: Path, seed: int, delay: float) -> list[str]:
    log = path.with_name(f"steps-{seed}.log")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), str(seed), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first == b"ready\n", proc.stderr.read() if proc.stderr else first
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    # Only complete lines: a step whose line was cut (or never written) may or may
    # not be committed; the consistency checks cover it either way.
    return [line for line in log.read_text().split("\n")[:-1] if line]


def all_jobs(store: Store) -> list[Job]:
    jobs: list[Job] = []
    while page := store.jobs.select(before=jobs[-1].id if jobs else None, limit=1000):
        jobs += page
    return jobs


def check(store: Store, lines: list[str]) -> int:
    """Assert consistency and that every reported step is present; return history rows."""
    rows = 0
    max_block = 0
    for job in all_jobs(store):
        state = JobState.NONE
        for entry in store.jobs.history(job.id):
            assert entry.from_state is state, (job, entry)
            state = apply(state, entry.event)
            assert entry.to_state is state
            assert entry.tx_hash is not None and entry.block is not None
            assert job.tx_hashes[entry.event.value] is not None
            max_block = max(max_block, entry.block)
            rows += 1
        assert state is job.state, job
        if job.state is not JobState.NONE:
            assert job.job_id is not None
    cursor = store.chain.get()
    # the cursor moves in the same transaction as each transition: always equal
    assert (cursor.block if cursor else 0) == max_block
    for line in lines:
        kind, local_id, *rest = line.split()
        job = store.jobs.get(int(local_id))  # every created job survived
        if kind == "T":
            event, to_state, block, tx = rest
            [entry] = [e for e in store.jobs.history(job.id) if e.block == int(block)]
            assert (entry.event, entry.to_state, entry.tx_hash) == (
                JobEvent[event],
                JobState[to_state],
                tx,
            )
            assert store.chain.block_hash(int(block)) is not None
    return rows


def test_sigkill_at_random_points_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    rng = random.Random(1234)
    all_lines: list[str] = []
    for kill in range(KILLS):
        lines = run_and_kill(path, seed=kill, delay=rng.uniform(0.05, 0.5))
        all_lines.extend(lines)
        with Store(path) as store:
            check(store, all_lines)
    transitions = [line for line in all_lines if line.startswith("T")]
    assert len(transitions) >= KILLS  # the child really got work done between kills
    with Store(path) as store:
        assert check(store, all_lines) >= len(transitions)
        assert store.jobs.count() >= len([line for line in all_lines if line.startswith("C")])
