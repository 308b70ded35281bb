"""The verifier daemon: samples results, re-runs them, challenges, proves equivocation, votes.

One asyncio task group owns every background task (the escrow follower, the
committee follower, the check workers and the dispute driver); stopping the
daemon cancels and awaits them all. Blocking calls (JSON-RPC, the worker pool)
run in threads.

A result's path through the daemon:

1. the escrow follower sees ``JobCreated`` and ``ResultSubmitted`` and rebuilds
   the job struct (the attestation digest is recomputed from the event);
2. the job is sampled (``sample_rate``, and always when flagged); a worker
   fetches the spec (a blob named by the spec hash), the weights, the inputs
   and the output from the provider's peer, re-runs them in the attested tier
   and compares: bit for bit for ``exact`` and ``gpu-deterministic``, within
   the catalog's relative bound for ``tolerance``;
3. on a mismatch it challenges (bond from its escrow balance) and opens the
   committee dispute; any verifier draws the committee once the seed block
   exists;
4. drawn into a committee, it re-checks the job (or reuses its verdict),
   stores the vote and a fresh salt in the node store (fsynced) and only then
   commits ``keccak(jobId, self, fault, salt)``; it reveals when reveals open and
   finalizes when the votes are in or the window is over. A verifier restarted
   between commit and reveal replays the committee's events, finds its stored
   vote and reveals it (the first stored vote for a seat is binding);
5. :meth:`VerifierDaemon.observe_attestation` takes a signed attestation seen
   elsewhere (e.g. forwarded by a client); if it differs from the recorded
   result it is a self-contained fraud proof, sent with ``proveEquivocation``.

Outcomes are kept in :attr:`VerifierDaemon.stats` (exported on ``/metrics`` by
``gpunet verify``) and appended to ``<data_dir>/verifier-log.jsonl``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from node.blobgc import DEFAULT_COLLECT_INTERVAL_S, collect_blobs
from node.chain.committee import Committee, DisputeInfo, Phase, new_salt, vote_commitment
from node.chain.errors import ChainError, ContractRevert
from node.chain.escrow import Escrow
from node.chain.follower import EventFollower, MemoryCursorStore
from node.chain.jobs import Job as ChainJob
from node.chain.rpc import Rpc, Signer
from node.p2p.blobs import BlobFetchError
from node.p2p.blobstore import DEFAULT_MAX_BYTES, BlobStore
from node.p2p.config import P2PConfig
from node.p2p.service import P2PService
from node.runtime.pool import RunRequest, WorkerPool
from node.store.store import Store
from node.tasks import Stop, sleep_or_stop, wait_within
from protocol import eip712
from protocol.content import ContentId
from protocol.errors import DecodeError
from protocol.identity import Identity
from protocol.messages import MAX_SPEC_BYTES, Attestation, Determinism, JobSpec, decode_spec

__all__ = ["Outcome", "VerifierDaemon", "VerifierSettings", "VerifierStats", "compare_outputs"]

log = logging.getLogger("gpunet.verifier")

#: tries per blob before the provider counts as unavailable
FETCH_ATTEMPTS = 3
#: most jobs remembered at once (oldest dropped first)
MAX_TRACKED_JOBS = 100_000


class Outcome(enum.StrEnum):
    """What one check found."""

    MATCH = "match"
    MISMATCH = "mismatch"
    UNAVAILABLE = "unavailable"  # the provider did not serve the job's blobs
    INCOMPARABLE = "incomparable"  # our runtime differs from the attested one
    ERROR = "error"


@dataclasses.dataclass(frozen=True)
class VerifierSettings:
    """What the daemon needs beyond its identity and components."""

    sample_rate: float = 0.1
    flagged: frozenset[int] = frozenset()  # job ids always checked
    challenge: bool = True  # challenge mismatches (else only report them)
    challenge_unavailable: bool = False  # treat a provider that refuses us as at fault
    join_committees: bool = True  # commit and reveal when drawn
    workers: int = 1
    poll_interval_s: float = 0.2
    fetch_timeout_s: float = 60.0
    lookback_blocks: int = 2000  # replay this much history at start (jobs we may judge)
    seed: int | None = None
    max_blob_bytes: int = DEFAULT_MAX_BYTES  # the blob store's bound (node.blobgc)
    blob_collect_s: float = DEFAULT_COLLECT_INTERVAL_S

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError("sample_rate must be within [0, 1]")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.lookback_blocks < 0:
            raise ValueError("lookback_blocks must be >= 0")


@dataclasses.dataclass
class VerifierStats:
    """Counters (exported on /metrics) and the outcome of every check."""

    attestations_seen: int = 0
    sampled: int = 0
    reexecutions: int = 0
    challenges: int = 0
    equivocations_proven: int = 0
    votes_committed: int = 0
    votes_revealed: int = 0
    disputes_finalized: int = 0
    outcomes: dict[int, Outcome] = dataclasses.field(default_factory=dict)
    #: relative error of each re-run (0 when bitwise equal; ``tolerance`` jobs show the
    #: real numerical noise between the provider's runtime and ours)
    rel_errors: dict[int, float] = dataclasses.field(default_factory=dict)

    def counters(self) -> dict[str, int]:
        """Flat counters, one per outcome kind too."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if isinstance(v, int)}
        for o in Outcome:
            out[f"outcome_{o.value}"] = sum(1 for v in self.outcomes.values() if v is o)
        return out


