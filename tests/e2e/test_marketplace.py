"""End to end in one process: real anvil, real libp2p, the real sandbox, provider + client."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import msgspec
import pytest
import torch

from node.chain.anvil import Anvil
from node.chain.devnet import TOKEN, Actor, Devnet
from node.chain.escrow import GAS_CREATE_JOB, NewJob
from node.client import AsyncClient
from node.errors import NoMatchingOffer, ProviderDeclined
from node.p2p.config import P2PConfig
from node.p2p.wire import JobCreatedNotice
from node.provider import ProviderDaemon, ProviderSettings
from node.runtime import detect, formats
from node.runtime.pool import PoolConfig, WorkerPool
from node.store.records import Role
from node.store.store import Store
from protocol.content import cid_of
from protocol.lifecycle import JobState
from protocol.messages import (
    DeclineReason,
    JobAccept,
    JobRequest,
    JobSpec,
    ModelRef,
    ResultManifest,
)

MLP = {"in": 12, "hidden": 16, "depth": 1, "out": 4}
PRICE = 10**15

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def devnet() -> Iterator[Devnet]:
    with Anvil() as anvil:
        yield Devnet(anvil.url)


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    report = detect.check()
    if report.tier < 2:
        pytest.skip(f"this host gives sandbox tier {report.tier}; the e2e path needs 2")
    with WorkerPool(PoolConfig(slots=2, threads=1, timeout_s=30)) as p:
        yield p


@contextlib.asynccontextmanager
async def provider(
    devnet: Devnet, pool: WorkerPool, tmp: Path, actor: Actor, **settings: object
) -> AsyncIterator[ProviderDaemon]:
    dom = devnet.escrow.domain
    with Store(tmp / f"{actor.identity.peer_id[-8:]}.sqlite") as store:
        daemon = ProviderDaemon(
            actor.identity,
            rpc_url=devnet.rpc.url,
            escrow_address=devnet.escrow.address,
            p2p_config=P2PConfig(chain_id=dom.chain_id, contract=dom.verifying_contract),
            pool=pool,
            store=store,
            data_dir=tmp / actor.identity.peer_id[-8:],
            settings=ProviderSettings(
                known_archs=frozenset({"mlp@1"}),
                offer_interval_s=1,
                **{"price_per_gpu_second": PRICE, **settings},  # type: ignore[arg-type]
            ),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.ready.wait(), 60)
        try:
            yield daemon
        finally:
            stop.set()
            await task


@contextlib.asynccontextmanager
async def client(
    devnet: Devnet,
    tmp: Path,
    providers: list[ProviderDaemon],
    name: str = "client",
    poll_interval_s: float = 0.05,
) -> AsyncIterator[AsyncClient]:
    actor = devnet.actor(deposit=100 * TOKEN)
    dom = devnet.escrow.domain
    c = AsyncClient(
        actor.identity,
        rpc_url=devnet.rpc.url,
        escrow_address=devnet.escrow.address,
        p2p_config=P2PConfig(chain_id=dom.chain_id, contract=dom.verifying_contract),
        data_dir=tmp / name,
        poll_interval_s=poll_interval_s,
    )
    async with c:
        for p in providers:
            await c.connect((await p.p2p.addrs())[0])
        assert await c.wait_for_offers(len(providers), 30) == len(providers)
        yield c


def _local(weights: bytes, x: torch.Tensor) -> torch.Tensor:
    """The same model run bare, in this process."""
    model = formats.load_model("mlp@1", MLP, weights)
    return formats.run("mlp@1", MLP, model, formats.save_safetensors({"x": x}))["logits"]


async def _accepted_job(c: AsyncClient, daemon: ProviderDaemon, seed: int) -> NewJob:
    """Send ``daemon`` a job request from ``c`` directly; the createJob arguments of its
    accept."""
    weights = formats.random_weights("mlp@1", MLP, seed=seed)
    inputs = formats.save_safetensors({"x": torch.ones(1, 12)})
    w_cid, i_cid = c.blobs.put_bytes(weights), c.blobs.put_bytes(inputs)
    provider_address = daemon.identity.address
    c._grants[(provider_address, w_cid.digest)] = 1  # what run() grants per request
    c._grants[(provider_address, i_cid.digest)] = 1
    spec = JobSpec(
        model=ModelRef(arch="mlp@1", config=MLP, weights=w_cid.digest, weights_size=len(weights)),
        inputs=i_cid.digest,
        inputs_size=len(inputs),
    )
    request = JobRequest(
        request_id=seed.to_bytes(16, "big"),
        client=c.identity.address,
        spec=spec,
        max_price_per_gpu_second=2 * PRICE,
        max_payment=2 * PRICE * 10,
        deadline=int(time.time()) + 300,
    )
    accept = await c.p2p.request_job(daemon.p2p.peer_id, request)
    assert isinstance(accept, JobAccept)
    return NewJob(
        offer=accept.offer.signed_data(),
        offer_sig=accept.offer.signature,
        spec_hash=accept.spec_hash,
        max_payment=request.max_payment,
        deadline=request.deadline,
        lane=seed,
    )


async def _until(cond: Callable[[], bool], within: float = 10.0) -> bool:
    """Whether ``cond()`` holds within ``within`` seconds (checked every 20 ms)."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _states_become(daemon: ProviderDaemon, want: list[JobState]) -> list[JobState]:
    """The daemon's job states once they are ``want`` (or after 10 s)."""
    states: list[JobState] = []
    for _ in range(200):
        states = [j.state for j in daemon.store.jobs.select(limit=10)]
        if states == want:
            break
        await asyncio.sleep(0.05)
    return states


