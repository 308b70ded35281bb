"""The client SDK: ``AsyncClient.run(model, inputs)`` and its sync twin ``Client``.

``run`` turns a catalog model and input tensors into a verified result:

1. weights and inputs become safetensors blobs, named by content id and
   served (only) to the provider a request is sent to, from the request on (so
   it can fetch them while ``createJob`` is mined);
2. offers from gossip are ranked (:mod:`node.selection`); the best provider
   gets a ``JobRequest``; a decline or a timeout moves on to the next one;
3. the accept's client-bound offer is matched onchain (``createJob``), which
   locks ``max_payment`` of the client's prepaid deposit; a
   ``JobCreatedNotice`` with the transaction hash tells the provider at once;
4. the provider delivers a ``ResultManifest`` as it signs its ``submitResult``,
   naming that transaction; the client reads its receipt from its own chain
   node as it is mined (else it looks ``ResultSubmitted`` up by job id; its
   chain follower is the fallback), fetches the output by content id, checks its
   hash and the attestation (signer, job, spec, output, chain, contract)
   against what the chain recorded, and only then calls ``acceptResult``; a
   missed deadline is refunded automatically.

Concurrent runs batch naturally (:mod:`node.batching`): requests to one
provider share a stream, creates share a ``createJobs``, notices share a
stream, look-ups share an ``eth_getLogs``, accepts share a ``finalizeMany``; a
lone run never waits for company, and a batch transaction that reverts is
retried job by job.

Every failure is a typed :mod:`node.errors` exception that says why.

The blob store stays under ``max_blob_bytes`` (:mod:`node.blobgc`): the
weights, inputs and output of runs in flight are kept (the provider fetches the
first two until the job is done; the output until it is returned); the rest is
a cache evicted least recently used first.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from node.batching import KeyedBatchers, NaturalBatcher
from node.blobgc import DEFAULT_COLLECT_INTERVAL_S, collect_blobs
from node.chain import lookup
from node.chain.contract import EventRecord
from node.chain.errors import ChainError, ContractRevert
from node.chain.escrow import (
    GAS_ACCEPT_RESULT,
    GAS_CREATE_JOB,
    Escrow,
    NewJob,
    TxResult,
    gas_create_jobs,
    gas_finalize_many,
)
from node.chain.follower import EventFollower, MemoryCursorStore
from node.chain.jobs import Job as ChainJob
from node.chain.receipts import receipt_soon
from node.chain.rpc import Rpc, Signer
from node.errors import (
    AttestationInvalid,
    DeadlineMissed,
    GpunetError,
    NoMatchingOffer,
    ProviderDeclined,
    ProviderUnreachable,
)
from node.offers_seen import OfferRecorder
from node.p2p.blobstore import DEFAULT_MAX_BYTES, BlobStore
from node.p2p.config import P2PConfig
from node.p2p.jobs import JobProtocolError
from node.p2p.service import P2PService
from node.p2p.wire import JobCreatedNotice
from node.runtime.formats import parse_safetensors, save_safetensors
from node.selection import Reliability, Requirements, rank_offers
from node.store.records import Job as StoreJob
from node.store.records import NewJob as StoreNewJob
from node.store.records import Role
from node.store.store import Store
from node.tasks import wait_within
from protocol import pricing
from protocol.content import ContentId, cid_of
from protocol.errors import BadSignature, IllegalTransition
from protocol.identity import Identity, address_from_peer_id, checksum_address
from protocol.lifecycle import JobEvent, JobState
from protocol.messages import (
    MAX_INLINE_BYTES,
    Attestation,
    DeclineReason,
    Determinism,
    JobAccept,
    JobDecline,
    JobRequest,
    JobSpec,
    ModelRef,
    ResultManifest,
)

__all__ = ["AsyncClient", "Client", "Progress", "Result"]

log = logging.getLogger("gpunet.client")
T = TypeVar("T")
U = TypeVar("U")

#: Most jobs in one batch: requests on one stream, ``createJobs``, notices, ``finalizeMany``.
MAX_BATCH = 32
#: most seconds to wait for the receipt of the submitResult a manifest names
SUBMIT_RECEIPT_WAIT_S = 10.0
#: Rounds over the candidate list when every provider was unreachable or at capacity.
REQUEST_ROUNDS = 3
#: Seconds a provider's looked-up stake is trusted; a stake under the escrow's
#: ``minStake`` longer (providers stake before they advertise; keys are free to make)
STAKE_CACHE_S = 30.0
LOW_STAKE_CACHE_S = 300.0
#: Providers whose stake is cached at once (past it, expired entries are dropped).
MAX_CACHED_STAKES = 4096
_UNKNOWN = Reliability()  # a provider never tried (read only)

#: ``progress(stage, detail)``; stages: selecting, requesting, matched, running,
#: fetching, verifying, accepted.
Progress = Callable[[str, str], None]


@dataclasses.dataclass(frozen=True, slots=True)
class _Created:
    """One job of a create transaction: the job, the transaction, how many jobs it
    created, and the task of the notice sent to the job's provider."""

    job: ChainJob
    tx: TxResult
    jobs_in_tx: int
    notice: asyncio.Task[None]