@dataclasses.dataclass
class _Duty:
    """A committee seat: the vote and its secret until revealed.

    ``restored``: the vote came from the store (a previous run decided it), so the
    chain's ballot says whether it was already committed or revealed.
    """

    job_id: int
    salt: bytes
    vote: bool | None = None
    deciding: bool = False
    committed: bool = False
    revealed: bool = False
    restored: bool = False


def compare_outputs(
    determinism: Determinism, attested: bytes, ours: bytes, *, arch: str
) -> tuple[bool, float]:
    """Whether our re-run agrees with the attested output; returns (agrees, rel. error).

    ``exact`` and ``gpu-deterministic``: bitwise equality. ``tolerance``: every
    tensor present in both with equal shapes and dtypes, and
    ``max|a - b| / max(max|b|, 1e-12)`` within the catalog's bound for the model and
    that tensor's dtype (:mod:`node.runtime.catalog.tolerances`); non-float tensors
    must be equal. The returned error is the worst ratio seen.
    """
    if determinism is not Determinism.TOLERANCE:
        return attested == ours, 0.0 if attested == ours else float("inf")
    from node.runtime import catalog, formats  # noqa: PLC0415 - torch only when needed

    try:
        a = formats.parse_safetensors(attested, "attested output")
        b = formats.parse_safetensors(ours, "re-run output")
    except Exception:  # noqa: BLE001 - an unparsable attested output is a mismatch
        return False, float("inf")
    if set(a) != set(b):
        return False, float("inf")
    worst = 0.0
    for name, ref in b.items():
        got = a[name]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            return False, float("inf")
        ref64, got64 = ref.double(), got.double()
        if not bool(got64.isfinite().all()) or not bool(ref64.isfinite().all()):
            return False, float("inf")
        scale = max(float(ref64.abs().max()) if ref64.numel() else 0.0, 1e-12)
        err = float((got64 - ref64).abs().max()) / scale if ref64.numel() else 0.0
        worst = max(worst, err)
        bound = catalog.tolerance(arch, ref.dtype) if ref.is_floating_point() else 0.0
        if err > bound:
            return False, worst
    return True, worst