def test_happy_path_pays_the_provider_and_returns_the_right_tensor(
    devnet: Devnet, pool: WorkerPool
) -> None:
    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov = devnet.provider()
        async with provider(devnet, pool, tmp, prov) as daemon, client(devnet, tmp, [daemon]) as c:
            before_client = devnet.escrow.balance_of(c.identity.address)
            before_provider = devnet.escrow.balance_of(prov.address)
            weights = formats.random_weights("mlp@1", MLP, seed=3)
            x = torch.randn(5, 12, generator=torch.Generator().manual_seed(4))
            result = await c.run(("mlp@1", MLP, weights), {"x": x}, max_price=2 * PRICE)
            assert result.provider == prov.address
            assert torch.allclose(result.outputs["logits"], _local(weights, x), atol=1e-5)
            assert cid_of(result.output_bytes).digest == result.attestation.output_hash
            result.attestation.verify()
            assert result.cost == PRICE * result.attestation.metered_millis // 1000
            assert devnet.escrow.balance_of(prov.address) == before_provider + result.cost
            assert devnet.escrow.balance_of(c.identity.address) == before_client - result.cost
            # the provider learns of the acceptance from the chain, asynchronously
            states: list[JobState] = []
            for _ in range(200):
                states = [j.state for j in daemon.store.jobs.select(limit=10)]
                if states == [JobState.FINALIZED]:
                    break
                await asyncio.sleep(0.05)
            assert states == [JobState.FINALIZED]

    asyncio.run(scenario())


