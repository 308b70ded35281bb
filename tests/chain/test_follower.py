"""Event follower on anvil: resume from a stored cursor, shallow reorgs, too-deep reorgs."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.chain.devnet import Devnet
from node.chain.follower import (
    Cursor,
    EventFollower,
    JsonCursorStore,
    MemoryCursorStore,
    ReorgTooDeep,
)


def _job_ids(events: list) -> list[int]:  # type: ignore[type-arg]
    return [e.fields["jobId"] for e in events if e.name == "JobCreated"]


def test_follows_and_resumes_from_cursor(net: Devnet, tmp_path: Path) -> None:
    provider, client = net.provider(), net.actor()
    store = JsonCursorStore(tmp_path / "cursor.json")
    start = net.block_number()
    follower = EventFollower(net.escrow, store, start_block=start, max_range=3)
    job1 = net.create(client, provider)
    first = follower.poll()
    assert _job_ids(first) == [job1.job_id]
    assert store.load() == Cursor(net.block_number(), net.rpc.block("latest")["hash"])
    assert follower.poll() == []  # nothing new
    job1 = net.submit(provider, job1)
    job2 = net.create(client, provider)
    for _ in range(7):
        net.warp(1)  # empty blocks: several ranges of 3
    # a new follower (a restarted node) resumes from the file and sees only new events
    resumed = EventFollower(net.escrow, JsonCursorStore(tmp_path / "cursor.json"), max_range=3)
    events = resumed.poll()
    assert [e.name for e in events] == ["ResultSubmitted", "JobCreated"]
    assert _job_ids(events) == [job2.job_id]
    assert events == sorted(events, key=lambda e: (e.block_number, e.log_index))


def test_shallow_reorg_rolls_back_and_rereads(net: Devnet) -> None:
    provider, client = net.provider(), net.actor()
    rollbacks: list[int] = []
    follower = EventFollower(
        net.escrow,
        MemoryCursorStore(),
        start_block=net.block_number(),
        reorg_depth=4,
        on_rollback=rollbacks.append,
    )
    follower.poll()
    fork_point = net.block_number()
    snap = net.snapshot()
    orphan = net.create(client, provider)
    assert _job_ids(follower.poll()) == [orphan.job_id]
    net.revert(snap)  # the block holding `orphan` disappears ...
    replacement = net.create(client, provider)  # ... and another one takes its height
    net.warp(1)
    events = follower.poll()
    assert rollbacks and rollbacks[-1] <= fork_point
    assert replacement.job_id in _job_ids(events)
    assert orphan.job_id == replacement.job_id  # same id, different job: the lane differs
    created = [e for e in events if e.name == "JobCreated"]
    assert created[-1].fields["lane"] == replacement.lane != orphan.lane


def test_confirmations_hide_shallow_reorgs(net: Devnet) -> None:
    provider, client = net.provider(), net.actor()
    follower = EventFollower(
        net.escrow, MemoryCursorStore(), start_block=net.block_number(), confirmations=3
    )
    follower.poll()
    snap = net.snapshot()
    orphan = net.create(client, provider)
    assert follower.poll() == []  # not confirmed yet
    net.revert(snap)
    kept = net.create(client, provider, lane=999)
    for _ in range(3):
        net.warp(1)
    events = follower.poll()
    assert [e.fields["lane"] for e in events if e.name == "JobCreated"] == [kept.lane]
    assert orphan.lane != kept.lane


def test_reorg_deeper_than_configured_is_refused(net: Devnet) -> None:
    follower = EventFollower(
        net.escrow, MemoryCursorStore(), start_block=net.block_number(), reorg_depth=2
    )
    snap = net.snapshot()
    for _ in range(6):
        net.warp(1)
        follower.poll()  # the follower sees (and remembers) every block
    net.revert(snap)
    for _ in range(7):
        net.warp(2)
    with pytest.raises(ReorgTooDeep):
        follower.poll()


def test_bad_configuration() -> None:
    with pytest.raises(ValueError):
        EventFollower(None, MemoryCursorStore(), reorg_depth=0)  # type: ignore[arg-type]