class VerifierDaemon:
    """See the module docstring."""

    def __init__(
        self,
        identity: Identity,
        *,
        rpc_url: str,
        escrow_address: bytes,
        committee_address: bytes,
        p2p_config: P2PConfig,
        pool: WorkerPool,
        store: Store,
        data_dir: Path,
        settings: VerifierSettings,
    ) -> None:
        self.identity = identity
        self.store = store
        self.settings = settings
        self.pool = pool
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.rpc = Rpc(rpc_url)
        signer = Signer(self.rpc, identity.private_key)
        self.escrow = Escrow(self.rpc, escrow_address, signer)
        self.committee = Committee(self.rpc, committee_address, signer)
        self.blobs = BlobStore(self.data_dir / "blobs", max_bytes=settings.max_blob_bytes)
        self.p2p = P2PService(identity, p2p_config, blob_store=self.blobs)
        self.stats = VerifierStats()
        self.ready = asyncio.Event()
        self._rng = random.Random(settings.seed)
        self._jobs: dict[int, ChainJob] = {}
        self._submitted: dict[int, dict[str, Any]] = {}  # job id -> ResultSubmitted fields
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._checks: dict[int, asyncio.Future[Outcome]] = {}
        self._duties: dict[int, _Duty] = {}
        self._disputes: dict[int, ChainJob] = {}  # opened, not finished: draw/finalize
        # blobs fetched for a job: kept by blob collection while its check runs or its
        # dispute is open, then a cache
        self._job_digests: dict[int, set[bytes]] = {}
        self._log_path = self.data_dir / "verifier-log.jsonl"

    # ------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; every background task is cancelled and awaited."""
        await self.p2p.start()
        try:
            start = await asyncio.to_thread(self.rpc.block_number)
            # replay recent history: a committee may judge a job created before we started
            past = max(0, start - self.settings.lookback_blocks)
            escrow_follower = EventFollower(self.escrow, MemoryCursorStore(), start_block=past)
            committee_follower = EventFollower(
                self.committee, MemoryCursorStore(), start_block=past
            )
            await asyncio.to_thread(lambda: self.escrow.domain)
            # the escrow's history first, so replayed disputes find their jobs (a restarted
            # committee member must judge, or reveal, jobs it saw before it stopped)
            for ev in await asyncio.to_thread(escrow_follower.poll):
                await self._on_escrow_event(ev.name, ev.fields)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._follow(escrow_follower, self._on_escrow_event, stop))
                tg.create_task(self._follow(committee_follower, self._on_committee_event, stop))
                tg.create_task(self._drive_disputes(stop))
                tg.create_task(
                    collect_blobs(
                        self.blobs,
                        self._blobs_needed,
                        stop,
                        interval_s=self.settings.blob_collect_s,
                    )
                )
                for _ in range(self.settings.workers):
                    tg.create_task(self._worker(stop))
                self.ready.set()
                await stop.wait()
                raise Stop
        except* Stop:
            pass
        finally:
            for fut in self._checks.values():
                if not fut.done():
                    fut.cancel()
            await self.p2p.stop()

    async def _follow(self, follower: EventFollower, handler: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                events = await asyncio.to_thread(follower.poll)
            except ChainError as exc:
                log.warning("follower: %s", exc)
                events = []
                if await sleep_or_stop(stop, 1.0):
                    return
            for ev in events:
                await handler(ev.name, ev.fields)
            if await sleep_or_stop(stop, self.settings.poll_interval_s):
                return

    # ------------------------------------------------------------ escrow events
    async def _on_escrow_event(self, name: str, fields: dict[str, Any]) -> None:
        job_id = fields.get("jobId")
        if not isinstance(job_id, int):
            return
        if name == "JobCreated":
            if len(self._jobs) >= MAX_TRACKED_JOBS:
                oldest = next(iter(self._jobs))
                self._jobs.pop(oldest)
                self._submitted.pop(oldest, None)
            self._jobs[job_id] = ChainJob.from_created(fields)
        elif name == "ResultSubmitted":
            job = self._jobs.get(job_id)
            if job is None:
                return
            data = self._attestation_data(job, fields)
            job = job.after_submit(fields, eip712.attestation_digest(self.escrow.domain, data))
            self._jobs[job_id] = job
            self._submitted[job_id] = dict(fields)
            self.stats.attestations_seen += 1
            if job.challenge_end < time.time():
                return  # history replayed at start: too late to challenge
            if job_id in self.settings.flagged or self._rng.random() < self.settings.sample_rate:
                self.stats.sampled += 1
                self._queue.put_nowait(job_id)
        elif name == "JobChallenged":
            job = self._jobs.get(job_id)
            if job is not None:
                challenger = bytes.fromhex(str(fields["challenger"]).removeprefix("0x"))
                self._jobs[job_id] = job.after_challenge(challenger)

    def _attestation_data(self, job: ChainJob, fields: dict[str, Any]) -> eip712.AttestationData:
        return eip712.AttestationData(
            job_id=job.job_id,
            provider=job.provider,
            spec_hash=job.spec_hash,
            output_hash=bytes(fields["outputHash"]),
            runtime_id=bytes(fields["runtimeId"]),
            determinism=int(fields["determinism"]),
            metered_millis=int(fields["meteredMillis"]),
        )

    # ------------------------------------------------------------ checks
    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            job_id = await self._queue.get()
            outcome = await self.check(job_id)
            job = self._jobs.get(job_id)
            bad = outcome is Outcome.MISMATCH or (
                outcome is Outcome.UNAVAILABLE and self.settings.challenge_unavailable
            )
            if bad and self.settings.challenge and job is not None:
                await self._challenge(job)

    async def check(self, job_id: int) -> Outcome:
        """Re-run a submitted job once (concurrent callers share the result)."""
        fut = self._checks.get(job_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._checks[job_id] = fut
            try:
                outcome, detail = await self._check(job_id)
            except Exception as exc:  # one bad job must not stop the daemon
                log.exception("check of job %d failed", job_id)
                outcome, detail = Outcome.ERROR, str(exc)
            fut.set_result(outcome)
            self.stats.outcomes[job_id] = outcome
            while len(self._checks) > MAX_TRACKED_JOBS:  # oldest first (insertion order)
                self._checks.pop(next(iter(self._checks)))
            while len(self.stats.outcomes) > MAX_TRACKED_JOBS:
                self.stats.outcomes.pop(next(iter(self.stats.outcomes)))
            self._record(job_id, outcome, detail)
        return await asyncio.shield(fut)

    def _provider_peer(self, provider: bytes) -> str | None:
        for entry in self.p2p.query(limit=10_000):
            if entry.offer.provider == provider:
                return entry.peer_id
        return None

    def _blobs_needed(self) -> set[bytes]:
        """The blobs of checks in progress and of open disputes (kept by collection);
        the digests of other jobs are forgotten here."""
        active = {j for j, fut in self._checks.items() if not fut.done()}
        active.update(self._disputes, self._duties)
        keep: set[bytes] = set()
        for job_id in list(self._job_digests):
            if job_id in active:
                keep.update(self._job_digests[job_id])
            else:
                del self._job_digests[job_id]
        return keep

    async def _fetch(self, peer: str, digest: bytes, job_id: int, max_size: int) -> bytes:
        """Fetch one blob of the job from the provider; transport errors are retried
        (FETCH_ATTEMPTS in all, with backoff) before the provider counts as unavailable."""
        self._job_digests.setdefault(job_id, set()).add(digest)  # kept from now on
        for attempt in range(FETCH_ATTEMPTS):
            try:
                path = await wait_within(
                    self.p2p.fetch_blob(peer, ContentId(digest), job_id, max_size=max_size),
                    self.settings.fetch_timeout_s,
                )
                return path.read_bytes()
            except (BlobFetchError, OSError, TimeoutError) as exc:
                if attempt == FETCH_ATTEMPTS - 1:
                    raise
                log.info("fetch of %s for job %d: %s; retrying", digest.hex()[:12], job_id, exc)
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def _check(self, job_id: int) -> tuple[Outcome, str]:
        job = self._jobs.get(job_id)
        if job is None or job.result_hash == bytes(32):
            return Outcome.ERROR, "job not known as submitted"
        peer = self._provider_peer(job.provider)
        if peer is None:
            return Outcome.UNAVAILABLE, "no offer from the provider: peer unknown"
        submitted = self._submitted.get(job_id)
        if submitted is None:
            return Outcome.ERROR, "ResultSubmitted not seen"
        try:
            spec_raw = await self._fetch(peer, job.spec_hash, job_id, MAX_SPEC_BYTES)
            spec = decode_spec(spec_raw, job.spec_hash)
            weights = await self._fetch(peer, spec.model.weights, job_id, spec.model.weights_size)
            inputs = await self._fetch(peer, spec.inputs, job_id, spec.inputs_size)
            output = await self._fetch(
                peer, bytes(submitted["outputHash"]), job_id, spec.max_output_bytes
            )
        except DecodeError as exc:
            return Outcome.MISMATCH, f"served spec is invalid: {exc}"
        except Exception as exc:  # noqa: BLE001 - any transport failure: unavailable
            return Outcome.UNAVAILABLE, f"fetch failed: {exc}"
        return await self._rerun(
            job_id, spec, submitted, weights, inputs, output=output, client=job.client
        )

    async def _rerun(
        self,
        job_id: int,
        spec: JobSpec,
        submitted: dict[str, Any],
        weights: bytes,
        inputs: bytes,
        *,
        output: bytes,
        client: bytes,
    ) -> tuple[Outcome, str]:
        """Re-run the job in our pool and compare. ``client`` is the run's tenant, as on
        the provider: re-runs of one client's jobs for one model may share a kept
        sandbox child (docs/runtime.md §5) instead of a fresh fork each."""
        det = Determinism(int(submitted["determinism"]))
        if det != spec.determinism:
            return Outcome.MISMATCH, f"attested tier {det.name} differs from the spec's"
        ours = self.pool.runtime_descriptor(int(det), str(spec.format))
        same_runtime = hashlib.sha256(ours.encode()).digest() == bytes(submitted["runtimeId"])
        if det is not Determinism.TOLERANCE and not same_runtime:
            return Outcome.INCOMPARABLE, f"attested runtime differs from ours ({ours})"
        req = RunRequest.from_spec(spec, weights, inputs, tenant=client)
        result = await asyncio.to_thread(self.pool.run, req)
        self.stats.reexecutions += 1
        agrees, err = compare_outputs(det, output, result.output, arch=spec.model.arch)
        self.stats.rel_errors[job_id] = err
        while len(self.stats.rel_errors) > MAX_TRACKED_JOBS:
            self.stats.rel_errors.pop(next(iter(self.stats.rel_errors)))
        detail = f"tier {det.name}, rel. error {err:.3g}"
        return (Outcome.MATCH if agrees else Outcome.MISMATCH), detail

    def _record(self, job_id: int, outcome: Outcome, detail: str) -> None:
        line = {"job": job_id, "outcome": outcome.value, "detail": detail[:500], "t": time.time()}
        with self._log_path.open("a") as fh:
            fh.write(json.dumps(line) + "\n")

    # ------------------------------------------------------------ challenge
    async def _challenge(self, job: ChainJob) -> None:
        try:
            disputed, _ = await asyncio.to_thread(self.escrow.challenge, job)
            self.stats.challenges += 1
            self._jobs[job.job_id] = disputed
            await asyncio.to_thread(self.committee.open_dispute, disputed)
            self._disputes[job.job_id] = disputed
            log.info("challenged job %d", job.job_id)
        except ContractRevert as exc:  # someone was first, window closed, no balance
            log.warning("challenge of job %d failed: %s", job.job_id, exc)

    # ------------------------------------------------------------ equivocation
    async def observe_attestation(self, attestation: Attestation) -> bool:
        """Check a signed attestation seen off-chain; prove equivocation if it conflicts
        with the recorded result. Returns True if a proof was sent."""
        job = self._jobs.get(attestation.job_id)
        domain = self.escrow.domain
        if (
            job is None
            or job.result_hash == bytes(32)
            or attestation.provider != job.provider
            or (attestation.chain_id, attestation.contract)
            != (domain.chain_id, domain.verifying_contract)
            or attestation.digest() == job.result_hash
        ):
            return False
        try:
            attestation.verify()
        except Exception:  # noqa: BLE001 - a bad signature proves nothing
            return False
        submitted = self._submitted.get(job.job_id)
        if submitted is None:
            return False
        recorded = self._attestation_data(job, submitted)
        try:
            await asyncio.to_thread(
                self.escrow.prove_equivocation,
                job,
                (recorded, b""),
                (attestation.signed_data(), attestation.signature),
            )
        except ContractRevert as exc:
            log.warning("equivocation proof for job %d failed: %s", job.job_id, exc)
            return False
        self.stats.equivocations_proven += 1
        self._record(job.job_id, Outcome.MISMATCH, "equivocation proven")
        return True

    # ------------------------------------------------------------ committee
    async def _on_committee_event(self, name: str, fields: dict[str, Any]) -> None:
        job_id = fields.get("jobId")
        if not isinstance(job_id, int):
            return
        job = self._jobs.get(job_id)
        if name == "DisputeOpened" and job is not None:
            self._disputes.setdefault(job_id, job)
        elif name == "CommitteeDrawn":
            if job is not None:
                self._disputes.setdefault(job_id, job)
            me = "0x" + self.identity.address.hex()
            if me in [str(m).lower() for m in fields["members"]] and self.settings.join_committees:
                self._duties[job_id] = await asyncio.to_thread(self._seat, job_id)
        elif name in ("DisputeResolved", "DisputeCancelled"):
            self._disputes.pop(job_id, None)
            self._duties.pop(job_id, None)

    def _seat(self, job_id: int) -> _Duty:
        """A new seat; a vote stored by a previous run of this node is restored, not redone."""
        stored = self.store.votes.get(self.committee.address, job_id, self.identity.address)
        if stored is None:
            return _Duty(job_id, new_salt())
        log.info("dispute %d: restored our stored vote (fault=%s)", job_id, stored.fault)
        return _Duty(job_id, stored.salt, stored.fault, deciding=True, restored=True)

    async def _drive_disputes(self, stop: asyncio.Event) -> None:
        """Draw, commit, reveal and finalize whatever is due, every poll interval."""
        async with asyncio.TaskGroup() as tg:
            while not stop.is_set():
                for duty in list(self._duties.values()):
                    if not duty.deciding:
                        duty.deciding = True
                        tg.create_task(self._decide(duty))
                try:
                    await asyncio.to_thread(self._drive_once)
                except ChainError as exc:
                    log.warning("dispute driver: %s", exc)
                if await sleep_or_stop(stop, self.settings.poll_interval_s):
                    return

    async def _decide(self, duty: _Duty) -> None:
        """A member's vote: at fault on a mismatch, and when the provider does not serve
        the job to a drawn member during the dispute (SPEC.md §9 obligation). A member
        that cannot judge (other runtime, internal error) keeps the result."""
        outcome = await self.check(duty.job_id)
        duty.vote = outcome in (Outcome.MISMATCH, Outcome.UNAVAILABLE)

    def _drive_once(self) -> None:
        now = self.rpc.next_block_time()
        head = self.rpc.block_number()
        for job_id, seen in list(self._disputes.items()):
            # the escrow and committee followers run apart: DisputeOpened can be handled
            # before JobChallenged updated our copy, so always use the newest struct
            job = self._jobs.get(job_id, seen)
            d = self.committee.dispute(job_id)
            try:
                if d.phase is Phase.DRAWING and head > d.draw_block:
                    self.committee.draw(job)
                elif d.phase is Phase.VOTING:
                    n = len(self.committee.members(job_id))
                    if d.reveals >= n or now > d.reveal_end:
                        self.committee.finalize_dispute(job)
                        self.stats.disputes_finalized += 1
                elif d.phase in (Phase.RESOLVED, Phase.CANCELLED):
                    self._disputes.pop(job_id, None)
            except ContractRevert as exc:  # another verifier was first, or too early
                log.info("dispute %d: %s", job_id, exc.name)
        for job_id, duty in list(self._duties.items()):
            if duty.vote is None:
                continue
            d = self.committee.dispute(job_id)
            if d.phase is not Phase.VOTING:
                continue
            try:
                self._vote_once(duty, d, now)
            except ContractRevert as exc:
                log.info("vote on dispute %d: %s", job_id, exc.name)

    def _vote_once(self, duty: _Duty, d: DisputeInfo, now: int) -> None:
        """Commit (vote and salt stored first), or reveal, whichever is due for one seat."""
        assert duty.vote is not None
        job_id, me, votes = duty.job_id, self.identity.address, self.store.votes
        if duty.restored:  # a previous run may have committed or even revealed
            duty.restored = False
            ballot = self.committee.ballot(job_id, me)
            ours = vote_commitment(job_id, me, duty.vote, duty.salt)
            if ballot.commitment not in (bytes(32), ours):
                log.error("dispute %d: onchain commitment is not our stored vote", job_id)
            duty.committed = ballot.commitment != bytes(32)
            duty.revealed = ballot.revealed
            if duty.revealed:
                votes.mark_revealed(self.committee.address, job_id, me)
        if not duty.committed and now <= d.commit_end:
            c = vote_commitment(job_id, me, duty.vote, duty.salt)
            # durable before the transaction exists: a crash after sending must not lose it
            stored = votes.remember(
                self.committee.address, job_id, me, fault=duty.vote, salt=duty.salt, commitment=c
            )
            duty.vote, duty.salt = stored.fault, stored.salt  # the first stored vote binds
            tx = self.committee.commit_vote(job_id, stored.commitment)
            duty.committed = True
            self.stats.votes_committed += 1
            votes.record_commit(self.committee.address, job_id, me, "0x" + tx.receipt.tx_hash.hex())
        elif duty.committed and not duty.revealed:
            n = len(self.committee.members(job_id))
            if (d.commits >= n or now > d.commit_end) and now <= d.reveal_end:
                self.committee.reveal_vote(job_id, duty.vote, duty.salt)
                duty.revealed = True
                self.stats.votes_revealed += 1
                votes.mark_revealed(self.committee.address, job_id, me)