def test_result_hints_save_a_look_up_and_wrong_ones_cost_no_wrong_payment(
    devnet: Devnet, pool: WorkerPool
) -> None:
    """The manifest names the provider's ``submitResult`` (``submit_tx``), sent as it is
    signed: the client reads that receipt instead of looking ``ResultSubmitted`` up.
    A wrong transaction hash costs the client one look-up; a wrong ``challenge_end``
    hint costs it one reverted ``acceptResult``; either way it then checks the chain
    and pays the right job, and the provider is paid exactly what it earned."""

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov = devnet.provider()
        # the client's follower polls once a minute: it never finds the event first
        async with (
            provider(devnet, pool, tmp, prov) as daemon,
            client(devnet, tmp, [daemon], poll_interval_s=60) as c,
        ):
            weights = formats.random_weights("mlp@1", MLP, seed=3)
            x = torch.randn(3, 12, generator=torch.Generator().manual_seed(5))
            job = ("mlp@1", MLP, weights)
            delivered: list[ResultManifest] = []
            honest_flush = daemon._deliverers._flush

            async def spy(peer: str, manifests: list[ResultManifest]) -> list[object]:
                # as delivered before the submission was mined (usually the case; a
                # delivery that runs late also names the mined event's challenge_end)
                unmined = [msgspec.structs.replace(m, challenge_end=0) for m in manifests]
                delivered.extend(unmined)
                return await honest_flush(peer, unmined)

            daemon._deliverers = type(daemon._deliverers)(spy)
            honest = await c.run(job, {"x": x}, max_price=2 * PRICE)
            # the manifest named the very transaction that submitted the result
            (m,) = delivered
            tx = await asyncio.to_thread(devnet.rpc.receipt, m.submit_tx)
            assert tx is not None and tx.status == 1
            assert [
                int(ev.fields["jobId"])
                for ev in devnet.escrow.decode_events(tx)
                if ev.name == "ResultSubmitted"
            ] == [honest.job_id]
            assert c._submitted_lookup.items == 0  # accepted from that receipt alone
            assert c._submit_receipts.items == 1
            assert c._reliability[prov.address].failures == 0

            async def other_tx(peer: str, manifests: list[ResultManifest]) -> list[object]:
                # names the job's createJob instead: a real transaction, but no result in it
                wrong = [
                    msgspec.structs.replace(
                        m, submit_tx=honest.receipts["createJob"].receipt.tx_hash, challenge_end=0
                    )
                    for m in manifests
                ]
                return await honest_flush(peer, wrong)

            daemon._deliverers = type(daemon._deliverers)(other_tx)
            before = devnet.escrow.balance_of(prov.address)
            result = await c.run(job, {"x": x}, max_price=2 * PRICE)
            # no result in that receipt: one look-up found the real one
            assert c._submitted_lookup.items == 1
            assert c._submit_receipts.items == 2
            assert torch.equal(result.outputs["logits"], honest.outputs["logits"])
            assert devnet.escrow.balance_of(prov.address) == before + result.cost > before

            async def lying(peer: str, manifests: list[ResultManifest]) -> list[object]:
                wrong = [
                    msgspec.structs.replace(m, challenge_end=int(time.time()) + 10**6)
                    for m in manifests
                ]
                return await honest_flush(peer, wrong)

            daemon._deliverers = type(daemon._deliverers)(lying)
            before = devnet.escrow.balance_of(prov.address)
            failures = c._reliability[prov.address].failures
            result = await c.run(job, {"x": x}, max_price=2 * PRICE)
            # the revert sent it to the chain, and counts against the provider
            assert c._reliability[prov.address].failures == failures + 1
            assert torch.equal(result.outputs["logits"], honest.outputs["logits"])
            assert (
                result.receipts["acceptResult"].named("JobFinalized")[0]["jobId"] == result.job_id
            )
            assert devnet.escrow.balance_of(prov.address) == before + result.cost > before

    asyncio.run(scenario())


