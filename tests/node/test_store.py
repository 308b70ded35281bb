"""The node store on a real sqlite file: jobs and history, offers, blobs, attestations,
chain cursor, transactions, bounds and schema migrations."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from node.store import SCHEMA_VERSION, NewJob, Role, SchemaError, Store, StoreError
from node.store.db import _GroupSync
from node.store.jobs import MAX_SMALL_OUTPUT
from node.store.schema import migrate, version_of
from protocol.content import ContentId, cid_of
from protocol.errors import IllegalTransition
from protocol.lifecycle import JobEvent, JobState, apply
from protocol.messages import encode
from tests.node.factories import PROVIDERS, attestation, h, offer, spec

TX1 = "0x" + "ab" * 32
TX2 = "0x" + "cd" * 32
BIG = 2**64 - 1  # a u64 amount above sqlite's signed 64-bit range


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "data" / "node.sqlite", clock=Clock())
    yield s  # type: ignore[misc]
    s.close()


def new_job(role: Role = Role.CLIENT, label: str = "a", **kw: object) -> NewJob:
    sp = spec(label)
    args: dict[str, object] = {
        "role": role,
        "spec": sp,
        "spec_hash": sp.spec_hash(),
        "max_payment": BIG,
        "price": 1000,
        "deadline": 1_700_000_600,
        "request_id": h(label)[:16],
        "counterparty": PROVIDERS[0].address,
    }
    args.update(kw)
    return NewJob(**args)  # type: ignore[arg-type]


def replay(store: Store, local_id: int) -> JobState:
    """Apply the recorded history from NONE; it must chain and end at the job's state."""
    state = JobState.NONE
    for entry in store.jobs.history(local_id):
        assert entry.from_state is state
        state = apply(state, entry.event)
        assert entry.to_state is state
    return state


def test_file_mode_wal_and_full_sync(store: Store) -> None:
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    # FULL durability by group commit: sqlite runs NORMAL, every commit waits for a WAL fsync
    assert store._db.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store._db._sync is not None
    assert store.schema_version == SCHEMA_VERSION


class _CountingSync(_GroupSync):
    """The real group sync (real fsyncs), counting flushes and what each one covered."""

    def __init__(self, wal: Path) -> None:
        super().__init__(wal)
        self.flushes: list[int] = []  # commits numbered when each flush began

    def _flush(self) -> None:
        self.flushes.append(self._committed)
        super()._flush()


