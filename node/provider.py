"""The provider daemon: offers, admission, matched jobs, sandboxed runs, attestations, payment.

One asyncio task group owns every background task (offer publishing, the chain
follower, the job workers and settlement); stopping the daemon cancels and
awaits them all. Blocking calls (JSON-RPC, the worker pool) run in threads.

A job's path through the daemon:

1. a ``JobRequest`` arrives over libp2p; :func:`node.admission.admit` decides;
   an accept carries a fresh offer bound to that client (gossiped offers are
   advertisements bound to :data:`ADVERTISEMENT_CLIENT`, which nobody can
   match onchain, so the provider always knows the spec of a job it owes);
   Right after accepting, the daemon starts fetching the job's weights and
   inputs from the client (blobs are kept by content id, so the same weights
   are fetched once);
2. the client's ``JobCreatedNotice`` (checked against the transaction's
   receipt) or, failing that, the chain follower's ``JobCreated`` queues the job;
3. a worker waits for the prefetched blobs, runs them in the sandbox, stores the
   output, signs the attestation and queues the result for submission;
4. settlement submits ready results onchain as soon as one is queued, batching
   whatever accumulates while a transaction is in flight; as that transaction
   is signed each result's ``ResultManifest`` goes to its client, naming it (the
   delivery travels while the transaction is mined). Settlement also
   finalizes jobs whose challenge window has ended; the client's
   ``acceptResult`` pays at once.

The blob store stays under ``max_blob_bytes`` (:mod:`node.blobgc`): what the
daemon still owes or needs is kept (blobs of accepts waiting for their
``createJob``, of queued and running jobs, and every blob a job's client or
verifiers may fetch until its challenge window ends, SPEC.md §9); everything
else, model weights included, is a cache evicted least recently used first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import heapq
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable
from functools import partial
from pathlib import Path

import msgspec

from node.admission import Policy, admit
from node.batching import KeyedBatchers
from node.blobgc import DEFAULT_COLLECT_INTERVAL_S, collect_blobs
from node.chain import lookup
from node.chain.committee import Committee
from node.chain.contract import EventRecord
from node.chain.errors import ChainError
from node.chain.escrow import (
    GAS_SUBMIT_RESULT,
    Escrow,
    ResultArgs,
    gas_finalize_many,
    gas_submit_results,
)
from node.chain.follower import EventFollower, JsonCursorStore
from node.chain.jobs import Job as ChainJob
from node.chain.receipts import receipt_soon
from node.chain.rpc import Log, Rpc, Signer
from node.chain.subscription import LogSubscription
from node.metrics import Metrics
from node.offers_seen import OfferRecorder
from node.p2p.blobstore import DEFAULT_MAX_BYTES, BlobStore
from node.p2p.config import P2PConfig
from node.p2p.jobs import JobProtocolError
from node.p2p.service import P2PService
from node.p2p.wire import JobCreatedNotice, ResultAck
from node.runtime.descriptor import parse as parse_descriptor
from node.runtime.errors import JobError
from node.runtime.pool import RunRequest, RunResult, WorkerPool
from node.store.records import NewJob, Role
from node.store.store import Store
from node.tasks import Stop, sleep_or_stop, wait_within
from protocol.content import ContentId, cid_of
from protocol.identity import Identity, address_from_peer_id
from protocol.lifecycle import JobEvent, JobState
from protocol.messages import (
    ADVERTISEMENT_CLIENT,
    MAX_INLINE_OUTPUT,
    Attestation,
    Capabilities,
    DeclineReason,
    Determinism,
    JobAccept,
    JobDecline,
    JobFormat,
    JobRequest,
    JobSpec,
    Offer,
    ResultManifest,
    decode_as,
    encode,
    spec_bytes,
)

__all__ = ["ProviderDaemon", "ProviderSettings"]

log = logging.getLogger("gpunet.provider")


@dataclasses.dataclass(frozen=True)
class ProviderSettings:
    """What the daemon needs beyond its identity and components."""

    price_per_gpu_second: int
    known_archs: frozenset[str]
    max_concurrent_jobs: int = 2
    queue_size: int = 16
    offer_interval_s: float = 5.0
    offer_ttl_s: int = 60
    poll_interval_s: float = 0.05
    submit_retry_s: float = 0.5  # back-off after a failed submitResult(s)
    deliver_wait_s: float = 30.0  # deliver unsubmitted after this long (the client polls)
    decline_every: int = 0  # demo/testing knob: decline every Nth request (capacity)
    accept_ttl_s: int = 120  # how long an accept waits for its createJob
    # run an accepted job before its createJob lands when a sandbox slot is idle and
    # nothing paid waits, if its weights + inputs are at most this many bytes (0: never)
    speculate_max_bytes: int = 1 << 20
    # how long a job-created notice (sent as the client signs) waits for its receipt
    notice_wait_s: float = 5.0
    # the chain node's websocket for pushed escrow logs (JobCreated the moment it is
    # mined): "auto" derives it from the RPC URL and gives up if it does not work,
    # "" turns it off (notices and the follower remain)
    ws_url: str = "auto"
    # the blob store's bound (node.blobgc) and how often it is collected
    max_blob_bytes: int = DEFAULT_MAX_BYTES
    blob_collect_s: float = DEFAULT_COLLECT_INTERVAL_S


#: How many recently created job ids are remembered to tell a late duplicate
#: (notice and follower both report a job) from a job nobody accepted.
_TAKEN_MEMORY = 65_536
#: settled jobs' serving ends by the chain's clock, asked at least this often (seconds)
CHAIN_CLOCK_S = 5.0
#: Most job-created notices of one client whose receipts are awaited at once.
MAX_NOTICE_WAITS_PER_CLIENT = 16
#: Most result manifests delivered to one client on one stream.
MAX_DELIVERY_BATCH = 32
#: Most jobs one worker takes from the queue at once (their runs may share a child).
MAX_RUN_BATCH = 32
#: Under load (runs queued behind the last one), a run batch waits this long to fill:
#: a child per batch costs ~9 ms of CPU, a job in a shared child ~1 ms.
RUN_LINGER_S = 0.003
#: (spec, weights file, inputs file) of one sandboxed run
_RunItem = tuple[JobSpec, Path, Path]


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """What was done for an accepted job before its ``createJob`` landed."""

    weights: Path
    inputs: Path
    result: RunResult | None = None  # a speculative run, when the pool was idle


Blobs = _Prepared | None  # None: the prefetch failed; the worker fetches again


@dataclasses.dataclass
class _Pending:
    request: JobRequest
    peer: str
    local_id: int
    expires: float
    prefetch: asyncio.Task[Blobs] | None = None


@dataclasses.dataclass
class _Running:
    chain_job: ChainJob
    spec: JobSpec
    peer: str
    local_id: int
    result: ResultArgs | None = None
    attestation: Attestation | None = None
    prefetch: asyncio.Task[Blobs] | None = None
    recorded: asyncio.Task[BaseException | None] | None = None  # the CREATE store write
    created_block: int = 0  # the block of its JobCreated (0: recorded already)
    mined: asyncio.Future[None] | None = None  # resolved when submitResult is mined
    signed: asyncio.Future[bytes] | None = None  # its submitResult's hash, once signed
    small_output: bytes | None = None  # kept in the store row; its blob file comes later


class ProviderDaemon:
    """See the module docstring."""

    def __init__(
        self,
        identity: Identity,
        *,
        rpc_url: str,
        escrow_address: bytes,
        p2p_config: P2PConfig,
        pool: WorkerPool,
        store: Store,
        data_dir: Path,
        settings: ProviderSettings,
        metrics: Metrics | None = None,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.pool = pool
        self.store = store
        self.data_dir = Path(data_dir)
        self.metrics = metrics or Metrics()
        self.rpc = Rpc(rpc_url, on_error=self.metrics.rpc_error)
        self.escrow = Escrow(self.rpc, escrow_address, Signer(self.rpc, identity.private_key))
        self.blobs = BlobStore(self.data_dir / "blobs", max_bytes=settings.max_blob_bytes)
        self.metrics.watch_blobs(self.blobs.usage)
        self.offers_seen = OfferRecorder(store)
        self.p2p = P2PService(
            identity,
            p2p_config,
            on_offer=self.offers_seen,
            on_job_request=self._on_job_request,
            blob_store=self.blobs,
            authorize=self._authorize,
            on_created=self._on_created_notice,
        )
        self._nonces = itertools.count(time.time_ns() // 1000)
        self._requests = itertools.count(1)
        # accepts waiting for their createJob, by (client, spec hash); several accepts of
        # one spec by one client are interchangeable, so each key holds a FIFO
        self._pending: dict[tuple[bytes, bytes], list[_Pending]] = {}
        self._pending_count = 0
        self._queue: asyncio.Queue[_Running] = asyncio.Queue(maxsize=settings.queue_size)
        self._active = 0
        self._to_submit: list[_Running] = []
        self._in_pool = 0  # sandbox runs in flight (paid and speculative)
        self._submit_wake = asyncio.Event()
        self._taken: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._tg: asyncio.TaskGroup | None = None
        self._submitted: dict[int, _Running] = {}
        # jobs queued or running (taken from _pending, not yet in _job_blobs): local id ->
        # the digests they read or write (kept by blob collection)
        self._working: dict[int, set[bytes]] = {}
        self._outputs: dict[int, tuple[bytes, ContentId]] = {}  # job id -> (client, output)
        # --- verification (issue 7): what verifiers of a job may fetch, and who they are
        self._job_blobs: dict[int, frozenset[bytes]] = {}  # job id -> spec, weights, inputs, output
        # jobs settled (paid, slashed), by the end of their challenge window: their
        # entries above are dropped once the chain's time passes it (SPEC.md §9)
        self._serve_until: list[tuple[int, int]] = []  # heap of (challenge end, job id)
        self._chain_clock = (0, -CHAIN_CLOCK_S)  # (chain time, time.monotonic()) last asked
        self._verifier_cache: dict[bytes, tuple[float, bool]] = {}
        # blobs that only accepts not yet funded brought in: digest -> their local ids;
        # deleted when the last of them expires unfunded, kept (as cache) once one is funded
        self._unfunded_blobs: dict[bytes, set[int]] = {}
        self.completed = 0
        self.ready = asyncio.Event()
        self._capabilities: Capabilities | None = None
        self._peers = _PeerLog(self.data_dir / "provider-peers.jsonl")
        self._last_finalize = 0.0
        # results to one client that are ready together share a stream (natural batching)
        self._deliverers: KeyedBatchers[str, ResultManifest, ResultAck] = KeyedBatchers(
            self._send_results, max_batch=MAX_DELIVERY_BATCH
        )
        # runs of one client's jobs for one model that wait together share a sandbox child
        self._runners: KeyedBatchers[tuple[object, ...], _RunItem, RunResult] = KeyedBatchers(
            self._run_many, max_batch=MAX_RUN_BATCH, linger_s=RUN_LINGER_S
        )
        # receipts named by recent notices: a batched createJobs names one tx many times
        self._notice_receipts: collections.OrderedDict[bytes, tuple[EventRecord, ...]] = (
            collections.OrderedDict()
        )
        self._notice_waits: dict[bytes, int] = {}  # client -> receipts awaited for it
        self._subscription: LogSubscription | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def capabilities(self) -> Capabilities:
        """What this provider advertises (from the runtime's detected tier and device)."""
        if self._capabilities is None:
            self._capabilities = Capabilities(
                device_class=self.pool.device_class,
                gpu_model="",
                gpu_memory_mib=0,
                gpu_count=0,
                sandbox_tier=self.pool.tier,
                formats=(JobFormat.CATALOG_V1,),
                determinism=(Determinism.EXACT, Determinism.TOLERANCE),  # CPU: bits, or a bound
                runtimes=("torch-" + parse_descriptor(self.pool.runtime_descriptor(0))["torch"],),
                max_job_bytes=1 << 30,
                max_concurrent_jobs=self.settings.max_concurrent_jobs,
            )
        return self._capabilities

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; every background task is cancelled and awaited."""
        await self.p2p.start()
        try:
            start_block = await asyncio.to_thread(self._start_block)
            follower = EventFollower(
                self.escrow,
                JsonCursorStore(self.data_dir / "provider-cursor.json"),
                start_block=start_block,
            )
            async with asyncio.TaskGroup() as tg:
                # the group also owns blob prefetches and result deliveries
                self._tg = tg
                tg.create_task(self._settle(stop))
                tg.create_task(
                    collect_blobs(
                        self.blobs,
                        self._blobs_owed,
                        stop,
                        interval_s=self.settings.blob_collect_s,
                        on_collect=self.metrics.collected,
                    )
                )
                for _ in range(self.settings.max_concurrent_jobs):
                    tg.create_task(self._worker(stop))
                await self._resume(start_block)
                tg.create_task(self._publish_offers(stop))
                tg.create_task(self._follow(follower, stop))
                if self.settings.ws_url:
                    # only JobCreated naming this provider (topics: jobId, client, provider)
                    created = "0x" + self.escrow.abi.events["JobCreated"].topic0.hex()
                    me = "0x" + bytes(12).hex() + self.identity.address.hex()
                    self._subscription = LogSubscription(
                        self.settings.ws_url,
                        self.escrow.address,
                        self._on_pushed_log,
                        topics=[created, None, None, me],
                        rpc_url=self.rpc.url,
                    )
                    tg.create_task(self._subscription.run())
                self.ready.set()
                await stop.wait()
                raise Stop
        except* Stop:
            pass
        finally:
            self._tg = None
            await self.p2p.stop()

    def _start_block(self) -> int:
        """The block this node first started at (kept in the data dir across restarts)."""
        path = self.data_dir / "provider-start.json"
        try:
            return int(json.loads(path.read_text())["block"])
        except (OSError, ValueError, KeyError, TypeError):
            block = self.rpc.block_number()
            _write_atomic(path, json.dumps({"block": block}).encode())
            return block

    # ------------------------------------------------------------ restart
    async def _resume(self, start_block: int) -> None:
        """Drive every job left in flight by a previous run (kill -9 included) onward."""
        jobs = await asyncio.to_thread(self.store.jobs.in_flight, Role.PROVIDER)
        # jobs recorded before the peer had its column name it in the old peer log
        if any(j.peer is None for j in jobs):
            peers = self._peers.load()
        else:
            peers = {}
            await asyncio.to_thread(self._peers.remove)
        for stored in jobs:
            job = stored
            peer = job.peer or peers.get(job.request_id or b"") or peers.get(job.id)
            if job.spec is None or job.counterparty is None or peer is None:
                await asyncio.to_thread(self.store.jobs.abandon, job.id, "cannot resume: no peer")
                continue
            if job.state is JobState.NONE:
                created = await asyncio.to_thread(
                    lookup.find_created,
                    self.escrow,
                    job.counterparty,
                    self.identity.address,
                    job.spec_hash,
                    start_block,
                )
                if created is None:
                    request = JobRequest(
                        request_id=job.request_id or bytes(16),
                        client=job.counterparty,
                        spec=job.spec,
                        max_price_per_gpu_second=job.price,
                        max_payment=job.max_payment,
                        deadline=job.deadline,
                    )
                    self._add_pending(
                        (job.counterparty, job.spec_hash),
                        _Pending(
                            request, peer, job.id, time.monotonic() + self.settings.accept_ttl_s
                        ),
                    )
                    continue
                job = await asyncio.to_thread(
                    self.store.jobs.transition,
                    job.id,
                    JobEvent.CREATE,
                    block=created.block_number,
                    job_id=int(created.fields["jobId"]),
                )
            assert job.job_id is not None and job.spec is not None
            events = await asyncio.to_thread(
                lookup.job_events, self.escrow, job.job_id, start_block
            )
            chain_job = lookup.rebuild_job(self.escrow, events)
            if chain_job is None:
                continue
            running = _Running(chain_job, job.spec, peer, job.id)
            if job.output_cid is not None and not self.blobs.has(job.output_cid):
                await asyncio.to_thread(self._restore_small_output, job.id, job.output_cid)
            names = {e.name for e in events}
            if "JobFinalized" in names:  # paid while we were down
                for ev in events:
                    if ev.name == "JobFinalized":
                        self.metrics.earned(int(ev.fields["payment"]))
                await asyncio.to_thread(self.store.jobs.transition, job.id, JobEvent.ACCEPT)
            elif "JobRefunded" in names:
                await asyncio.to_thread(self.store.jobs.transition, job.id, JobEvent.REFUND)
            elif "ResultSubmitted" in names:
                if job.state is JobState.MATCHED:
                    await asyncio.to_thread(self.store.jobs.transition, job.id, JobEvent.SUBMIT)
                self._submitted[chain_job.job_id] = running
                if job.output_cid is not None:
                    self._outputs[chain_job.job_id] = (chain_job.client, job.output_cid)
                    self._keep_for_verifiers(chain_job.job_id, job.spec, job.output_cid)
            elif job.attestation is not None and job.output_cid is not None:
                # ran and signed before the crash: deliver and submit that same result
                attestation = decode_as(job.attestation, Attestation)
                self._outputs[chain_job.job_id] = (chain_job.client, job.output_cid)
                self._keep_for_verifiers(chain_job.job_id, job.spec, job.output_cid)
                await self._deliver_and_queue(running, attestation, job.output_cid, None)
            else:
                self._work_on(job.id, job.spec)
                await self._queue.put(running)
                self.metrics.queue_depth.set(self._queue.qsize())
            log.info("resumed job %d in state %s", chain_job.job_id, job.state.name)

    # ------------------------------------------------------------ offers
    def _offer(self, client: bytes) -> Offer:
        domain = self.escrow.domain
        return Offer.create(
            self.identity,
            chain_id=domain.chain_id,
            contract=domain.verifying_contract,
            price_per_gpu_second=self.settings.price_per_gpu_second,
            nonce=next(self._nonces),
            expiry=int(time.time()) + self.settings.offer_ttl_s,
            capabilities=self.capabilities,
            client=client,
        )

    async def _publish_offers(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(lambda: self.escrow.domain)
        while not stop.is_set():
            try:
                await self.p2p.publish_offer(self._offer(ADVERTISEMENT_CLIENT))
            except Exception as exc:  # noqa: BLE001 - a failed publish is logged and retried
                log.warning("offer publish failed: %s", exc)
            if await sleep_or_stop(stop, self.settings.offer_interval_s):
                return

    # ------------------------------------------------------------ requests
    async def _on_job_request(self, peer: str, request: JobRequest) -> JobAccept | JobDecline:
        if address_from_peer_id(peer) != request.client:
            return JobDecline(
                request_id=request.request_id,
                reason=DeclineReason.BAD_REQUEST,
                message="request.client is not the sending peer's address",
            )
        n = next(self._requests)
        if self.settings.decline_every and n % self.settings.decline_every == 0:
            return JobDecline(
                request_id=request.request_id,
                reason=DeclineReason.CAPACITY,
                message=f"configured to decline every {self.settings.decline_every}th request",
                retry_after=1,
            )
        policy = Policy(
            capabilities=self.capabilities,
            price_per_gpu_second=self.settings.price_per_gpu_second,
            known_archs=self.settings.known_archs,
            max_queue=self.settings.queue_size,
        )
        load = self._queue.qsize() + self._pending_count
        verdict = admit(request, policy, queue_depth=load, now=int(time.time()))
        if not verdict.accepted:
            assert verdict.reason is not None
            return JobDecline(
                request_id=request.request_id,
                reason=verdict.reason,
                message=verdict.message,
                retry_after=verdict.retry_after,
            )
        spec_hash = request.spec.spec_hash()
        # durable before the accept, with the client's peer: a restart must know whom
        # it owes and where to deliver
        job = await asyncio.to_thread(
            self.store.jobs.create,
            NewJob(
                role=Role.PROVIDER,
                spec_hash=spec_hash,
                max_payment=request.max_payment,
                price=self.settings.price_per_gpu_second,
                deadline=request.deadline,
                spec=request.spec,
                request_id=request.request_id,
                counterparty=request.client,
                peer=peer,
            ),
        )
        pending = _Pending(request, peer, job.id, time.monotonic() + self.settings.accept_ttl_s)
        self._claim_unfunded(job.id, request.spec)
        if self._tg is not None:
            pending.prefetch = self._tg.create_task(
                self._prefetch(peer, request.spec, request.inputs_inline)
            )
        self._add_pending((request.client, spec_hash), pending)
        return JobAccept(
            request_id=request.request_id,
            spec_hash=spec_hash,
            offer=self._offer(request.client),
            estimated_gpu_millis=0,
            queue_position=self._queue.qsize(),
        )

    async def _prefetch(self, peer: str, spec: JobSpec, inline: bytes = b"") -> Blobs:
        """Fetch an accepted job's weights and inputs before its ``createJob`` lands,
        and run a small job speculatively if a sandbox slot is idle.

        The client authorises these for the provider it asked (job id 0: there is
        none yet); inputs that came inline with the request (checked against the
        spec when it was decoded) are stored instead. A failure is logged and the
        job fetches again once it is matched. A speculative run is signed only
        once the job exists onchain (so it is never attested twice); paid work
        goes first: only an idle pool with an empty queue speculates, and
        admission bounds the accepts waiting.
        """
        try:
            if inline:
                await asyncio.to_thread(self.blobs.put_bytes, inline)
            weights = await self.p2p.fetch_blob(
                peer, ContentId(spec.model.weights), 0, max_size=spec.model.weights_size
            )
            inputs = await self.p2p.fetch_blob(
                peer, ContentId(spec.inputs), 0, max_size=spec.inputs_size
            )
        except Exception as exc:  # noqa: BLE001 - refused, corrupt or unreachable: refetch later
            log.info("prefetch from %s failed: %s", peer, exc)
            return None
        size = spec.model.weights_size + spec.inputs_size
        if (
            size > self.settings.speculate_max_bytes
            or self._in_pool >= self.pool.config.slots
            or not self._queue.empty()
        ):
            return _Prepared(weights, inputs)
        try:
            result = await self._run(address_from_peer_id(peer), spec, weights, inputs)
        except Exception as exc:  # noqa: BLE001 - the worker runs it again once matched
            log.info("speculative run failed: %s", exc)
            return _Prepared(weights, inputs)
        return _Prepared(weights, inputs, result)

    async def _run(self, client: bytes, spec: JobSpec, weights: Path, inputs: Path) -> RunResult:
        """One sandboxed run. Runs of one client's jobs for one model that are waiting
        at the same time share one sandbox child (``WorkerPool.run_batch``), and that
        client's next run on the same model may reuse it (a kept child): a job can
        see the others' data, so only one tenant's jobs ever share a child."""
        model = spec.model
        config = json.dumps(model.config, sort_keys=True)
        key = (client, spec.format, model.arch, config, model.weights, int(spec.determinism))
        return await self._runners(key, (spec, weights, inputs))

    async def _run_many(
        self, key: tuple[object, ...], items: list[_RunItem]
    ) -> list[RunResult | BaseException]:
        """Counted while in the pool, so speculation can tell an idle pool. The client
        is the runs' tenant: the pool may keep their child for that client's next job
        on the same model (docs/runtime.md §5), never for anyone else's."""
        client = key[0]
        assert isinstance(client, bytes) and len(client) == 20
        self._in_pool += 1
        try:

            def run() -> list[RunResult | JobError]:
                reqs = [
                    RunRequest.from_spec(s, w.read_bytes(), i.read_bytes(), tenant=client)
                    for s, w, i in items
                ]
                if len(reqs) > 1:
                    return self.pool.run_batch(reqs)
                try:
                    return [self.pool.run(reqs[0])]
                except JobError as exc:
                    return [exc]

            results = await asyncio.to_thread(run)
        finally:
            self._in_pool -= 1
        for result in results:
            if isinstance(result, RunResult):
                self.metrics.device_run(
                    self.pool.device_class, result.metered_millis, slots=self.pool.config.slots
                )
        return list(results)

    async def _authorize(self, peer: str, cid: ContentId, job_id: int) -> bool:
        """The job's client may fetch its output; a staked verifier may fetch the job's
        spec, weights, inputs and output (SPEC.md §9: served through the challenge window)."""
        entry = self._outputs.get(job_id)
        if entry is None:
            return False
        client, output = entry
        address = address_from_peer_id(peer)
        if output == cid and address == client:
            return True
        if cid.digest not in self._job_blobs.get(job_id, frozenset()):
            return False
        return await self._is_verifier(address)

    async def _is_verifier(self, address: bytes) -> bool:
        """Whether ``address`` has stake in the escrow's resolver committee (cached 30 s)."""
        now = time.monotonic()
        cached = self._verifier_cache.get(address)
        if cached is not None and cached[0] > now:
            return cached[1]

        def lookup() -> bool:
            committee = Committee(self.rpc, self.escrow.resolver())
            return committee.verifier(address).stake > 0

        try:
            ok = await asyncio.to_thread(lookup)
        except ChainError as exc:  # the resolver is not a committee, or RPC trouble
            log.info("verifier lookup for %s failed: %s", address.hex(), exc)
            ok = False
        if len(self._verifier_cache) > 4096:
            self._verifier_cache.clear()
        self._verifier_cache[address] = (now + 30.0, ok)
        return ok

    # ------------------------------------------------------------ chain
    async def _follow(self, follower: EventFollower, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                events = await asyncio.to_thread(follower.poll)
            except Exception as exc:  # noqa: BLE001 - RPC trouble: log, back off, retry
                log.warning("chain follower: %s", exc)
                events = []
                if await sleep_or_stop(stop, 1.0):
                    return
            for ev in events:
                await self._on_event(ev.name, ev.fields, ev.block_number)
            await self._expire_pending()
            await self.offers_seen.flush()
            if await sleep_or_stop(stop, self.settings.poll_interval_s):
                return

    def _add_pending(self, key: tuple[bytes, bytes], pending: _Pending) -> None:
        self._pending.setdefault(key, []).append(pending)
        self._pending_count += 1

    def _take_pending(self, job: ChainJob) -> _Pending | None:
        """The accept ``job`` matched: the oldest with its terms, else the oldest."""
        key = (job.client, job.spec_hash)
        queue = self._pending.get(key)
        if not queue:
            return None
        exact = [
            i
            for i, p in enumerate(queue)
            if p.request.deadline == job.deadline and p.request.max_payment == job.max_payment
        ]
        pending = queue.pop(exact[0] if exact else 0)
        self._pending_count -= 1
        if not queue:
            del self._pending[key]
        spec = pending.request.spec
        for digest in (spec.model.weights, spec.inputs):  # paid for: kept, as cache
            self._unfunded_blobs.pop(digest, None)
        return pending

    def _claim_unfunded(self, local_id: int, spec: JobSpec) -> None:
        """Note the blobs an accept's prefetch brings in (those not here already)."""
        for digest in (spec.model.weights, spec.inputs):
            holders = self._unfunded_blobs.get(digest)
            if holders is not None:
                holders.add(local_id)
            elif not self.blobs.has(ContentId(digest)):
                self._unfunded_blobs[digest] = {local_id}

    async def _expire_pending(self) -> None:
        """Drop accepts whose ``createJob`` did not come within ``accept_ttl_s``: stop
        their prefetches and delete the blobs (whole or partial) that only they
        brought in, so a client that never pays leaves nothing on disk."""
        now = time.monotonic()
        expired: list[_Pending] = []
        for key in list(self._pending):
            queue = self._pending[key]
            gone = [p for p in queue if p.expires < now]
            if not gone:
                continue
            self._pending[key] = [p for p in queue if p.expires >= now]
            if not self._pending[key]:
                del self._pending[key]
            self._pending_count -= len(gone)
            expired += gone
        if not expired:
            return
        prefetches = [p.prefetch for p in expired if p.prefetch is not None]
        for task in prefetches:
            task.cancel()
        if prefetches:
            await asyncio.wait(prefetches)  # no fetch writes a file we are about to delete
        orphans: list[ContentId] = []
        for pending in expired:
            spec = pending.request.spec
            for digest in {spec.model.weights, spec.inputs}:
                holders = self._unfunded_blobs.get(digest)
                if holders is None:
                    continue
                holders.discard(pending.local_id)
                if not holders:
                    del self._unfunded_blobs[digest]
                    orphans.append(ContentId(digest))

        def record() -> None:
            for cid in orphans:
                self.blobs.remove(cid)
            for pending in expired:
                self.store.jobs.abandon(pending.local_id, "no createJob within the accept window")

        await asyncio.to_thread(record)

    async def _on_event(self, name: str, fields: dict[str, object], block: int) -> None:
        if name == "JobCreated":
            chain_job = ChainJob.from_created(fields)
            if chain_job.provider != self.identity.address:
                return
            if chain_job.job_id in self._taken:
                return  # already queued (the client's notice came first, or vice versa)
            pending = self._take_pending(chain_job)
            if pending is None:
                log.error("job %d matched without a request we accepted", chain_job.job_id)
                return
            self._taken[chain_job.job_id] = None
            self._work_on(pending.local_id, pending.request.spec)
            if len(self._taken) > _TAKEN_MEMORY:
                self._taken.popitem(last=False)
            # recorded while the job runs (a restart finds the job onchain if this is
            # lost); the result's commit applies CREATE itself if this has not landed
            record = asyncio.to_thread(self._record_created, pending.local_id, chain_job, block)
            assert self._tg is not None, "runs inside the daemon's task group"
            await self._queue.put(
                _Running(
                    chain_job,
                    pending.request.spec,
                    pending.peer,
                    pending.local_id,
                    prefetch=pending.prefetch,
                    recorded=self._tg.create_task(_quiet(record)),
                    created_block=block,
                )
            )
            self.metrics.queue_depth.set(self._queue.qsize())
        elif name == "JobFinalized":
            job_id = int(fields["jobId"])  # type: ignore[call-overload]
            running = self._submitted.pop(job_id, None)
            if running is not None:  # paid (by acceptResult, or a finalize not yet claimed)
                self._settled(job_id, running.chain_job.challenge_end)
                self.metrics.earned(int(fields["payment"]))  # type: ignore[call-overload]
                await asyncio.to_thread(
                    partial(
                        self.store.jobs.transition,
                        running.local_id,
                        JobEvent.ACCEPT,
                        block=block,
                        durable=False,  # the chain has it
                    )
                )
                self.completed += 1
        elif name == "JobRefunded":  # no result in time: nothing is owed to anyone now
            job_id = int(fields["jobId"])  # type: ignore[call-overload]
            self._outputs.pop(job_id, None)
            self._job_blobs.pop(job_id, None)

    async def _on_created_notice(self, peer: str, notice: JobCreatedNotice) -> None:
        """A client says a transaction creates jobs it asked us for: check the receipt,
        then queue them.

        Clients send the notice as they sign the transaction, so the receipt may not
        exist yet: it is polled for, for up to ``notice_wait_s``, and only for a
        client with an accepted request waiting (at most
        :data:`MAX_NOTICE_WAITS_PER_CLIENT` at a time). Only a successful
        transaction whose ``JobCreated`` logs name this provider, the sending peer's
        address and an accepted request counts (``job_id`` 0: every such job in
        it; otherwise only that job); anything else is ignored (the follower
        remains the authority of last resort).
        """
        client = address_from_peer_id(peer)
        if not any(key[0] == client for key in self._pending):
            log.info("job-created notice from %s, who has no accepted request waiting", peer)
            return
        if self._subscription is not None and self._subscription.live:
            return  # the chain node pushes the transaction's logs (no receipt look-up)
        events = await self._notice_events(peer, client, notice.tx_hash)
        matched = False
        for ev in events:
            if ev.name != "JobCreated":
                continue
            if notice.job_id and int(ev.fields["jobId"]) != notice.job_id:
                continue
            job = ChainJob.from_created(ev.fields)
            if job.client == client and (job.client, job.spec_hash) in self._pending:
                await self._on_event(ev.name, ev.fields, ev.block_number)
                matched = True
        if not matched:
            log.info("job-created notice from %s names no job waiting here", peer)

    async def _on_pushed_log(self, lg: Log) -> None:
        """A log the chain node pushed (:mod:`node.chain.subscription`): a ``JobCreated``
        for this provider is handled at once, as the follower would handle it later."""
        try:
            ev = self.escrow.decode_log(lg)
        except ChainError as exc:
            log.info("pushed log of tx 0x%s: %s", lg.tx_hash.hex(), exc)
            return
        if ev is not None and ev.name == "JobCreated":
            await self._on_event(ev.name, ev.fields, ev.block_number)

    async def _notice_events(
        self, peer: str, client: bytes, tx_hash: bytes
    ) -> tuple[EventRecord, ...]:
        """The escrow events of a successful transaction (cached), waiting for it to
        be mined; empty if it failed, never came, or the client has too many waits."""
        events = self._notice_receipts.get(tx_hash)
        if events is not None:
            return events
        waits = self._notice_waits.get(client, 0)
        if waits >= MAX_NOTICE_WAITS_PER_CLIENT:
            log.info("job-created notice from %s: %d receipts awaited already", peer, waits)
            return ()
        self._notice_waits[client] = waits + 1
        try:
            receipt = await receipt_soon(self.rpc, tx_hash, self.settings.notice_wait_s)
        except ChainError as exc:
            log.info("job-created notice from %s: receipt lookup failed: %s", peer, exc)
            return ()
        finally:
            self._notice_waits[client] -= 1
            if not self._notice_waits[client]:
                del self._notice_waits[client]
        if receipt is None or receipt.status != 1:
            return ()
        events = self.escrow.decode_events(receipt)
        self._notice_receipts[tx_hash] = events
        if len(self._notice_receipts) > 64:
            self._notice_receipts.popitem(last=False)
        return events

    # ------------------------------------------------------------ work
    async def _worker(self, stop: asyncio.Event) -> None:
        """Take every job waiting in the queue (up to :data:`MAX_RUN_BATCH`) and work
        on them together, so runs of one client's jobs for one model batch."""
        while not stop.is_set():
            taken = [await self._queue.get()]
            while len(taken) < MAX_RUN_BATCH and not self._queue.empty():
                taken.append(self._queue.get_nowait())
            self.metrics.queue_depth.set(self._queue.qsize())
            async with asyncio.TaskGroup() as tg:
                for running in taken:
                    tg.create_task(self._execute_or_record(running))

    async def _execute_or_record(self, running: _Running) -> None:
        try:
            await self._execute(running)
        except Exception as exc:
            log.exception("job %d failed", running.chain_job.job_id)
            await asyncio.to_thread(self.store.jobs.set_error, running.local_id, str(exc))
        finally:
            self._working.pop(running.local_id, None)  # owed via _job_blobs, if it ran

    def _work_on(self, local_id: int, spec: JobSpec) -> None:
        """Keep a queued job's blobs (its weights and inputs; the output once known)."""
        self._working[local_id] = {spec.model.weights, spec.inputs}

    def _blobs_owed(self) -> set[bytes]:
        """Every blob this provider still owes or needs (kept by blob collection): those
        of accepts waiting for their ``createJob``, of queued and running jobs, and every
        blob a job's client or verifiers may fetch until its challenge window ends."""
        keep: set[bytes] = set()
        for queue in self._pending.values():
            for pending in queue:
                keep.update((pending.request.spec.model.weights, pending.request.spec.inputs))
        for digests in self._working.values():
            keep.update(digests)
        for blobs in self._job_blobs.values():
            keep.update(blobs)
        keep.update(output.digest for _, output in self._outputs.values())
        return keep

    async def _execute(self, running: _Running) -> None:
        job, spec = running.chain_job, running.spec
        prepared = await running.prefetch if running.prefetch is not None else None
        if prepared is None:
            prepared = _Prepared(
                await self.p2p.fetch_blob(
                    running.peer,
                    ContentId(spec.model.weights),
                    job.job_id,
                    max_size=spec.model.weights_size,
                ),
                await self.p2p.fetch_blob(
                    running.peer, ContentId(spec.inputs), job.job_id, max_size=spec.inputs_size
                ),
            )
        result = prepared.result or await self._run(
            job.client, spec, prepared.weights, prepared.inputs
        )
        # kept from before its file is written (by _record_result, in a thread)
        self._working.setdefault(running.local_id, set()).add(result.output_sha256)
        domain = self.escrow.domain
        attestation = Attestation.create(
            self.identity,
            chain_id=domain.chain_id,
            contract=domain.verifying_contract,
            job_id=job.job_id,
            spec_hash=job.spec_hash,
            output_hash=result.output_sha256,
            runtime=result.runtime,
            determinism=spec.determinism,
            metered_millis=result.metered_millis,
        )
        output = await asyncio.to_thread(
            self._record_result, running, result.output, encode(attestation)
        )
        if len(result.output) <= MAX_INLINE_OUTPUT:
            running.small_output = result.output  # its blob file is written after delivery
        if running.recorded is not None:  # finished by now (or beaten by _record_result)
            await running.recorded
        self._outputs[job.job_id] = (job.client, output)
        # the spec's blob is written with the SUBMIT record (verifiers come after that)
        self._job_blobs[job.job_id] = frozenset(
            {cid_of(spec_bytes(spec)).digest, spec.model.weights, spec.inputs, output.digest}
        )
        await self._deliver_and_queue(running, attestation, output, result)

    def _record_created(self, local_id: int, job: ChainJob, block: int) -> None:
        """Record that the job exists onchain (``CREATE``) unless that is recorded already
        (by :meth:`_record_result`, which does not wait for this write). The chain has
        it, so the commit does not wait for its fsync."""
        with self.store.transaction(durable=False):
            if self.store.jobs.get(local_id).state is JobState.NONE:
                jobs = self.store.jobs
                jobs.transition(local_id, JobEvent.CREATE, block=block, job_id=job.job_id)

    def _record_result(self, running: _Running, output: bytes, attestation: bytes) -> ContentId:
        """Keep the output, then record it and the signed attestation (and ``CREATE``,
        if its own write has not landed yet) in one durable commit, before anything of
        it leaves the node. Returns the output's content id. Runs in a worker thread.

        A small output (one that travels inline) goes into that commit itself, and its
        blob file is written after the delivery (:meth:`_submit`), or at a restart:
        creating a file costs ~1 ms here while other processes fsync (the journal
        commit holds it), and this is on every job's path."""
        if len(output) <= MAX_INLINE_OUTPUT:
            output_cid, data = cid_of(output), output
        else:
            output_cid, data = self.blobs.put_bytes(output), None
        with self.store.transaction():
            self._record_created(running.local_id, running.chain_job, running.created_block)
            self.store.jobs.set_result(running.local_id, output_cid, attestation, data=data)
        return output_cid

    def _restore_small_output(self, local_id: int, output: ContentId) -> None:
        """A restart: write the blob file of a small output the store kept."""
        data = self.store.jobs.small_output(local_id)
        if data is not None and cid_of(data) == output:
            self.blobs.put_bytes(data)

    async def _deliver_and_queue(
        self,
        running: _Running,
        attestation: Attestation,
        output: ContentId,
        result: RunResult | None,
    ) -> None:
        """Queue the signed result for onchain submission; deliver it as soon as that
        transaction is signed.

        The manifest names the ``submitResult`` transaction (``submit_tx``), so the
        delivery travels while it is mined and the client reads that receipt from its
        own chain node instead of looking ``ResultSubmitted`` up. If no submission
        is signed within ``deliver_wait_s`` the result is delivered without the hint
        (the client then waits for the chain as before). The attestation is durable
        before this is called (:meth:`_record_result`). The delivery is a task of the
        daemon's group, so the worker is free for the next job.
        """
        job = running.chain_job
        running.attestation = attestation
        running.result = ResultArgs(
            job=job,
            output_hash=attestation.output_hash,
            runtime_id=attestation.runtime_id,
            determinism=int(attestation.determinism),
            metered_millis=attestation.metered_millis,
        )
        loop = asyncio.get_running_loop()
        running.mined, running.signed = loop.create_future(), loop.create_future()
        self._to_submit.append(running)
        self._submit_wake.set()
        data = running.small_output
        size = len(data) if data is not None else self.blobs.size(output) or 0
        if data is None and size <= MAX_INLINE_OUTPUT:
            data = self.blobs.path(output).read_bytes()
        manifest = ResultManifest(
            job_id=job.job_id,
            output=output.digest,
            output_size=size,
            attestation=attestation,
            peak_memory_bytes=result.peak_memory_bytes if result else 0,
            wall_millis=result.wall_millis if result else 0,
            inline=data if data is not None and size <= MAX_INLINE_OUTPUT else b"",
        )
        assert self._tg is not None, "runs inside the daemon's task group"
        self._tg.create_task(self._deliver(running, manifest))

    async def _deliver(self, running: _Running, manifest: ResultManifest) -> None:
        job = running.chain_job
        assert running.signed is not None and running.mined is not None
        try:
            tx_hash = await wait_within(
                asyncio.shield(running.signed), self.settings.deliver_wait_s
            )
            manifest = msgspec.structs.replace(manifest, submit_tx=tx_hash)
            if running.mined.done():  # (a resumed job's may be) the mined event's too
                manifest = msgspec.structs.replace(
                    manifest, challenge_end=running.chain_job.challenge_end
                )
        except TimeoutError:
            log.warning("job %d: result not submitted yet; delivering it anyway", job.job_id)
        try:
            ack = await self._deliverers(running.peer, manifest)
        except Exception as exc:  # noqa: BLE001 - the client can still fetch after the fact
            log.warning("could not deliver result of job %d: %s", job.job_id, exc)
            return
        if not ack.ok:
            log.warning("client refused result of job %d: %s", job.job_id, ack.reason)

    async def _send_results(
        self, peer: str, manifests: list[ResultManifest]
    ) -> list[ResultAck | JobProtocolError]:
        return await self.p2p.deliver_results(peer, manifests)

    def _keep_for_verifiers(self, job_id: int, spec: JobSpec, output: ContentId) -> None:
        """Keep serving what a verifier needs to re-run the job: the spec (a blob named by
        the spec hash), weights, inputs (already in the blob store) and the output."""
        spec_cid = self.blobs.put_bytes(spec_bytes(spec))
        self._job_blobs[job_id] = frozenset(
            {spec_cid.digest, spec.model.weights, spec.inputs, output.digest}
        )

    # ------------------------------------------------------------ settlement
    async def _settle(self, stop: asyncio.Event) -> None:
        """Natural batching: a result queued while nothing is in flight is sent at once;
        what queues up while a transaction is in flight goes in the next batch."""
        while not stop.is_set():
            self._submit_wake.clear()
            batch, self._to_submit = self._to_submit, []
            failed = False
            if batch:
                try:
                    await self._submit(batch)
                except Exception as exc:  # noqa: BLE001 - retried on the next round
                    log.warning("submitting %d results failed: %s", len(batch), exc)
                    self._to_submit[:0] = batch
                    failed = True
            if time.monotonic() - self._last_finalize > 1.0:
                self._last_finalize = time.monotonic()
                try:
                    await self._finalize_due()
                except Exception as exc:  # noqa: BLE001 - retried on the next round
                    log.warning("finalizing failed: %s", exc)
            if failed:
                if await sleep_or_stop(stop, self.settings.submit_retry_s):
                    return
            elif not self._to_submit:
                with contextlib.suppress(TimeoutError):
                    await wait_within(self._submit_wake.wait(), 1.0)

    async def _submit(self, batch: list[_Running]) -> None:
        args = [r.result for r in batch if r.result is not None]
        loop = asyncio.get_running_loop()

        def signed(tx_hash: bytes) -> None:  # in the sending thread, before the send
            loop.call_soon_threadsafe(_set_signed, batch, tx_hash)

        if len(args) == 1:
            assert batch[0].attestation is not None
            one = dataclasses.replace(args[0], sig=batch[0].attestation.signature)
            jobs, tx = await asyncio.to_thread(
                self.escrow.submit_result, one, gas=GAS_SUBMIT_RESULT, on_signed=signed
            )
            submitted = [jobs]
        else:
            submitted, tx = await asyncio.to_thread(
                self.escrow.submit_results,
                args,
                gas=gas_submit_results(len(args)),
                on_signed=signed,
            )
        tx_hash = "0x" + tx.receipt.tx_hash.hex()
        for running, chain_job in zip(batch, submitted, strict=True):
            running.chain_job = chain_job
            self._submitted[chain_job.job_id] = running
            if running.mined is not None and not running.mined.done():
                running.mined.set_result(None)  # a restart re-reads the chain

        def record() -> None:
            for running in batch:  # what a verifier asks for (weights, inputs: kept already)
                self.blobs.put_bytes(spec_bytes(running.spec))
                if running.small_output is not None:  # (in the store since before delivery)
                    self.blobs.put_bytes(running.small_output)
            # one commit for the whole batch; the chain has it, so no fsync wait
            with self.store.transaction(durable=False):
                for running in batch:
                    self.store.jobs.transition(
                        running.local_id,
                        JobEvent.SUBMIT,
                        block=tx.receipt.block_number,
                        tx_hash=tx_hash,
                    )

        await asyncio.to_thread(record)

    def _settled(self, job_id: int, challenge_end: int) -> None:
        """``job_id`` left the submitted state for good: serve its blobs to its client
        and verifiers until its challenge window ends, then forget it."""
        heapq.heappush(self._serve_until, (challenge_end, job_id))

    def _stop_serving(self, now: int) -> None:
        """Forget the settled jobs whose challenge window ended before ``now`` (chain
        time): their blobs are no longer owed (SPEC.md §9), and one entry per paid
        job would otherwise stay for the daemon's life."""
        while self._serve_until and self._serve_until[0][0] < now:
            _, job_id = heapq.heappop(self._serve_until)
            self._outputs.pop(job_id, None)
            self._job_blobs.pop(job_id, None)

    async def _finalize_due(self) -> None:
        """Finalize submitted jobs whose challenge window has ended (unclaimed by the
        client); forget settled jobs whose window has ended."""
        if not self._submitted:
            if not self._serve_until:
                return
            # no look-up before the first is due by the last answer (asked again every
            # CHAIN_CLOCK_S: a chain's clock may jump ahead of ours, as a devnet's does)
            chain_time, asked = self._chain_clock
            since = time.monotonic() - asked
            if since < CHAIN_CLOCK_S and self._serve_until[0][0] >= chain_time + since:
                return
        now = await asyncio.to_thread(self.rpc.next_block_time)
        self._chain_clock = (now, time.monotonic())
        self._stop_serving(now)
        due = [r for r in self._submitted.values() if 0 < r.chain_job.challenge_end < now]
        if not due:
            return
        states = await asyncio.gather(
            *(asyncio.to_thread(self.escrow.job_state, r.chain_job) for r in due)
        )
        ready = [r for r, st in zip(due, states, strict=True) if st is JobState.SUBMITTED]
        for r, st in zip(due, states, strict=True):
            # the client accepted while we were not looking, or a dispute slashed us:
            # either way nothing is left to finalize (a disputed job stays until resolved)
            if st in (JobState.FINALIZED, JobState.SLASHED):
                if self._submitted.pop(r.chain_job.job_id, None) is not None:
                    self._settled(r.chain_job.job_id, r.chain_job.challenge_end)
                if st is JobState.SLASHED:
                    log.warning("job %d was slashed", r.chain_job.job_id)
        if not ready:
            return
        jobs = [r.chain_job for r in ready]
        tx = await asyncio.to_thread(
            self.escrow.finalize_many, jobs, gas=gas_finalize_many(len(jobs))
        )
        payments = {int(ev["jobId"]): int(ev["payment"]) for ev in tx.named("JobFinalized")}
        # claim every job before the first await: the follower may see the same
        # JobFinalized logs meanwhile, and whoever pops a job records it (once)
        ours = [r for r in ready if self._submitted.pop(r.chain_job.job_id, None) is not None]
        for r in ours:
            self._settled(r.chain_job.job_id, r.chain_job.challenge_end)
            self.metrics.earned(payments.get(r.chain_job.job_id, 0))
            await asyncio.to_thread(
                self.store.jobs.transition,
                r.local_id,
                JobEvent.FINALIZE,
                block=tx.receipt.block_number,
                tx_hash="0x" + tx.receipt.tx_hash.hex(),
            )
            self.completed += 1


class _PeerLog:
    """request id -> the client's peer id, as gpunet before store schema 5 appended it
    (now the job's row holds the peer). Read at restart for jobs recorded then; lines
    of older versions, keyed by local job id (``"id"``), too. Removed once no job in
    flight needs it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def load(self) -> dict[bytes | int, str]:
        out: dict[bytes | int, str] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            try:
                row = json.loads(line)
                key = bytes.fromhex(row["request"]) if "request" in row else int(row["id"])
                out[key] = str(row["peer"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a crash
        return out


def _set_signed(batch: list[_Running], tx_hash: bytes) -> None:
    """The first signed ``submitResult(s)`` of each job is the one its manifest names
    (a retry after a failed send is found by the client's look-up instead)."""
    for running in batch:
        if running.signed is not None and not running.signed.done():
            running.signed.set_result(tx_hash)


async def _quiet(step: Awaitable[object]) -> BaseException | None:
    """Await ``step`` in a task-group task; hand back its exception instead of raising
    it (which would cancel the whole group)."""
    try:
        await step
    except Exception as exc:  # noqa: BLE001 - returned to the awaiting worker
        return exc
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