def test_fast_path_hints_are_checked_against_the_chain(devnet: Devnet, pool: WorkerPool) -> None:
    """A JobCreatedNotice starts a job only for a real JobCreated of the sending client;
    request blobs are served to the asked provider only."""

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov = devnet.provider()
        # the follower polls once at start, then not for a minute, and no logs are
        # pushed: only notices start jobs
        async with (
            provider(devnet, pool, tmp, prov, poll_interval_s=60, ws_url="") as daemon,
            client(devnet, tmp, [daemon]) as c,
            client(devnet, tmp / "s", [daemon]) as stranger,
        ):
            # no request was sent from `c`: the provider may not fetch its blobs
            w_cid = c.blobs.put_bytes(formats.random_weights("mlp@1", MLP, seed=5))
            i_cid = c.blobs.put_bytes(formats.save_safetensors({"x": torch.ones(1, 12)}))
            assert not await c._authorize(daemon.p2p.peer_id, w_cid, 0)
            c._grants[(prov.address, w_cid.digest)] = 1  # what run() grants per request
            c._grants[(prov.address, i_cid.digest)] = 1
            assert await c._authorize(daemon.p2p.peer_id, i_cid, 0)
            assert not await c._authorize(stranger.p2p.peer_id, i_cid, 0)
            new = await _accepted_job(c, daemon, seed=5)
            job, created = await asyncio.to_thread(c.escrow.create_job, new)
            real = JobCreatedNotice(job_id=job.job_id, tx_hash=created.receipt.tx_hash)
            # the right transaction, but sent by another peer than its client: ignored
            await stranger.p2p.notify_created(daemon.p2p.peer_id, real)
            # the sending client, but a transaction that is no JobCreated: ignored
            other = await asyncio.to_thread(c.escrow.withdraw, 1)
            fake = JobCreatedNotice(job_id=job.job_id, tx_hash=other.receipt.tx_hash)
            await c.p2p.notify_created(daemon.p2p.peer_id, fake)
            await asyncio.sleep(0.5)
            assert daemon._pending_count == 1 and daemon._queue.empty()
            assert [j.state for j in daemon.store.jobs.select(limit=10)] == [JobState.NONE]
            # the real notice from the client starts the job, long before the next poll
            await c.p2p.notify_created(daemon.p2p.peer_id, real)
            assert await _states_become(daemon, [JobState.SUBMITTED]) == [JobState.SUBMITTED]
            assert daemon._pending_count == 0

    asyncio.run(scenario())


def test_a_notice_sent_before_its_transaction_is_mined(devnet: Devnet, pool: WorkerPool) -> None:
    """Clients notify as they sign: the provider waits for the receipt (job id 0: every
    job of the transaction for it), and gives up on one that never comes."""

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov = devnet.provider()
        async with (
            provider(
                devnet, pool, tmp, prov, poll_interval_s=60, notice_wait_s=1.5, ws_url=""
            ) as daemon,
            client(devnet, tmp, [daemon]) as c,
        ):
            new = await _accepted_job(c, daemon, seed=7)
            # a notice for a transaction that never exists: polled for, then dropped
            await c.p2p.notify_created(
                daemon.p2p.peer_id, JobCreatedNotice(job_id=0, tx_hash=bytes(32))
            )
            waiting = {c.identity.address: 1}
            assert await _until(lambda: daemon._notice_waits == waiting)
            assert await _until(lambda: daemon._notice_waits == {})  # after ~1.5 s
            assert daemon._queue.empty()
            devnet.rpc.request("evm_setAutomine", [False])
            try:
                fn = c.escrow.abi.functions["createJob"]
                data = fn.encode(*c.escrow._new_tuple(new))
                signer = c.escrow.signer
                assert signer is not None
                tx_hash = await asyncio.to_thread(
                    signer.send, c.escrow.address, data, gas=GAS_CREATE_JOB
                )
                await c.p2p.notify_created(
                    daemon.p2p.peer_id, JobCreatedNotice(job_id=0, tx_hash=tx_hash)
                )
                # the provider polls for the receipt
                assert await _until(lambda: daemon._notice_waits == waiting)
                assert [j.state for j in daemon.store.jobs.select(limit=10)] == [JobState.NONE]
                devnet.rpc.request("evm_mine", [])
            finally:
                devnet.rpc.request("evm_setAutomine", [True])
            # started by the notice (the follower polls once a minute)
            assert await _states_become(daemon, [JobState.SUBMITTED]) == [JobState.SUBMITTED]
            assert await _until(lambda: daemon._notice_waits == {})

    asyncio.run(scenario())


def test_a_pushed_log_starts_the_job_without_a_notice(devnet: Devnet, pool: WorkerPool) -> None:
    """With the chain node's websocket (anvil's, found from the RPC URL), a JobCreated is
    acted on as it is mined: no notice, and the follower would not poll for a minute."""

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov = devnet.provider()
        async with (
            provider(devnet, pool, tmp, prov, poll_interval_s=60) as daemon,
            client(devnet, tmp, [daemon]) as c,
        ):
            sub = daemon._subscription
            assert sub is not None
            assert await _until(lambda: sub.live)
            new = await _accepted_job(c, daemon, seed=9)
            await asyncio.to_thread(c.escrow.create_job, new)  # and no notice is sent
            assert await _states_become(daemon, [JobState.SUBMITTED]) == [JobState.SUBMITTED]
            assert sub.pushed >= 1 and sub.dropped == 0

    asyncio.run(scenario())