def test_group_commit_makes_every_commit_durable_with_shared_fsyncs(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    assert store._db._sync is not None
    sync = _CountingSync(store._db._sync.wal)
    store._db._sync = sync
    late: list[tuple[int, int]] = []  # commits that returned before a flush covered them

    def writer(n: int) -> None:
        for i in range(10):
            before = sync._committed  # this thread's commit will be numbered above it
            store.jobs.create(new_job(label=f"{n}-{i}"))
            if sync._synced <= before:
                late.append((before, sync._synced))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not late
    assert store.jobs.count() == 80
    assert sync._synced == sync._committed == 80
    assert sync.flushes == sorted(sync.flushes)
    assert len(sync.flushes) < 80  # concurrent commits shared flushes
    store.close()


def test_a_commit_that_need_not_be_durable_does_not_wait_for_a_flush(tmp_path: Path) -> None:
    """``durable=False`` (facts the chain holds too) returns after COMMIT; the next
    durable commit's flush covers it, and nothing is lost on reopening."""
    store = Store(tmp_path / "s.sqlite")
    assert store._db._sync is not None
    sync = _CountingSync(store._db._sync.wal)
    store._db._sync = sync
    job = store.jobs.create(new_job())
    assert len(sync.flushes) == 1
    store.jobs.transition(job.id, JobEvent.CREATE, job_id=3, tx_hash=TX1, durable=False)
    with store.transaction(durable=False):
        store.jobs.set_error(job.id, "noted")
    assert len(sync.flushes) == 1 and sync._committed == 1  # no flush waited for
    store.jobs.create(new_job(label="b"))  # durable: its flush covers the whole WAL
    assert len(sync.flushes) == 2 and sync._synced == sync._committed == 2
    store.close()
    again = Store(tmp_path / "s.sqlite")
    reread = again.jobs.get(job.id)
    assert reread.state is JobState.MATCHED and reread.last_error == "noted"
    again.close()


def test_the_counterparty_s_peer_is_kept_with_the_job(store: Store) -> None:
    peer = "16Uiu2HAmUwQE1avJAyXHN7HTAt3MWQ7ipF6mZ1y3r5kT8xSbqW8Y"
    job = store.jobs.create(new_job(role=Role.PROVIDER, peer=peer))
    assert store.jobs.get(job.id).peer == peer
    assert store.jobs.create(new_job(label="b")).peer is None
    for bad in ("", "0OIl", "x" * 129, "peer id"):
        with pytest.raises(StoreError, match="peer"):
            store.jobs.create(new_job(label=f"bad {bad!r}", peer=bad))
    assert store.jobs.count() == 2  # nothing written for the refused ones


def test_job_lifecycle_and_history(store: Store) -> None:
    job = store.jobs.create(new_job())
    assert job.state is JobState.NONE and job.job_id is None and job.in_flight
    assert job.max_payment == BIG and job.spec == spec("a")
    with pytest.raises(StoreError, match="onchain job id"):
        store.jobs.transition(job.id, JobEvent.CREATE)
    job = store.jobs.transition(job.id, JobEvent.CREATE, job_id=7, block=10, tx_hash=TX1)
    assert (job.state, job.job_id) == (JobState.MATCHED, 7)
    # a replay of the same chain event changes nothing
    assert store.jobs.transition(job.id, JobEvent.CREATE, block=10, tx_hash=TX1) == job
    with pytest.raises(IllegalTransition):
        store.jobs.transition(job.id, JobEvent.ACCEPT)
    assert store.jobs.get(job.id) == job  # an illegal event changes nothing
    store.jobs.transition(job.id, JobEvent.SUBMIT, block=11, tx_hash=TX2)
    done = store.jobs.transition(job.id, JobEvent.ACCEPT, block=12)
    assert done.state is JobState.FINALIZED and not done.in_flight
    assert [e.event for e in store.jobs.history(job.id)] == [
        JobEvent.CREATE,
        JobEvent.SUBMIT,
        JobEvent.ACCEPT,
    ]
    assert replay(store, job.id) is JobState.FINALIZED
    with pytest.raises(IllegalTransition):
        store.jobs.transition(job.id, JobEvent.REFUND)
    assert store.jobs.find(Role.CLIENT, job_id=7) == done
    assert store.jobs.find(Role.CLIENT, request_id=h("a")[:16]) == done
    assert store.jobs.find(Role.PROVIDER, job_id=7) is None


def test_uniqueness_and_bounds(store: Store) -> None:
    store.jobs.create(new_job())
    with pytest.raises(StoreError, match="already exists"):
        store.jobs.create(new_job())
    store.jobs.create(new_job(Role.PROVIDER))  # same request, other role: fine
    bad = [
        {"spec_hash": b"short"},
        {"spec_hash": h("other")},
        {"request_id": b"x" * 17},
        {"counterparty": b"x" * 19},
        {"max_payment": 2**64},
        {"max_payment": -1},
        {"price": True},
        {"deadline": 2**63},
        {"job_id": -1},
    ]
    before = store.jobs.count()
    for i, kw in enumerate(bad):
        with pytest.raises(StoreError):
            store.jobs.create(new_job(label=f"b{i}", **kw))
    assert store.jobs.count() == before
    job = store.jobs.create(new_job(label="c"))
    for tx in ("0x12", "ab" * 33, "0x" + "zz" * 32):
        with pytest.raises(StoreError, match="transaction hash"):
            store.jobs.record_tx(job.id, JobEvent.CREATE, tx)
    with pytest.raises(StoreError, match="no job"):
        store.jobs.get(10_000)
    with pytest.raises(StoreError, match="limit"):
        store.jobs.select(limit=100_000)
    assert len(store.jobs.set_error(job.id, "x" * 5000).last_error or "") == 1000


def test_in_flight_select_and_abandon(store: Store) -> None:
    a = store.jobs.create(new_job(Role.PROVIDER, "a"))
    b = store.jobs.create(new_job(Role.PROVIDER, "b"))
    c = store.jobs.create(new_job(Role.CLIENT, "c"))
    store.jobs.transition(a.id, JobEvent.CREATE, job_id=1)
    store.jobs.transition(a.id, JobEvent.REFUND)
    store.jobs.transition(b.id, JobEvent.CREATE, job_id=2)
    assert [j.id for j in store.jobs.in_flight(Role.PROVIDER)] == [b.id]
    assert [j.id for j in store.jobs.in_flight(Role.CLIENT)] == [c.id]
    store.jobs.abandon(c.id, "every provider declined: price")
    assert store.jobs.in_flight(Role.CLIENT) == []
    with pytest.raises(StoreError, match="only unmatched"):
        store.jobs.abandon(b.id, "no")
    assert [j.id for j in store.jobs.select(states=[JobState.MATCHED])] == [b.id]
    assert [j.id for j in store.jobs.select(in_flight=False)] == [c.id, a.id]
    assert [j.id for j in store.jobs.select(limit=2)] == [c.id, b.id]
    assert [j.id for j in store.jobs.select(before=b.id)] == [a.id]
    assert store.jobs.counts() == {
        (Role.PROVIDER, JobState.REFUNDED): 1,
        (Role.PROVIDER, JobState.MATCHED): 1,
        (Role.CLIENT, JobState.NONE): 1,
    }


def test_tx_hashes_and_result_once(store: Store) -> None:
    job = store.jobs.create(new_job(Role.PROVIDER))
    job = store.jobs.transition(job.id, JobEvent.CREATE, job_id=3)
    job = store.jobs.record_tx(job.id, JobEvent.SUBMIT, TX1.upper().replace("0X", "0x"))
    assert job.tx_hashes == {"submitResult": TX1}
    out = h("out")
    att = encode(attestation(3, job.spec_hash, out))
    job = store.jobs.set_result(job.id, ContentId(out), att)
    assert job.attestation == att and job.output_cid == ContentId(out)
    assert store.jobs.set_result(job.id, ContentId(out), att) == job  # idempotent
    other = encode(attestation(3, job.spec_hash, h("other")))
    with pytest.raises(StoreError, match="different attestation"):
        store.jobs.set_result(job.id, ContentId(h("other")), other)
    with pytest.raises(StoreError, match="another output"):
        store.jobs.set_result(job.id, ContentId(h("x")), other)
    with pytest.raises(StoreError, match="job 4"):
        store.jobs.set_result(job.id, ContentId(out), encode(attestation(4, job.spec_hash, out)))
    with pytest.raises(StoreError, match="not a valid attestation"):
        store.jobs.set_result(job.id, ContentId(out), b"\x80garbage")
    assert store.jobs.get(job.id).attestation == att
    assert store.jobs.small_output(job.id) is None  # no bytes were given


def test_a_small_output_is_kept_with_its_attestation(store: Store) -> None:
    job = store.jobs.create(new_job(Role.PROVIDER))
    job = store.jobs.transition(job.id, JobEvent.CREATE, job_id=3)
    data = b"safetensors bytes of a small output"
    cid = cid_of(data)
    att = encode(attestation(3, job.spec_hash, cid.digest))
    # bytes that are not that output, or too many to keep in a row, change nothing
    with pytest.raises(StoreError, match="not that output"):
        store.jobs.set_result(job.id, cid, att, data=data + b"!")
    big = bytes(MAX_SMALL_OUTPUT + 1)
    with pytest.raises(StoreError, match="too large"):
        store.jobs.set_result(
            job.id, cid_of(big), encode(attestation(3, job.spec_hash, cid_of(big).digest)), data=big
        )
    assert store.jobs.get(job.id).attestation is None
    store.jobs.set_result(job.id, cid, att, data=data)
    assert store.jobs.small_output(job.id) == data
    with pytest.raises(StoreError, match="no job"):
        store.jobs.small_output(job.id + 100)


def test_transaction_is_atomic(store: Store) -> None:
    job = store.jobs.create(new_job())
    store.chain.advance(5, h("b5"))

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction():
        store.jobs.transition(job.id, JobEvent.CREATE, job_id=1, block=6)
        store.chain.advance(6, h("b6"))
        raise Boom
    assert store.jobs.get(job.id).state is JobState.NONE
    assert store.jobs.history(job.id) == []
    assert store.chain.get() == store.chain.get() and store.chain.get().block == 5  # type: ignore[union-attr]
    with store.transaction():
        store.jobs.transition(job.id, JobEvent.CREATE, job_id=1, block=6)
        store.chain.advance(6, h("b6"))
    assert store.jobs.get(job.id).state is JobState.MATCHED
    assert store.chain.get().block == 6  # type: ignore[union-attr]


def test_offers(store: Store) -> None:
    o = offer(0, nonce=1, price=500)
    assert store.offers.put(o) is True
    assert store.offers.put(o) is False
    record = store.offers.get(o.provider, 1)
    assert record is not None and record.encoded == encode(o) and record.price == 500
    store.offers.put(offer(1, nonce=1, price=2000, tier=3))
    store.offers.put(offer(2, nonce=1, price=BIG, expiry=10, device_class="nvidia-h200"))
    now = 1_000
    assert [r.price for r in store.offers.select(now=now)] == [500, 2000]
    assert [r.price for r in store.offers.select(now=now, include_expired=True)] == [500, 2000, BIG]
    assert [r.price for r in store.offers.select(now=now, max_price=1999)] == [500]
    assert [r.sandbox_tier for r in store.offers.select(now=now, min_tier=3)] == [3]
    assert store.offers.select(now=0, device_class="nvidia-h200")[0].price == BIG
    assert store.offers.select(now=now, provider=PROVIDERS[1].address)[0].price == 2000
    assert store.offers.prune(now) == 1
    # per-provider bound keeps the highest nonces
    for n in range(2, 20):
        store.offers.put(offer(0, nonce=n))
    nonces = [r.nonce for r in store.offers.select(now=now, provider=PROVIDERS[0].address)]
    assert sorted(nonces) == list(range(12, 20))
    with pytest.raises(StoreError, match="expiry"):
        store.offers.put(offer(0, nonce=99, expiry=2**63))


def test_offer_total_bound(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite", max_offers=3) as small:
        for p, e in [(0, 100), (1, 300), (2, 200)]:
            small.offers.put(offer(p, expiry=e))
        small.offers.put(offer(0, nonce=2, expiry=400))
        assert sorted(r.expiry for r in small.offers.select(now=0)) == [200, 300, 400]


def test_blobs(store: Store) -> None:
    cid = cid_of(b"weights")
    record = store.blobs.add(cid, 7, "/data/blobs/w", pinned_until=100)
    assert (record.size, record.pinned_until, record.jobs) == (7, 100, ())
    assert store.blobs.add(cid, 7, "/data/blobs/w").pinned_until == 100
    with pytest.raises(StoreError, match="another size"):
        store.blobs.add(cid, 8, "/data/blobs/w")
    job = store.jobs.create(new_job())
    store.blobs.pin(cid, job.id, 500)
    store.blobs.pin(cid, job.id, 300)  # pins only grow
    with pytest.raises(StoreError, match="no job"):
        store.blobs.pin(cid, 999, 10)
    with pytest.raises(StoreError, match="not indexed"):
        store.blobs.pin(cid_of(b"nope"), job.id, 10)
    other = store.blobs.add(cid_of(b"old"), 3, "/data/blobs/o")
    record = store.blobs.get(cid)
    assert record is not None and (record.pinned_until, record.jobs) == (500, (job.id,))
    assert [b.cid for b in store.blobs.collectable(now=400)] == [other.cid]
    assert {b.cid for b in store.blobs.collectable(now=501)} == {cid, other.cid}
    assert store.blobs.remove(cid) is True
    assert store.blobs.get(cid) is None
    with pytest.raises(StoreError, match="path"):
        store.blobs.add(cid, 1, "x" * 5000)


def test_attestations_and_equivocation(store: Store) -> None:
    a = attestation(9, h("spec"), h("out1"))
    assert store.attestations.add(a, "self") is True
    assert store.attestations.add(a, "chain") is False
    assert store.attestations.equivocations(9) == {}
    b = attestation(9, h("spec"), h("out2"))
    store.attestations.add(b, "peer:16Uiu2HAm")
    store.attestations.add(attestation(9, h("spec"), h("out3"), provider=1), "chain")
    proof = store.attestations.equivocations(9)
    assert list(proof) == [PROVIDERS[0].address]
    assert {x.output_hash for x in proof[PROVIDERS[0].address]} == {h("out1"), h("out2")}
    assert len(store.attestations.for_job(9, PROVIDERS[1].address)) == 1
    with pytest.raises(StoreError, match="source"):
        store.attestations.add(a, "bad source!")


def test_chain_cursor_and_reorg(store: Store) -> None:
    assert store.chain.get() is None
    for n in range(1, 11):
        store.chain.advance(n, h(f"b{n}"), keep=5)
    assert store.chain.get().block == 10  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="cannot move"):
        store.chain.advance(10, h("x"))
    assert store.chain.block_hash(6) == h("b6")
    assert store.chain.block_hash(5) is None  # older than keep
    cursor = store.chain.rewind(7)
    assert (cursor.block, cursor.block_hash) == (7, h("b7"))
    assert store.chain.block_hash(8) is None
    with pytest.raises(StoreError, match="deeper than reorg_depth"):
        store.chain.rewind(2)
    store.chain.advance(8, h("b8'"))
    assert store.chain.get().block_hash == h("b8'")  # type: ignore[union-attr]
    assert store.chain.get("other") is None
    # set() moves either way (a follower that handles reorgs itself), clear() forgets
    assert store.chain.set(4, h("b4'")).block == 4
    assert store.chain.block_hash(6) is None and store.chain.block_hash(4) == h("b4'")
    assert store.chain.set(20, h("b20")).block == 20
    store.chain.clear()
    assert store.chain.get() is None and store.chain.block_hash(6) is None


def test_committee_votes_survive_a_reopen_and_the_first_vote_binds(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    committee, member, other = b"\xcc" * 20, b"\x01" * 20, b"\x02" * 20
    salt, commitment = b"\x5a" * 32, b"\xc0" * 32
    with Store(path) as s:
        first = s.votes.remember(committee, 7, member, fault=True, salt=salt, commitment=commitment)
        assert (first.fault, first.salt, first.commitment) == (True, salt, commitment)
        # a second decision for the same seat (e.g. after a restart) does not replace it
        again = s.votes.remember(
            committee, 7, member, fault=False, salt=b"\x00" * 32, commitment=b"\x11" * 32
        )
        assert again == first
        s.votes.remember(committee, 8, other, fault=False, salt=salt, commitment=commitment)
        s.votes.record_commit(committee, 7, member, TX1)
    with Store(path) as s:  # what a restarted verifier reads back
        vote = s.votes.get(committee, 7, member)
        assert vote is not None and vote.salt == salt and vote.fault and vote.commit_tx == TX1
        assert [v.job_id for v in s.votes.unrevealed(committee, member)] == [7]
        assert s.votes.get(b"\xcd" * 20, 7, member) is None  # another deployment
        s.votes.mark_revealed(committee, 7, member)
        assert s.votes.unrevealed(committee, member) == []
        assert s.votes.get(committee, 7, member).revealed_at is not None  # type: ignore[union-attr]
    with Store(path) as s, pytest.raises(StoreError):
        s.votes.remember(committee, 9, member, fault=True, salt=b"short", commitment=commitment)
    with Store(path) as s, pytest.raises(StoreError):
        s.votes.remember(committee, -1, member, fault=True, salt=salt, commitment=commitment)
    with Store(path) as s:
        assert s.votes.get(committee, 9, member) is None


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    with Store(path) as s:
        job = s.jobs.create(new_job())
        s.jobs.transition(job.id, JobEvent.CREATE, job_id=1, tx_hash=TX1)
        s.chain.advance(3, h("b3"))
    with Store(path) as s:
        assert s.jobs.get(job.id).state is JobState.MATCHED
        assert replay(s, job.id) is JobState.MATCHED
        assert s.chain.get().block == 3  # type: ignore[union-attr]


def test_upgrade_from_v1(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Store(path, migrate_to=1) as old:
        assert old.schema_version == 1
        conn = old._db.db
        conn.execute(
            "INSERT INTO jobs (role, spec_hash, state, max_payment, price, deadline,"
            " created_at, updated_at, job_id) VALUES"
            " ('provider', ?, 1, ?, ?, 99, 1, 1, 42)",
            ("0x" + "11" * 32, f"{BIG:020d}", f"{5:020d}"),
        )
        conn.execute(
            "INSERT INTO job_history (job, event, from_state, to_state, at)"
            " VALUES (1, 'CREATE', 0, 1, 1)"
        )
        conn.execute("INSERT INTO chain_cursor VALUES ('escrow', 77, ?, 1)", ("0x" + "22" * 32,))
    with Store(path) as new:
        assert new.schema_version == SCHEMA_VERSION
        job = new.jobs.get(1)
        assert (job.state, job.job_id, job.max_payment, job.tx_hashes) == (
            JobState.MATCHED,
            42,
            BIG,
            {},
        )
        assert new.chain.block_hash(77) == bytes.fromhex("22" * 32)  # the v3 data step
        new.jobs.transition(1, JobEvent.SUBMIT, tx_hash=TX1)  # new columns/indexes work
        new.jobs.record_tx(1, JobEvent.FINALIZE, TX2)
        assert replay(new, 1) is JobState.SUBMITTED
        assert new.attestations.add(attestation(42, h("s"), h("o")), "self")
        c, m = b"\x0c" * 20, b"\x0d" * 20  # the v4 table
        new.votes.remember(c, 42, m, fault=False, salt=b"\x01" * 32, commitment=b"\x02" * 32)
        assert [v.job_id for v in new.votes.unrevealed(c, m)] == [42]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer than this gpunet supports"):
        Store(path)


def test_failed_migration_leaves_old_version(tmp_path: Path) -> None:
    import sqlite_utils

    path = tmp_path / "m.sqlite"
    Store(path, migrate_to=1).close()
    db = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None))
    db.execute("CREATE TABLE attestations (x)")  # makes migration 2 fail half-way
    with pytest.raises(sqlite3.OperationalError):
        migrate(db)
    assert version_of(db) == 1
    assert "tx_hashes" not in db["jobs"].columns_dict  # the ALTER was rolled back
    db.close()


async def _other_task_inside(store: Store) -> None:
    import asyncio

    with store.transaction():

        async def intruder() -> None:
            store.jobs.create(new_job(label="intruder"))

        with pytest.raises(RuntimeError, match="another asyncio task"):
            await asyncio.create_task(intruder())


def test_awaiting_inside_a_transaction_is_caught(store: Store) -> None:
    import asyncio

    asyncio.run(_other_task_inside(store))
    assert store.jobs.count() == 0


def test_invalid_spec_is_refused(store: Store) -> None:
    bad = spec("z", arch="has space")
    with pytest.raises(StoreError, match="invalid job spec"):
        store.jobs.create(new_job(spec=bad, spec_hash=bad.spec_hash()))
    assert store.jobs.count() == 0


def test_threads_and_second_connection(tmp_path: Path) -> None:
    """One Store shared by threads (the API's worker threads) and a second connection
    to the same file (another process, e.g. the CLI) write concurrently without errors."""
    from concurrent.futures import ThreadPoolExecutor

    a = Store.open(tmp_path)
    b = Store.open(tmp_path)

    def work(store: Store, prefix: str) -> None:
        for i in range(40):
            job = store.jobs.create(new_job(label=f"{prefix}{i}"))
            store.jobs.transition(job.id, JobEvent.CREATE, job_id=job.id)
            store.jobs.select(limit=5)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(work, s, p) for s, p in [(a, "a"), (a, "b"), (b, "c"), (b, "d")]]
        for f in futures:
            f.result()  # re-raises any error of the thread
    assert a.jobs.count() == 160
    assert all(replay(a, j.id) is JobState.MATCHED for j in a.jobs.select(limit=1000))
    a.close()
    b.close()