@dataclasses.dataclass(frozen=True)
class Result:
    """A verified job result."""

    outputs: dict[str, Any]  # name -> torch.Tensor
    output_bytes: bytes
    job_id: int
    provider: bytes
    attestation: Attestation
    cost: int  # paid to the provider (token units)
    refund: int  # returned to the deposit
    price_per_gpu_second: int
    latency_s: float
    receipts: dict[str, TxResult]
    declined_by: tuple[tuple[str, DeclineReason], ...] = ()
    #: jobs that shared each receipt's transaction (concurrent runs are batched)
    tx_jobs: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @property
    def gas_used(self) -> int:
        """Gas of the client's own transactions for this job (its share of a batch)."""
        return sum(r.gas_used // self.tx_jobs.get(k, 1) for k, r in self.receipts.items())


_Answer = JobAccept | JobDecline | ProviderUnreachable


@dataclasses.dataclass
class _Waiting:
    chain_job: ChainJob
    provider_peer: str
    spec: JobSpec
    manifest: asyncio.Future[ResultManifest]
    submitted: asyncio.Future[dict[str, Any]]


class AsyncClient:
    """See the module docstring. Use as ``async with AsyncClient(...) as client``."""

    def __init__(
        self,
        identity: Identity,
        *,
        rpc_url: str,
        escrow_address: bytes,
        p2p_config: P2PConfig,
        data_dir: Path,
        lanes: int = 64,
        poll_interval_s: float = 0.05,
        request_timeout_s: float = 10.0,
        max_blob_bytes: int = DEFAULT_MAX_BYTES,
        blob_collect_s: float = DEFAULT_COLLECT_INTERVAL_S,
    ) -> None:
        self.identity = identity
        self.rpc = Rpc(rpc_url)
        self.escrow = Escrow(self.rpc, escrow_address, Signer(self.rpc, identity.private_key))
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.data_dir / "blobs", max_bytes=max_blob_bytes)
        self.blob_collect_s = blob_collect_s
        # blobs of runs in flight (digest -> runs using it): kept by blob collection
        self._run_blobs: collections.Counter[bytes] = collections.Counter()
        self.store = Store.open(self.data_dir)
        self.offers_seen = OfferRecorder(self.store)
        self.p2p = P2PService(
            identity,
            p2p_config,
            on_offer=self.offers_seen,
            on_result=self._on_result,
            blob_store=self.blobs,
            authorize=self._authorize,
        )
        self.poll_interval_s = poll_interval_s
        self.request_timeout_s = request_timeout_s
        self._free_lanes: asyncio.Queue[int] = asyncio.Queue()
        for lane in range(lanes):
            self._free_lanes.put_nowait(lane)
        self._waiting: dict[int, _Waiting] = {}
        # (provider address, blob digest) -> open requests to that provider naming the blob
        self._grants: dict[tuple[bytes, bytes], int] = {}
        self._early: dict[int, ResultManifest] = {}
        self._reliability: dict[bytes, Reliability] = {}
        self._inflight: dict[bytes, int] = {}
        # natural batching (node.batching): concurrent runs share streams and transactions
        self._requesters: KeyedBatchers[tuple[bytes, str], JobRequest, _Answer] = KeyedBatchers(
            self._send_requests, max_batch=MAX_BATCH
        )
        self._notifiers: KeyedBatchers[str, JobCreatedNotice, None] = KeyedBatchers(
            self._send_notices, max_batch=MAX_BATCH
        )
        self._creator: NaturalBatcher[tuple[NewJob, str], _Created] = NaturalBatcher(
            self._create_jobs, max_batch=MAX_BATCH
        )
        self._acceptor: NaturalBatcher[ChainJob, tuple[TxResult, int]] = NaturalBatcher(
            self._accept_results, max_batch=MAX_BATCH
        )
        self._submitted_lookup: NaturalBatcher[tuple[int, int], EventRecord | None] = (
            NaturalBatcher(self._find_submitted, max_batch=MAX_BATCH)
        )
        # job ids waiting for one submitResult's receipt share one read of it
        self._submit_receipts: KeyedBatchers[bytes, int, dict[str, Any] | None] = KeyedBatchers(
            self._read_submit_receipt, max_batch=MAX_BATCH
        )
        self._stakes: dict[bytes, tuple[float, int]] = {}  # provider -> (trusted until, stake)
        self._min_stake = 0  # the escrow's minStake (immutable), read at start
        self._stop = asyncio.Event()
        self._refunds: list[asyncio.Task[str | None]] = []
        self._busy_lanes: set[int] = set()  # lanes holding a job not yet terminal
        self._audited: dict[int, tuple[int, int]] = {}  # job id -> (local id, lane)
        self._group: asyncio.TaskGroup | None = None
        self._follower_task: asyncio.Task[None] | None = None
        self._collector_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start libp2p and the chain follower, then settle jobs a previous run left open."""
        await self.p2p.start()
        start = await asyncio.to_thread(self.rpc.block_number)
        await asyncio.to_thread(lambda: self.escrow.domain)  # chain id, cached from now on
        # createJob reverts for a provider below it: such offers are not worth a request
        self._min_stake = await asyncio.to_thread(self.escrow.param, "minStake")
        follower = EventFollower(self.escrow, MemoryCursorStore(), start_block=start)
        self._follower_task = asyncio.create_task(self._follow(follower), name="client-follower")
        self._collector_task = asyncio.create_task(
            collect_blobs(
                self.blobs, lambda: set(self._run_blobs), self._stop, interval_s=self.blob_collect_s
            ),
            name="client-blob-collector",
        )
        await self.resume()

    async def stop(self) -> None:
        """Stop the follower, the blob collector and pending refunds (cancelled and
        awaited), libp2p, the store."""
        self._stop.set()
        tasks = [
            t for t in (self._follower_task, self._collector_task, *self._refunds) if t is not None
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.p2p.stop()
        self.store.close()

    async def resume(self) -> list[int]:
        """Settle client jobs left in flight by a previous run (a crash included).

        Jobs that reached the chain are reconciled with it; a matched job with no
        result is refunded once its deadline passes (now, or by a task this client
        owns). A submitted job is left to finalize: its result was never checked
        here, so the client does not accept it early. Returns the job ids touched.
        """
        touched: list[int] = []
        for stored in await asyncio.to_thread(self.store.jobs.in_flight, Role.CLIENT):
            job, local_id = stored, stored.id
            if job.job_id is None:
                if job.counterparty is None:  # an API submission never sent to a provider
                    await asyncio.to_thread(self.store.jobs.abandon, local_id, "never matched")
                    continue
                created = await asyncio.to_thread(
                    lookup.find_created,
                    self.escrow,
                    self.identity.address,
                    job.counterparty,
                    job.spec_hash,
                )
                if created is None:
                    await asyncio.to_thread(self.store.jobs.abandon, local_id, "never matched")
                    continue
                job = await asyncio.to_thread(
                    self.store.jobs.transition,
                    local_id,
                    JobEvent.CREATE,
                    block=created.block_number,
                    job_id=int(created.fields["jobId"]),
                )
            assert job.job_id is not None
            events = await asyncio.to_thread(lookup.job_events, self.escrow, job.job_id)
            chain_job = lookup.rebuild_job(self.escrow, events)
            if chain_job is None:
                continue
            names = [e.name for e in events]
            touched.append(job.job_id)
            if "JobFinalized" not in names and "JobRefunded" not in names:
                self._busy_lanes.add(chain_job.lane)
            if "ResultSubmitted" in names and job.state is JobState.MATCHED:
                job = await asyncio.to_thread(self.store.jobs.transition, local_id, JobEvent.SUBMIT)
            if job.state is JobState.SUBMITTED and not {"JobFinalized", "JobRefunded"} & set(names):
                self._audited[chain_job.job_id] = (local_id, chain_job.lane)  # follow it to the end
            if "JobFinalized" in names:
                await asyncio.to_thread(self.store.jobs.transition, local_id, JobEvent.FINALIZE)
            elif "JobRefunded" in names:
                await asyncio.to_thread(self.store.jobs.transition, local_id, JobEvent.REFUND)
            elif job.state is JobState.MATCHED:
                self._refunds.append(
                    asyncio.create_task(self._refund_and_record(local_id, chain_job))
                )
        return touched

    async def _refund_and_record(self, local_id: int, chain_job: ChainJob) -> str | None:
        refund_tx = await self._refund_after_deadline(chain_job)
        if refund_tx is not None:
            self._busy_lanes.discard(chain_job.lane)
            await asyncio.to_thread(
                self.store.jobs.transition, local_id, JobEvent.REFUND, tx_hash=refund_tx
            )
        return refund_tx

    async def connect(self, addr: str) -> str:
        """Dial a provider or bootstrap peer (``/ip4/…/tcp/…/p2p/<id>``)."""
        return await self.p2p.connect(addr)

    async def deposit(self, amount: int) -> TxResult:
        """Move tokens into the escrow deposit that jobs draw from (approve first)."""
        return await asyncio.to_thread(self.escrow.deposit, amount)

    async def wait_for_offers(self, count: int, within: float = 20.0) -> int:
        """Wait until offers from ``count`` providers are known; returns how many are."""
        deadline = time.monotonic() + within
        while True:
            n = len(self.p2p.query(limit=10_000))
            if n >= count or time.monotonic() > deadline:
                return n
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------ run
    async def run(
        self,
        model: ModelRef | tuple[str, Mapping[str, int], bytes],
        inputs: Mapping[str, Any] | bytes,
        *,
        max_price: int,
        deadline_s: int = 300,
        max_gpu_millis: int = 10_000,
        min_tier: int = 0,
        determinism: Determinism = Determinism.EXACT,
        max_output_bytes: int = 64 << 20,
        progress: Progress | None = None,
        accept: bool = True,
        max_payment: int | None = None,
        record: int | None = None,
    ) -> Result:
        """Run one job to a verified, accepted result (see the module docstring).

        ``model`` is ``(arch, config, safetensors weights)``; ``inputs`` a mapping
        of tensors or safetensors bytes. With ``accept=False`` (audit mode) the
        checked result is returned without ``acceptResult``: the challenge window
        stays open for verifiers and the provider finalizes after it; ``cost`` is
        then the payment the escrow will make. ``max_payment`` overrides the
        escrow amount (default: max price x ``max_gpu_millis``); ``record`` is the
        local id of a job already recorded in state ``NONE`` (an API submission),
        bound to the provider at the match instead of a new record.
        """
        say = progress or (lambda stage, detail: None)
        started = time.monotonic()
        arch, config, weights = model if isinstance(model, tuple) else (model.arch, {}, b"")
        inputs_bytes = inputs if isinstance(inputs, bytes) else _to_safetensors(inputs)
        w_cid, i_cid = cid_of(weights), cid_of(inputs_bytes)
        # kept in the blob store while the job is requested (a provider fetches them only
        # after it accepted, and inputs that travel inline not at all), and from blob
        # collection until this run ends
        self._hold(w_cid.digest, i_cid.digest)
        keep = asyncio.ensure_future(asyncio.to_thread(self._keep_blobs, weights, inputs_bytes))
        try:
            spec = JobSpec(
                model=ModelRef(
                    arch=arch, config=dict(config), weights=w_cid.digest, weights_size=len(weights)
                ),
                inputs=i_cid.digest,
                inputs_size=len(inputs_bytes),
                determinism=determinism,
                min_sandbox_tier=min_tier,
                max_output_bytes=max_output_bytes,
                max_gpu_millis=max_gpu_millis,
            )
            if max_payment is None:
                max_payment = pricing.max_payment_for(max_price, max_gpu_millis)
            inline = inputs_bytes if len(inputs_bytes) <= MAX_INLINE_BYTES else b""
            if not inline or not self.blobs.path(w_cid).exists():
                await keep  # the provider fetches them once it accepts: there first

            say("selecting", f"{arch}, max {max_price}/GPU-s, escrow {max_payment}")
            domain = self.escrow.domain  # read from the chain at start
            req = Requirements(
                client=self.identity.address,
                chain_id=domain.chain_id,
                contract=domain.verifying_contract,
                max_price_per_gpu_second=max_price,
                job_bytes=len(weights) + len(inputs_bytes),
                format=spec.format,
                determinism=determinism,
                min_sandbox_tier=min_tier,
                min_stake=self._min_stake,
            )
            entries = self.p2p.query(limit=10_000)
            peers = {e.offer.provider: e.peer_id for e in entries}
            # stake look-ups are chain calls: off the event loop
            ranked, rejected = await asyncio.to_thread(
                rank_offers,
                [e.offer for e in entries],
                req,
                now=int(time.time()),
                stake_of=self._stake_of,
                reliability_of=lambda a: self._reliability.get(a, _UNKNOWN),
            )
            if not ranked:
                raise NoMatchingOffer(rejected, offers_seen=len(entries))
            # spread concurrent jobs: a provider already running jobs for us counts as dearer
            ranked.sort(
                key=lambda c: c.expected_price * (1 + self._inflight.get(c.offer.provider, 0))
            )
            declined: list[tuple[str, DeclineReason]] = []
            last: GpunetError | None = None
            # this run's own record (unless the caller made one): written while the first
            # request is in flight, bound to another provider if that one takes the job,
            # abandoned with the reason if none does
            pre: asyncio.Task[StoreJob] | None = None
            matched = False
            try:
                for attempt in range(REQUEST_ROUNDS):
                    if attempt:  # every candidate was unreachable or busy: back off, try again
                        await asyncio.sleep(0.5 * attempt)
                    for candidate in ranked:
                        provider = candidate.offer.provider
                        request = JobRequest(
                            request_id=os.urandom(16),
                            client=self.identity.address,
                            spec=spec,
                            max_price_per_gpu_second=max_price,
                            max_payment=max_payment,
                            deadline=int(time.time()) + deadline_s,
                            inputs_inline=inline,
                        )
                        say("requesting", checksum_address(provider))
                        # reserve before the first await, so concurrent runs see the load and spread
                        self._inflight[provider] = self._inflight.get(provider, 0) + 1
                        grant = [(provider, spec.model.weights), (provider, spec.inputs)]
                        for key in grant:  # the provider may fetch these as soon as it accepts
                            self._grants[key] = self._grants.get(key, 0) + 1
                        terms = _terms(
                            spec, request, provider, candidate.offer.price_per_gpu_second
                        )
                        if record is None and pre is None:
                            pre = asyncio.create_task(
                                asyncio.to_thread(self.store.jobs.create, terms)
                            )
                        try:
                            answer = await self._request(provider, peers[provider], request)
                            if isinstance(answer, GpunetError):
                                last = answer
                                continue
                            if isinstance(answer, JobDecline):
                                self._record(provider, ok=False)
                                declined.append((checksum_address(provider), answer.reason))
                                last = ProviderDeclined(
                                    checksum_address(provider), answer.reason, answer.message
                                )
                                continue
                            prerecorded = await pre if pre is not None else None
                            matched = True
                            try:
                                result = await self._matched(
                                    answer,
                                    request,
                                    peers[provider],
                                    spec,
                                    say,
                                    accept_result=accept,
                                    record=record,
                                    prerecorded=prerecorded,
                                )
                            except (AttestationInvalid, DeadlineMissed):
                                self._record(provider, ok=False)
                                raise
                        finally:
                            self._inflight[provider] -= 1
                            for key in grant:
                                self._grants[key] -= 1
                                if not self._grants[key]:
                                    del self._grants[key]
                        self._record(provider, ok=True)
                        return dataclasses.replace(
                            result,
                            latency_s=time.monotonic() - started,
                            declined_by=tuple(declined),
                        )
                    retryable = isinstance(last, ProviderUnreachable) or (
                        isinstance(last, ProviderDeclined) and last.reason is DeclineReason.CAPACITY
                    )
                    if not retryable:
                        break
                assert last is not None
                raise last
            except BaseException as exc:
                if pre is not None and not matched:
                    await self._abandon(pre, exc)
                raise
        finally:
            try:
                await keep
            except Exception as exc:  # noqa: BLE001 - the job's own outcome comes first
                log.warning("could not keep the job's blobs: %s", exc)
            self._release(w_cid.digest, i_cid.digest)

    def _hold(self, *digests: bytes) -> None:
        """Keep these blobs from collection until :meth:`_release`."""
        self._run_blobs.update(digests)

    def _release(self, *digests: bytes) -> None:
        self._run_blobs.subtract(digests)
        for digest in digests:
            if self._run_blobs[digest] <= 0:
                del self._run_blobs[digest]

    def _keep_blobs(self, *blobs: bytes) -> None:
        """Put a job's weights and inputs in the blob store (in a worker thread)."""
        for data in blobs:
            self.blobs.put_bytes(data)

    async def _abandon(self, pre: asyncio.Task[StoreJob], why: BaseException) -> None:
        """Close this run's record: no provider took the job (nothing reached the chain)."""
        try:
            job = await pre
            await asyncio.to_thread(
                self.store.jobs.abandon, job.id, f"{type(why).__name__}: {why}"[:500]
            )
        except Exception as exc:  # noqa: BLE001 - the run's own error is the one to raise
            log.warning("could not close the record of a job no provider took: %s", exc)

    async def _request(
        self, provider: bytes, peer: str, request: JobRequest
    ) -> JobAccept | JobDecline | ProviderUnreachable:
        """One request; concurrent requests to one provider share a stream."""
        return await self._requesters((provider, peer), request)

    async def _send_requests(
        self, to: tuple[bytes, str], requests: list[JobRequest]
    ) -> list[_Answer]:
        provider, peer = to
        try:
            answers = await self.p2p.request_jobs(peer, requests, time_limit=self.request_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any transport failure: next provider
            answers = [JobProtocolError(str(exc))] * len(requests)
        out: list[_Answer] = []
        for answer in answers:
            if isinstance(answer, JobProtocolError):
                self._record(provider, ok=False)
                out.append(ProviderUnreachable(f"{checksum_address(provider)}: {answer}"))
            else:
                out.append(answer)
        return out

    async def _create_jobs(self, items: list[tuple[NewJob, str]]) -> list[_Created | BaseException]:
        """``createJob`` for one, ``createJobs`` for several; a batch that reverts is
        retried job by job (a revert changes nothing, and each offer's nonce makes a
        job impossible to create twice), so one bad job fails alone.

        Each provider named in a transaction is sent a :class:`JobCreatedNotice` for
        it as it is signed, so the notice travels while the transaction is mined;
        the provider checks the receipt (waiting for it if the notice came first).
        Every job's result carries its notice's task (awaited by the job, shared by
        the jobs of one provider); the notices of a transaction that failed are
        awaited here.
        """
        jobs = [new for new, _ in items]
        if len(items) > 1:
            notices: dict[str, asyncio.Task[None]] = {}
            try:
                created, tx = await asyncio.to_thread(
                    self.escrow.create_jobs,
                    jobs,
                    gas=gas_create_jobs(len(jobs)),
                    on_signed=self._notice_sender({peer for _, peer in items}, notices),
                )
                return [
                    _Created(job, tx, len(jobs), notices[peer])
                    for job, (_, peer) in zip(created, items, strict=True)
                ]
            except ContractRevert as exc:
                log.info("createJobs of %d reverted (%s): one by one", len(jobs), exc)
                await asyncio.gather(*notices.values())
            except BaseException:
                await asyncio.gather(*notices.values())
                raise
        out: list[_Created | BaseException] = []
        for new, peer in items:
            notices = {}
            try:
                job, tx = await asyncio.to_thread(
                    self.escrow.create_job,
                    new,
                    gas=GAS_CREATE_JOB,
                    on_signed=self._notice_sender({peer}, notices),
                )
                out.append(_Created(job, tx, 1, notices[peer]))
            except Exception as exc:  # noqa: BLE001 - this job's own failure
                await asyncio.gather(*notices.values())
                out.append(exc)
        return out

    def _notice_sender(
        self, peers: set[str], into: dict[str, asyncio.Task[None]]
    ) -> Callable[[bytes], None]:
        """``on_signed`` for a create transaction (called in its worker thread): start a
        notice to each of ``peers`` on the loop, into ``into``. The loop runs it before
        it sees the thread's result, so ``into`` is filled when the create returns."""
        loop = asyncio.get_running_loop()

        def start(tx_hash: bytes) -> None:
            for peer in peers:
                into[peer] = loop.create_task(self._notify_created(peer, tx_hash))

        def on_signed(tx_hash: bytes) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
                loop.call_soon_threadsafe(start, tx_hash)

        return on_signed

    async def _accept_results(
        self, jobs: list[ChainJob]
    ) -> list[tuple[TxResult, int] | BaseException]:
        """``acceptResult`` for one, ``finalizeMany`` (which accepts for the client) for
        several; a batch that reverts is retried job by job."""
        if len(jobs) > 1:
            try:
                tx = await asyncio.to_thread(
                    self.escrow.finalize_many, jobs, gas=gas_finalize_many(len(jobs))
                )
                return [(tx, len(jobs))] * len(jobs)
            except ContractRevert as exc:
                log.info("finalizeMany of %d reverted (%s): one by one", len(jobs), exc)
        out: list[tuple[TxResult, int] | BaseException] = []
        for job in jobs:
            try:
                tx = await asyncio.to_thread(self.escrow.accept_result, job, gas=GAS_ACCEPT_RESULT)
                out.append((tx, 1))
            except Exception as exc:  # noqa: BLE001 - this job's own failure
                out.append(exc)
        return out

    def _record(self, provider: bytes, *, ok: bool) -> None:
        rel = self._reliability.setdefault(provider, Reliability())
        if ok:
            rel.successes += 1
        else:
            rel.failures += 1

    def _stake_of(self, provider: bytes) -> int:
        now = time.monotonic()
        cached = self._stakes.get(provider)
        if cached is not None and now < cached[0]:
            return cached[1]
        stake = self.escrow.stake_of(provider).active
        if len(self._stakes) >= MAX_CACHED_STAKES:  # providers seen once stay no longer
            self._stakes = {a: c for a, c in self._stakes.items() if now < c[0]}
        ttl = STAKE_CACHE_S if stake >= self._min_stake else LOW_STAKE_CACHE_S
        self._stakes[provider] = (now + ttl, stake)
        return stake

    async def _matched(
        self,
        accept: JobAccept,
        request: JobRequest,
        peer: str,
        spec: JobSpec,
        say: Progress,
        *,
        accept_result: bool = True,
        record: int | None = None,
        prerecorded: StoreJob | None = None,
    ) -> Result:
        offer = accept.offer
        if (
            offer.provider != address_from_peer_id(peer)
            or offer.client != self.identity.address
            or accept.spec_hash != spec.spec_hash()
            or offer.price_per_gpu_second > request.max_price_per_gpu_second
        ):
            raise AttestationInvalid("the provider's accept does not match the request")
        lane = await self._free_lanes.get()
        for _ in range(self._free_lanes.qsize()):
            if lane not in self._busy_lanes:
                break
            self._free_lanes.put_nowait(lane)  # still held by a job from a previous run
            lane = await self._free_lanes.get()
        try:
            result = await self._on_lane(
                lane=lane,
                accept=accept,
                request=request,
                peer=peer,
                spec=spec,
                say=say,
                accept_result=accept_result,
                record=record,
                prerecorded=prerecorded,
            )
            if not accept_result:  # the lane stays busy until the job finalizes
                self._busy_lanes.add(lane)
            return result
        finally:
            self._free_lanes.put_nowait(lane)

    async def _on_lane(
        self,
        *,
        lane: int,
        accept: JobAccept,
        request: JobRequest,
        peer: str,
        spec: JobSpec,
        say: Progress,
        accept_result: bool = True,
        record: int | None = None,
        prerecorded: StoreJob | None = None,
    ) -> Result:
        offer = accept.offer
        new = NewJob(
            offer=offer.signed_data(),
            offer_sig=offer.signature,
            spec_hash=accept.spec_hash,
            max_payment=request.max_payment,
            deadline=request.deadline,
            lane=lane,
        )
        terms = _terms(spec, request, offer.provider, offer.price_per_gpu_second)
        if prerecorded is not None and _same_terms(prerecorded, terms):
            local = prerecorded  # recorded while the request was in flight
        else:  # bound to the provider that took it, at the price it took it for
            bind_to = prerecorded.id if prerecorded is not None else record
            local = await asyncio.to_thread(
                self.store.jobs.create
                if bind_to is None
                else partial(self.store.jobs.bind, bind_to),
                terms,
            )
        made = await self._creator((new, peer))
        chain_job, created, created_jobs = made.job, made.tx, made.jobs_in_tx
        # the notice (sent as the transaction was signed) and the store write run while
        # the provider works (a restart finds the job onchain); awaited before the next
        # store write, and on every way out. The notice is shielded: other jobs of the
        # same transaction and provider await it too.
        recorded = asyncio.ensure_future(
            _both(
                asyncio.shield(made.notice),
                asyncio.to_thread(
                    self.store.jobs.transition,
                    local.id,
                    JobEvent.CREATE,
                    block=created.receipt.block_number,
                    tx_hash="0x" + created.receipt.tx_hash.hex(),
                    job_id=chain_job.job_id,
                    durable=False,  # the chain has it (resume finds it there)
                ),
            )
        )
        say("matched", f"job {chain_job.job_id} with {checksum_address(offer.provider)}")
        loop = asyncio.get_running_loop()
        waiting = _Waiting(chain_job, peer, spec, loop.create_future(), loop.create_future())
        self._waiting[chain_job.job_id] = waiting
        receipts = {"createJob": created}
        tx_jobs = {"createJob": created_jobs}
        try:
            early = self._early.pop(chain_job.job_id, None)
            if early is not None:
                waiting.manifest.set_result(early)
            say("running", f"job {chain_job.job_id}")
            remaining = max(1.0, request.deadline - time.time() + 5)
            try:
                manifest = await wait_within(waiting.manifest, remaining)
            except TimeoutError:
                await recorded
                refund_tx = await self._refund_and_record(local.id, chain_job)
                raise DeadlineMissed(chain_job.job_id, refund_tx) from None
            # what needs no chain first: the submission is being mined meanwhile
            output = await self._fetch_and_verify(waiting, manifest, say)
            claimed = _claimed_submit(manifest) if accept_result else None
            try:
                if claimed is None:
                    submitted = await self._submitted(waiting, request, created, manifest.submit_tx)
                else:  # the provider's word, checked by acceptResult itself (see below)
                    submitted = claimed
            except TimeoutError:
                await recorded
                refund_tx = await self._refund_and_record(local.id, chain_job)
                raise DeadlineMissed(chain_job.job_id, refund_tx) from None
            await recorded
            # recorded while the result is accepted (the chain has it already)
            submit_task = asyncio.ensure_future(
                asyncio.to_thread(
                    self.store.jobs.transition, local.id, JobEvent.SUBMIT, durable=False
                )
            )
            try:
                _check_onchain(chain_job, manifest.attestation, submitted)
            except BaseException:
                with contextlib.suppress(Exception):  # the check's error is the one to raise
                    await submit_task
                raise
            # the checked output is kept (a small one came inline) while it is accepted
            record_submit = _both(submit_task, self._keep_inline(manifest, output))
            if not accept_result:
                await record_submit
                settlement = pricing.settle(
                    offer.price_per_gpu_second,
                    manifest.attestation.metered_millis,
                    request.max_payment,
                )
                self._audited[chain_job.job_id] = (local.id, lane)
                say("submitted", f"job {chain_job.job_id}: left open for verifiers")
                return Result(
                    outputs=_from_safetensors(output),
                    output_bytes=output,
                    job_id=chain_job.job_id,
                    provider=offer.provider,
                    attestation=manifest.attestation,
                    cost=settlement.payment,
                    refund=settlement.refund,
                    price_per_gpu_second=offer.price_per_gpu_second,
                    latency_s=0.0,
                    receipts=receipts,
                    tx_jobs=tx_jobs,
                )
            after = chain_job.after_submit(submitted, manifest.attestation.digest())
            try:
                (accepted, accepted_jobs), _ = await _both(self._acceptor(after), record_submit)
            except ContractRevert as exc:
                if claimed is None:
                    raise
                # the provider's challenge_end was wrong (or the chain moved): look the
                # event up, check the attestation against it, accept with it
                log.info("job %d: accept with the provider's hint reverted: %s", after.job_id, exc)
                self._record(offer.provider, ok=False)  # it cost us a reverted transaction
                try:
                    submitted = await self._submitted(waiting, request, created)
                except TimeoutError:  # as when no result came at all
                    refund_tx = await self._refund_and_record(local.id, chain_job)
                    raise DeadlineMissed(chain_job.job_id, refund_tx) from None
                _check_onchain(chain_job, manifest.attestation, submitted)
                after = chain_job.after_submit(submitted, manifest.attestation.digest())
                accepted, accepted_jobs = await self._acceptor(after)
            receipts["acceptResult"] = accepted
            tx_jobs["acceptResult"] = accepted_jobs
            await asyncio.to_thread(
                self.store.jobs.transition,
                local.id,
                JobEvent.ACCEPT,
                block=accepted.receipt.block_number,
                tx_hash="0x" + accepted.receipt.tx_hash.hex(),
                durable=False,  # the chain has it: no fsync wait before the result returns
            )
            (final,) = (
                f for f in accepted.named("JobFinalized") if int(f["jobId"]) == chain_job.job_id
            )
            say("accepted", f"job {chain_job.job_id}: paid {final['payment']}")
            return Result(
                outputs=_from_safetensors(output),
                output_bytes=output,
                job_id=chain_job.job_id,
                provider=offer.provider,
                attestation=manifest.attestation,
                cost=int(final["payment"]),
                refund=int(final["refund"]),
                price_per_gpu_second=offer.price_per_gpu_second,
                latency_s=0.0,
                receipts=receipts,
                tx_jobs=tx_jobs,
            )
        finally:
            self._waiting.pop(chain_job.job_id, None)
            with contextlib.suppress(Exception):  # the error on the way out is the one
                await recorded  # (at once if it was awaited above)

    async def _notify_created(self, peer: str, tx_hash: bytes) -> None:
        """Tell the provider that transaction ``tx_hash`` creates its jobs (``job_id``
        0: every job of it there; a hint, its follower is the fallback). Notices to
        one provider that queue up meanwhile share the next stream."""
        try:
            await self._notifiers(peer, JobCreatedNotice(job_id=0, tx_hash=tx_hash))
        except Exception as exc:  # noqa: BLE001 - the provider's follower still sees the job
            log.info("tx 0x%s: could not notify the provider: %s", tx_hash.hex(), exc)

    async def _send_notices(self, peer: str, notices: list[JobCreatedNotice]) -> list[None]:
        await self.p2p.notify_created_many(peer, notices)
        return [None] * len(notices)

    async def _submitted(
        self, waiting: _Waiting, request: JobRequest, created: TxResult, submit_tx: bytes = b""
    ) -> dict[str, Any]:
        """The job's ``ResultSubmitted`` fields from the chain: from the receipt of
        ``submit_tx`` (the transaction the provider's manifest names, read from our own
        chain node as it is mined), else looked up now, with the follower as the
        fallback; ``TimeoutError`` past the deadline."""
        remaining = max(1.0, request.deadline - time.time() + 5)
        if submit_tx and not waiting.submitted.done():
            job_id = waiting.chain_job.job_id
            try:
                fields = await wait_within(
                    self._submit_receipts(submit_tx, job_id),
                    min(remaining, SUBMIT_RECEIPT_WAIT_S + 1),
                )
            except TimeoutError:
                fields = None
            if fields is not None and not waiting.submitted.done():
                waiting.submitted.set_result(fields)
            elif fields is None:
                log.info("job %d: the named submitResult holds no result for it", job_id)
        await self._look_up_submitted(waiting, created.receipt.block_number)
        return await wait_within(waiting.submitted, max(1.0, request.deadline - time.time() + 5))

    async def _read_submit_receipt(
        self, tx_hash: bytes, job_ids: list[int]
    ) -> list[dict[str, Any] | None]:
        """Each job's ``ResultSubmitted`` fields in transaction ``tx_hash`` (None: not in
        it, or it failed or was not mined within :data:`SUBMIT_RECEIPT_WAIT_S`)."""
        try:
            receipt = await receipt_soon(self.rpc, tx_hash, SUBMIT_RECEIPT_WAIT_S)
            events = (
                ()
                if receipt is None or receipt.status != 1
                else (self.escrow.decode_events(receipt))
            )
        except ChainError as exc:
            log.info("tx 0x%s: receipt lookup failed: %s", tx_hash.hex(), exc)
            events = ()
        found = {
            int(ev.fields["jobId"]): dict(ev.fields)
            for ev in events
            if ev.name == "ResultSubmitted"
        }
        return [found.get(job_id) for job_id in job_ids]

    async def _look_up_submitted(self, waiting: _Waiting, from_block: int) -> None:
        """Providers deliver after ``submitResult`` is mined: look the event up now
        rather than wait for the follower's next poll (which stays the fallback).
        Look-ups that wait together share one ``eth_getLogs``."""
        if waiting.submitted.done():
            return
        job_id = waiting.chain_job.job_id
        try:
            event = await self._submitted_lookup((job_id, from_block))
        except ChainError as exc:
            log.info("job %d: ResultSubmitted lookup failed: %s", job_id, exc)
            return
        if event is not None and not waiting.submitted.done():
            waiting.submitted.set_result(event.fields)

    async def _find_submitted(self, items: list[tuple[int, int]]) -> list[EventRecord | None]:
        found = await asyncio.to_thread(
            lookup.results_submitted,
            self.escrow,
            [job_id for job_id, _ in items],
            min(block for _, block in items),
        )
        return [found.get(job_id) for job_id, _ in items]

    async def _fetch_and_verify(
        self, waiting: _Waiting, manifest: ResultManifest, say: Progress
    ) -> bytes:
        """Check the attestation against the job (signer, job, spec, chain, tier) and
        the output against the attestation; returns the output. What the chain
        recorded is checked separately (:func:`_check_onchain`)."""
        job, att = waiting.chain_job, manifest.attestation
        domain = self.escrow.domain
        try:
            att.verify()
        except BadSignature as exc:
            raise AttestationInvalid(f"job {job.job_id}: {exc}") from None
        checks = {
            "provider": att.provider == job.provider,
            "job id": att.job_id == job.job_id,
            "spec hash": att.spec_hash == job.spec_hash,
            "chain": att.chain_id == domain.chain_id and att.contract == domain.verifying_contract,
            "determinism": att.determinism == waiting.spec.determinism,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise AttestationInvalid(f"job {job.job_id}: mismatch in {', '.join(failed)}")
        say("fetching", f"output {ContentId(manifest.output)} ({manifest.output_size} B)")
        if manifest.inline:  # a small output came with the manifest (checked against it)
            data = manifest.inline
        else:
            self._hold(manifest.output)
            try:
                path = await self.p2p.fetch_blob(
                    waiting.provider_peer,
                    ContentId(manifest.output),
                    job.job_id,
                    max_size=waiting.spec.max_output_bytes,
                )
                data = path.read_bytes()
            finally:
                self._release(manifest.output)
        say("verifying", f"job {job.job_id}")
        if cid_of(data).digest != att.output_hash:
            raise AttestationInvalid(f"job {job.job_id}: output does not hash to the attestation")
        return data

    async def _keep_inline(self, manifest: ResultManifest, output: bytes) -> None:
        """Keep a checked output that came inline in the blob store, like a fetched one
        (the API serves it)."""
        if manifest.inline:
            await asyncio.to_thread(self.blobs.put_bytes, output)

    async def _refund_after_deadline(self, job: ChainJob) -> str | None:
        """Claim the refund once the deadline has passed.

        A chain's latest block may be old (anvil mines only on demand), so wait by
        the wall clock and let the refund transaction's own block decide; a refund
        that is still early reverts and is retried.
        """
        await asyncio.sleep(max(0.0, job.deadline - time.time() + 1))
        last: Exception | None = None
        for _ in range(30):
            try:
                tx = await asyncio.to_thread(self.escrow.refund, job)
                return "0x" + tx.receipt.tx_hash.hex()
            except Exception as exc:  # noqa: BLE001 - too early, or the job moved: retry, report
                last = exc
                await asyncio.sleep(2.0)
        log.warning("refund of job %d failed: %s", job.job_id, last)
        return None

    # ------------------------------------------------------------ callbacks
    async def _on_result(self, peer: str, manifest: ResultManifest) -> bool:
        waiting = self._waiting.get(manifest.job_id)
        if waiting is None:
            if len(self._early) < 1024:
                self._early[manifest.job_id] = manifest  # createJob's receipt may be in flight
            return True
        if address_from_peer_id(peer) != waiting.chain_job.provider:
            return False
        if not waiting.manifest.done():
            waiting.manifest.set_result(manifest)
        return True

    async def _authorize(self, peer: str, cid: ContentId, job_id: int) -> bool:
        """A provider may fetch the weights and inputs of a request we sent it (any job
        id: before ``createJob`` it has none), or of a job matched with it."""
        address = address_from_peer_id(peer)
        if self._grants.get((address, cid.digest)):
            return True
        waiting = self._waiting.get(job_id)
        if waiting is None or address != waiting.chain_job.provider:
            return False
        return cid.digest in (waiting.spec.model.weights, waiting.spec.inputs)

    async def _follow(self, follower: EventFollower) -> None:
        while not self._stop.is_set():
            try:
                events = await asyncio.to_thread(follower.poll)
            except Exception as exc:  # noqa: BLE001 - RPC trouble: log, back off, retry
                log.warning("chain follower: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for ev in events:
                job_id = ev.fields.get("jobId")
                if isinstance(job_id, int) and job_id in self._audited:
                    await self._audited_event(job_id, ev.name, ev.block_number)
                waiting = self._waiting.get(job_id) if isinstance(job_id, int) else None
                if waiting is None:
                    continue
                if ev.name == "ResultSubmitted" and not waiting.submitted.done():
                    waiting.submitted.set_result(ev.fields)
            await self.offers_seen.flush()
            await asyncio.sleep(self.poll_interval_s)

    async def _audited_event(self, job_id: int, name: str, block: int) -> None:
        """Follow a job left open for verifiers until it ends; then free its lane."""
        local_id, lane = self._audited[job_id]
        event = {
            "JobChallenged": JobEvent.CHALLENGE,
            "JobFinalized": JobEvent.FINALIZE,
            "JobSlashed": JobEvent.RESOLVE_PROVIDER_WRONG,
        }.get(name)
        if event is None:
            return
        state = (await asyncio.to_thread(self.store.jobs.get, local_id)).state
        if event is JobEvent.FINALIZE and state is JobState.DISPUTED:
            event = JobEvent.RESOLVE_PROVIDER_RIGHT
        if event is JobEvent.RESOLVE_PROVIDER_WRONG and state is JobState.SUBMITTED:
            event = JobEvent.PROVE_EQUIVOCATION
        try:
            await asyncio.to_thread(self.store.jobs.transition, local_id, event, block=block)
        except IllegalTransition as exc:
            log.warning("job %d: %s", job_id, exc)
        if event is not JobEvent.CHALLENGE:
            self._audited.pop(job_id, None)
            self._busy_lanes.discard(lane)


class Client:
    """Synchronous twin of :class:`AsyncClient`: runs it on a private event-loop thread."""

    def __init__(self, identity: Identity, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gpunet-client", daemon=True
        )
        self._thread.start()
        self._client: AsyncClient = self._call(_make_client(identity, kwargs))
        self._call(self._client.start())

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        tasks: list[asyncio.Task[Any]] = []

        async def owned() -> T:
            task = asyncio.current_task()
            assert task is not None
            tasks.append(task)
            return await coro

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(owned(), self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            # Ctrl-C, SIGTERM or a timeout in this thread: the call is cancelled and
            # awaited, not left running on the loop (close() then destroyed it pending)
            future.cancel()
            if tasks and self._loop.is_running():
                with contextlib.suppress(BaseException):
                    asyncio.run_coroutine_threadsafe(_finished(tasks[0]), self._loop).result(10)
            raise

    @property
    def aio(self) -> AsyncClient:
        """The underlying async client."""
        return self._client

    def connect(self, addr: str) -> str:
        """See :meth:`AsyncClient.connect`."""
        return self._call(self._client.connect(addr))

    def wait_for_offers(self, count: int, within: float = 20.0) -> int:
        """See :meth:`AsyncClient.wait_for_offers`."""
        return self._call(self._client.wait_for_offers(count, within))

    def run(self, model: Any, inputs: Any, **kwargs: Any) -> Result:
        """See :meth:`AsyncClient.run`."""
        return self._call(self._client.run(model, inputs, **kwargs))

    def close(self) -> None:
        """Stop the client and its loop thread."""
        try:
            self._call(self._client.stop(), timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _finished(task: asyncio.Task[Any]) -> None:
    """Wait until ``task`` (cancelled) has unwound."""
    await asyncio.wait({task})


async def _make_client(identity: Identity, kwargs: dict[str, Any]) -> AsyncClient:
    return AsyncClient(identity, **kwargs)


def _terms(spec: JobSpec, request: JobRequest, provider: bytes, price: int) -> StoreNewJob:
    """The client's record of a job requested from ``provider`` at ``price``."""
    return StoreNewJob(
        role=Role.CLIENT,
        spec_hash=spec.spec_hash(),
        max_payment=request.max_payment,
        price=price,
        deadline=request.deadline,
        spec=spec,
        request_id=request.request_id,
        counterparty=provider,
    )


def _same_terms(job: StoreJob, terms: StoreNewJob) -> bool:
    """Whether a recorded job already holds ``terms`` (what binding would write)."""
    return (
        job.counterparty == terms.counterparty
        and job.request_id == terms.request_id
        and job.price == terms.price
        and job.max_payment == terms.max_payment
        and job.deadline == terms.deadline
    )


async def _both(first: Awaitable[T], second: Awaitable[U]) -> tuple[T, U]:
    """Await both concurrently, always both to the end; raise the first one's error first."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    for outcome in (a, b):
        if isinstance(outcome, BaseException):
            raise outcome
    return a, b  # type: ignore[return-value]


def _check_onchain(job: ChainJob, att: Attestation, submitted: Mapping[str, Any]) -> None:
    """The attestation is the one the chain recorded for the job (``ResultSubmitted``)."""
    checks = {
        "onchain output": bytes(submitted["outputHash"]) == att.output_hash,
        "onchain metering": int(submitted["meteredMillis"]) == att.metered_millis,
        "onchain runtime": bytes(submitted["runtimeId"]) == att.runtime_id,
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise AttestationInvalid(f"job {job.job_id}: mismatch in {', '.join(failed)}")


def _claimed_submit(manifest: ResultManifest) -> dict[str, Any] | None:
    """The ``ResultSubmitted`` fields the provider's manifest claims, or None without a
    hint. Safe to accept with: the attestation they are built from is checked first,
    and ``acceptResult`` reverts unless the chain holds exactly the job they make."""
    if not manifest.challenge_end:
        return None
    att = manifest.attestation
    return {
        "challengeEnd": manifest.challenge_end,
        "meteredMillis": att.metered_millis,
        "outputHash": att.output_hash,
        "runtimeId": att.runtime_id,
    }


def _to_safetensors(tensors: Mapping[str, Any]) -> bytes:
    return save_safetensors(tensors)


def _from_safetensors(data: bytes) -> dict[str, Any]:
    return dict(parse_safetensors(data, "output"))