def test_decline_falls_back_to_the_next_provider(devnet: Devnet, pool: WorkerPool) -> None:
    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        cheap, dear = devnet.provider(), devnet.provider()
        async with (
            provider(
                devnet, pool, tmp, cheap, decline_every=1, price_per_gpu_second=PRICE // 2
            ) as a,
            provider(devnet, pool, tmp, dear) as b,
            client(devnet, tmp, [a, b]) as c,
        ):
            weights = formats.random_weights("mlp@1", MLP, seed=5)
            result = await c.run(("mlp@1", MLP, weights), {"x": torch.ones(2, 12)}, max_price=PRICE)
            assert result.provider == dear.address
            assert [reason for _, reason in result.declined_by] == [DeclineReason.CAPACITY]
            # one record, written while the first request was out, bound to the taker
            (job,) = c.store.jobs.select(limit=10)
            assert job.counterparty == dear.address and job.price == PRICE
            assert job.state is JobState.FINALIZED and job.job_id == result.job_id
            assert job.abandoned_at is None
            # when every provider declines, the record is closed with the reason
            async with (
                provider(devnet, pool, tmp, devnet.provider(), decline_every=1) as only,
                client(devnet, tmp, [only], name="alone") as lone,
            ):
                with pytest.raises(ProviderDeclined):
                    await lone.run(
                        ("mlp@1", MLP, weights), {"x": torch.ones(2, 12)}, max_price=PRICE
                    )
                (closed,) = lone.store.jobs.select(limit=10)
                assert closed.state is JobState.NONE and closed.abandoned_at is not None
                assert "ProviderDeclined" in (closed.last_error or "")
                assert lone.store.jobs.in_flight(Role.CLIENT) == []

    asyncio.run(scenario())


def test_no_matching_offer_says_why(devnet: Devnet, pool: WorkerPool) -> None:
    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        async with (
            provider(devnet, pool, tmp, devnet.provider()) as p,
            client(devnet, tmp, [p]) as c,
        ):
            weights = formats.random_weights("mlp@1", MLP, seed=6)
            with pytest.raises(NoMatchingOffer) as info:
                await c.run(("mlp@1", MLP, weights), {"x": torch.ones(1, 12)}, max_price=PRICE - 1)
            assert f"price {PRICE}/GPU-s above max {PRICE - 1}" in str(info.value)
            with pytest.raises(NoMatchingOffer, match="sandbox tier"):
                await c.run(
                    ("mlp@1", MLP, weights), {"x": torch.ones(1, 12)}, max_price=PRICE, min_tier=3
                )

    asyncio.run(scenario())


def test_three_providers_fifty_concurrent_jobs_conserve_money(
    devnet: Devnet, pool: WorkerPool
) -> None:
    """50 concurrent jobs of one client over 3 providers, and 12 of a second client with
    the same model at the same time: concurrent jobs share streams, transactions and
    sandbox children, but a child never holds two clients' jobs."""
    batches: list[set[bytes]] = []  # the inputs of every run_batch call
    run_batch = pool.run_batch

    def recording(reqs):  # type: ignore[no-untyped-def]
        batches.append({r.inputs for r in reqs})
        return run_batch(reqs)

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        actors = [devnet.provider() for _ in range(3)]
        escrow_before = devnet.token_balance_of_escrow()
        async with (
            provider(devnet, pool, tmp, actors[0], max_concurrent_jobs=4, queue_size=64) as a,
            provider(devnet, pool, tmp, actors[1], max_concurrent_jobs=4, queue_size=64) as b,
            provider(devnet, pool, tmp, actors[2], max_concurrent_jobs=4, queue_size=64) as d,
            client(devnet, tmp, [a, b, d]) as c,
            client(devnet, tmp, [a, b, d], name="other") as other,
        ):
            earned_before = sum(devnet.escrow.balance_of(p.address) for p in actors)
            weights = formats.random_weights("mlp@1", MLP, seed=9)
            job = ("mlp@1", MLP, weights)
            xs = [torch.randn(2, 12, generator=torch.Generator().manual_seed(i)) for i in range(62)]
            results = await asyncio.gather(
                *(c.run(job, {"x": x}, max_price=PRICE) for x in xs[:50]),
                *(other.run(job, {"x": x}, max_price=PRICE) for x in xs[50:]),
            )
            assert len({r.job_id for r in results}) == 62
            assert {r.provider for r in results} == {p.address for p in actors}
            for x, r in zip(xs, results, strict=True):
                assert torch.allclose(r.outputs["logits"], _local(weights, x), atol=1e-5)
            earned = sum(devnet.escrow.balance_of(p.address) for p in actors) - earned_before
            assert earned == sum(r.cost for r in results)
            assert devnet.token_balance_of_escrow() == escrow_before + 200 * TOKEN  # deposits
            # batched: fewer createJob(s) transactions and sandbox children than jobs
            assert c._creator.batches < c._creator.items == 50
            runs = sum(p._runners.items for p in (a, b, d))
            assert sum(p._runners.batches for p in (a, b, d)) < runs
            assert max(len(x) for x in batches) > 1
            # no child ever ran jobs of both clients
            mine = {bytes(formats.save_safetensors({"x": x})) for x in xs[:50]}
            for inputs in batches:
                assert inputs <= mine or not inputs & mine

    pool.run_batch = recording  # type: ignore[method-assign]
    try:
        asyncio.run(scenario())
    finally:
        del pool.run_batch


def test_a_small_output_lives_in_the_store_until_its_blob_is_written(
    devnet: Devnet, pool: WorkerPool
) -> None:
    """A small output is committed with its attestation (no file on the job's path) and
    delivered inline; its blob file, written after, is rebuilt from the store by a
    restarted provider if it was lost, so verifiers can still fetch it."""

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov = devnet.provider()
        weights = formats.random_weights("mlp@1", MLP, seed=8)
        x = torch.randn(2, 12, generator=torch.Generator().manual_seed(8))
        async with provider(devnet, pool, tmp, prov) as daemon, client(devnet, tmp, [daemon]) as c:
            # audit mode: the job stays submitted, so a restarted provider resumes it
            result = await c.run(
                ("mlp@1", MLP, weights), {"x": x}, max_price=2 * PRICE, accept=False
            )
            (row,) = [j for j in daemon.store.jobs.select(limit=10) if j.job_id == result.job_id]
            assert (
                row.output_cid is not None
                and row.output_cid.digest == result.attestation.output_hash
            )
            assert daemon.store.jobs.small_output(row.id) == result.output_bytes
            blob = daemon.blobs.path(row.output_cid)
            for _ in range(100):  # written after the delivery, once the submission is mined
                if blob.exists():
                    break
                await asyncio.sleep(0.05)
            assert blob.read_bytes() == result.output_bytes
        blob.unlink()  # lost with a crash before it was written
        async with provider(devnet, pool, tmp, prov) as again:
            assert again.blobs.path(row.output_cid).read_bytes() == result.output_bytes

    asyncio.run(scenario())


def test_an_accept_never_paid_for_leaves_no_blobs_behind(devnet: Devnet, pool: WorkerPool) -> None:
    """A client that asks, lets the provider prefetch its weights and inputs and never
    creates the job must not leave them on the provider's disk (it could name fresh
    blobs of up to ``max_job_bytes`` with every request); a blob a paid job also uses
    stays, as cache."""

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        prov = devnet.provider()
        async with (
            provider(devnet, pool, tmp, prov, accept_ttl_s=3) as daemon,
            client(devnet, tmp, [daemon]) as c,
        ):
            weights = formats.random_weights("mlp@1", MLP, seed=21)
            inputs = formats.save_safetensors({"x": torch.ones(1, 12)})
            w_cid, i_cid = cid_of(weights), cid_of(inputs)
            await _accepted_job(c, daemon, 21)  # never created onchain
            assert await _until(lambda: daemon.blobs.has(w_cid) and daemon.blobs.has(i_cid))
            # a paid job with the same weights (other inputs) while that accept waits
            x = torch.randn(2, 12, generator=torch.Generator().manual_seed(21))
            await c.run(("mlp@1", MLP, weights), {"x": x}, max_price=2 * PRICE)
            # the accept expires: its own inputs go, the weights the paid job used stay
            assert await _until(lambda: not daemon.blobs.has(i_cid), 15)
            assert daemon.blobs.has(w_cid)
            assert list((daemon.blobs.root / "partial").glob("*.part")) == []
            unpaid = [j for j in daemon.store.jobs.select(limit=10) if j.job_id is None]
            assert len(unpaid) == 1 and unpaid[0].abandoned_at is not None

    asyncio.run(scenario())


def test_a_settled_jobs_blobs_are_served_until_its_challenge_window_ends(
    pool: WorkerPool,
) -> None:
    """SPEC.md §9: the client and verifiers of a job may fetch its blobs until its
    challenge window closes, even if the client accepted at once; then the provider
    forgets the job (one entry per paid job used to stay for the daemon's life)."""

    async def scenario(devnet: Devnet) -> None:
        tmp = Path(tempfile.mkdtemp())
        prov = devnet.provider()
        async with provider(devnet, pool, tmp, prov) as daemon, client(devnet, tmp, [daemon]) as c:
            weights = formats.random_weights("mlp@1", MLP, seed=31)
            x = torch.randn(3, 12, generator=torch.Generator().manual_seed(31))
            result = await c.run(("mlp@1", MLP, weights), {"x": x}, max_price=2 * PRICE)
            job_id = result.job_id
            output = cid_of(result.output_bytes)
            assert await _states_become(daemon, [JobState.FINALIZED]) == [JobState.FINALIZED]
            # accepted, so paid and terminal: still served within the window
            await asyncio.sleep(1.5)  # two rounds of the provider's settlement loop
            assert await daemon._authorize(c.identity.peer_id, output, job_id)
            assert job_id in daemon._job_blobs
            devnet.warp(devnet.params.challenge_window + 1)
            assert await _until(lambda: job_id not in daemon._outputs, 10)
            assert job_id not in daemon._job_blobs and not daemon._serve_until
            assert not await daemon._authorize(c.identity.peer_id, output, job_id)

    with Anvil() as anvil:  # its own chain: the warp must not move the other tests' clock
        asyncio.run(scenario(Devnet(anvil.url)))


def test_a_cheaper_provider_without_the_escrows_minimum_stake_is_not_asked(
    devnet: Devnet, pool: WorkerPool
) -> None:
    """createJob reverts for a provider staked under ``minStake``, so the client must
    not spend a request (or a reverted transaction) on its offer, however cheap."""

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        staked = devnet.provider()
        unstaked = devnet.actor(deposit=0, stake=devnet.params.min_stake - 1)
        async with (
            provider(devnet, pool, tmp, staked) as good,
            provider(devnet, pool, tmp, unstaked, price_per_gpu_second=PRICE // 2) as cheap,
            client(devnet, tmp, [good, cheap]) as c,
        ):
            weights = formats.random_weights("mlp@1", MLP, seed=41)
            result = await c.run(("mlp@1", MLP, weights), {"x": torch.ones(2, 12)}, max_price=PRICE)
            assert result.provider == staked.address
            assert cheap.store.jobs.select(limit=10) == []  # never asked
            with pytest.raises(NoMatchingOffer) as info:
                await c.run(("mlp@1", MLP, weights), {"x": torch.ones(2, 12)}, max_price=PRICE // 2)
            low = devnet.params.min_stake - 1
            assert f"stake {low} below required {devnet.params.min_stake}" in str(info.value)

    asyncio.run(scenario())
