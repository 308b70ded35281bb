"""Job protocol ``/gpunet/job/1.0.0``: request -> accept/decline, and result delivery.

Every frame is ``uvarint(len) || canonical message`` (:mod:`node.p2p.framing`),
every read under a timeout. A stream carries one exchange or several in a row
(at most :data:`MAX_EXCHANGES_PER_STREAM`): the opener may write all its
frames first; frames that arrived together are handled concurrently and
answered in one write, in their order; the stream ends when the opener closes
its side, or after ``read_timeout`` of silence once it has carried an exchange.
The opener keeps its streams open between exchanges (:mod:`node.p2p.channels`),
which saves the protocol negotiation of a new stream per exchange.

* client -> provider: ``JobRequest``; provider -> client: ``JobAccept`` or
  ``JobDecline`` (machine-readable reason; never silence). A request whose
  ``client`` is not the address of the dialing peer is declined
  (``bad_request``); over the rate limit -> ``rate_limited``.
* provider -> client: ``ResultManifest``; client -> provider: ``ResultAck``
  (the attestation must verify and be signed by the dialing peer's address).

``/gpunet/job-created/1.0.0`` carries one or more ``JobCreatedNotice`` frames,
client -> provider, no answer: a hint that ``createJob`` is mined; the
provider's handler checks the transaction's receipt itself (rate-limited like
requests).

Garbage, oversized frames and undecodable messages strike the peer and reset
the stream (after a ``bad_request`` decline when a reply is still possible);
nothing reaches the application handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from node.p2p.channels import ChannelError, StreamChannels, close_quietly, reset_quietly
from node.p2p.config import P2PConfig
from node.p2p.framing import (
    FrameError,
    FrameReader,
    FrameTooLarge,
    write_frames,
)
from node.p2p.guard import PeerGuard, Refused
from node.p2p.metrics import P2PMetrics
from node.p2p.wire import JobCreatedNotice, ResultAck, decode_frame, encode_frame
from protocol.errors import BadSignature, DecodeError, IdentityError
from protocol.identity import address_from_peer_id
from protocol.messages import (
    DeclineReason,
    JobAccept,
    JobDecline,
    JobRequest,
    ResultManifest,
    decode,
    encode,
)

__all__ = [
    "CREATED_PROTOCOL",
    "JOB_PROTOCOL",
    "MAX_EXCHANGES_PER_STREAM",
    "CreatedHandler",
    "JobProtocolError",
    "JobRequestHandler",
    "JobService",
    "ResultHandler",
]

log = logging.getLogger(__name__)

JOB_PROTOCOL = TProtocol("/gpunet/job/1.0.0")
CREATED_PROTOCOL = TProtocol("/gpunet/job-created/1.0.0")
_NO_REQUEST_ID = bytes(16)
#: Exchanges (or notices) one stream may carry; a peer that sends more is cut off.
MAX_EXCHANGES_PER_STREAM = 64

#: provider side: decide on a request from ``peer`` (peer id text)
JobRequestHandler = Callable[[str, JobRequest], Awaitable[JobAccept | JobDecline]]
#: client side: take a verified result manifest; return False to refuse it
ResultHandler = Callable[[str, ResultManifest], Awaitable[bool]]
#: provider side: a client says its createJob is mined (a hint, checked by the handler)
CreatedHandler = Callable[[str, JobCreatedNotice], Awaitable[None]]


class JobProtocolError(Exception):
    """The remote side broke the job protocol (or did not answer in time)."""


def peer_of(stream: INetStream) -> str:
    """Text peer id of the other end of ``stream``."""
    return str(stream.muxed_conn.peer_id.to_base58())


class JobService:
    """Both ends of the job protocol for one host."""

    def __init__(
        self,
        host: IHost,
        config: P2PConfig,
        guard: PeerGuard,
        metrics: P2PMetrics,
        *,
        on_request: JobRequestHandler | None = None,
        on_result: ResultHandler | None = None,
        on_created: CreatedHandler | None = None,
    ) -> None:
        self.host = host
        self.config = config
        self.guard = guard
        self.metrics = metrics
        self.on_request = on_request
        self.on_result = on_result
        self.on_created = on_created
        self._limits = config.limits
        # kept-open streams for the exchanges this host starts; replaced well before the
        # other side's read timeout ends an idle one
        self.channels = StreamChannels(
            host, max_frames=MAX_EXCHANGES_PER_STREAM, max_idle_s=config.limits.read_timeout / 2
        )

    def install(self) -> None:
        """Register the stream handlers on the host."""
        self.host.set_stream_handler(JOB_PROTOCOL, self._handle)
        if self.on_created is not None:
            self.host.set_stream_handler(CREATED_PROTOCOL, self._handle_created)

    async def _handle_created(self, stream: INetStream) -> None:
        peer = peer_of(stream)
        lim = self._limits
        try:
            with self.guard.stream_slot(peer):
                frames = FrameReader(stream)
                for i in range(MAX_EXCHANGES_PER_STREAM):
                    data = await frames.next(
                        max_bytes=128, time_limit=lim.read_timeout, eof_ok=True, idle_ok=i > 0
                    )
                    if data is None:
                        break
                    await self._serve_created(peer, data)
                else:
                    self.metrics.inc("job_streams_capped")
        except (Refused, FrameError) as exc:
            self.metrics.inc("job_streams_refused")
            log.info("job-created stream from %s ended: %s", peer, exc)
            await reset_quietly(stream)
        else:
            await close_quietly(stream)

    async def _serve_created(self, peer: str, data: bytes) -> None:
        try:
            notice = decode_frame(data, JobCreatedNotice)
        except DecodeError as exc:
            self.metrics.inc("job_messages_bad")
            log.info("job-created: undecodable notice from %s: %s", peer, exc)
            self.guard.strike(peer, "job:undecodable")
            raise Refused("undecodable notice") from None
        if not self.guard.allow(peer, "request"):
            raise Refused("rate limited")
        assert self.on_created is not None
        with trio.move_on_after(self._limits.read_timeout):
            try:
                await self.on_created(peer, notice)
            except Exception:  # an application bug must not kill the node
                log.exception("job-created handler failed")
                self.metrics.inc("job_handler_errors")

    # ------------------------------------------------------------ server side
    async def _handle(self, stream: INetStream) -> None:
        peer = peer_of(stream)
        try:
            with self.guard.stream_slot(peer):
                await self._serve(peer, stream)
        except Refused:
            self.metrics.inc("job_streams_refused")
            await reset_quietly(stream)
        except FrameError as exc:
            self.metrics.inc("job_frames_bad", kind=type(exc).__name__)
            log.info("job: bad frame from %s: %s", peer, exc)
            if isinstance(exc, FrameTooLarge):
                self.guard.strike(peer, "job:oversized_frame")
            await reset_quietly(stream)
        else:
            await close_quietly(stream)

    async def _serve(self, peer: str, stream: INetStream) -> None:
        """Answer the frames of one stream in order. Frames that arrived together are
        handled concurrently (a batch of requests is admitted as a batch), and their
        answers go back in one write, in the order of the frames."""
        lim = self._limits
        frames = FrameReader(stream)
        served = 0
        while served < MAX_EXCHANGES_PER_STREAM:
            data = await frames.next(
                max_bytes=lim.max_frame_bytes,
                time_limit=lim.read_timeout,
                eof_ok=True,
                idle_ok=served > 0,  # a kept-open stream may fall idle; a new one may not
            )
            if data is None:
                return
            group = [
                data,
                *frames.ready(lim.max_frame_bytes, MAX_EXCHANGES_PER_STREAM - served - 1),
            ]
            served += len(group)
            answers: list[bytes] = [b""] * len(group)
            bad = [False] * len(group)
            async with trio.open_nursery() as nursery:
                for i, frame in enumerate(group):
                    nursery.start_soon(self._answer, peer, frame, answers, bad, i)
            end = bad.index(True) + 1 if any(bad) else len(group)  # nothing after garbage
            await write_frames(stream, answers[:end], time_limit=lim.read_timeout)
            if end < len(group) or any(bad):
                return
        # the cap is reached: answer no more on this stream (closed, not reset, so the
        # answers already written still arrive)
        self.metrics.inc("job_streams_capped")
        log.info(
            "job: %s sent more than %d exchanges on one stream", peer, MAX_EXCHANGES_PER_STREAM
        )

    async def _answer(
        self, peer: str, data: bytes, answers: list[bytes], bad: list[bool], i: int
    ) -> None:
        try:
            msg = decode(data, expect=("job_request", "result"))
        except DecodeError as exc:
            self.metrics.inc("job_messages_bad")
            log.info("job: undecodable message from %s: %s", peer, exc)
            self.guard.strike(peer, "job:undecodable")
            answers[i] = self._decline(_NO_REQUEST_ID, DeclineReason.BAD_REQUEST, str(exc))
            bad[i] = True
            return
        if isinstance(msg, JobRequest):
            answers[i] = await self._answer_request(peer, msg)
        elif isinstance(msg, ResultManifest):
            answers[i] = await self._answer_result(peer, msg)

    def _decline(self, request_id: bytes, reason: DeclineReason, message: str = "") -> bytes:
        self.metrics.inc("job_declined", reason=reason.value)
        return encode(JobDecline(request_id=request_id, reason=reason, message=message[:256]))

    async def _answer_request(self, peer: str, req: JobRequest) -> bytes:
        if not self.guard.allow(peer, "request"):
            return self._decline(req.request_id, DeclineReason.RATE_LIMITED, "slow down")
        try:
            if req.client != address_from_peer_id(peer):
                self.guard.strike(peer, "job:client_not_peer")
                return self._decline(
                    req.request_id, DeclineReason.BAD_REQUEST, "client is not the sender"
                )
        except IdentityError:
            return self._decline(req.request_id, DeclineReason.BAD_REQUEST, "not secp256k1")
        if self.on_request is None:
            return self._decline(req.request_id, DeclineReason.CAPACITY, "not a provider")
        answer: JobAccept | JobDecline | None = None
        with trio.move_on_after(self._limits.read_timeout):
            try:
                answer = await self.on_request(peer, req)
            except Exception:  # an application bug must not kill the node
                log.exception("job request handler failed")
                self.metrics.inc("job_handler_errors")
                return self._decline(req.request_id, DeclineReason.CAPACITY, "internal")
        if answer is None:
            return self._decline(req.request_id, DeclineReason.CAPACITY, "handler timeout")
        if isinstance(answer, JobDecline):
            self.metrics.inc("job_declined", reason=answer.reason.value)
        else:
            self.metrics.inc("job_accepted")
        return encode(answer)

    async def _answer_result(self, peer: str, manifest: ResultManifest) -> bytes:
        ok, reason = True, ""
        try:
            manifest.attestation.verify()
            if manifest.attestation.provider != address_from_peer_id(peer):
                ok, reason = False, "attestation not signed by the sender"
        except (BadSignature, IdentityError) as exc:
            ok, reason = False, f"bad attestation: {exc}"
        if not ok:
            self.guard.strike(peer, "job:bad_attestation")
        elif self.on_result is None:
            ok, reason = False, "no job expects a result"
        else:
            accepted = False
            with trio.move_on_after(self._limits.read_timeout):
                try:
                    accepted = await self.on_result(peer, manifest)
                except Exception:  # an application bug must not kill the node
                    log.exception("result handler failed")
                    self.metrics.inc("job_handler_errors")
            ok, reason = accepted, "" if accepted else "refused by the client"
        self.metrics.inc("job_results_received", ok=str(ok).lower())
        return encode_frame(ResultAck(job_id=manifest.job_id, ok=ok, reason=reason[:256]))

    # ------------------------------------------------------------ client side
    async def _exchange_many(
        self, peer: str, payloads: list[bytes], time_limit: float
    ) -> list[bytes | JobProtocolError]:
        """Send every payload on the peer's kept-open job stream (:mod:`node.p2p.channels`),
        then read one answer per payload, in order.

        A failure to open or write fails them all; a failure while reading fails
        the answers not yet read.
        """
        if not 0 < len(payloads) <= MAX_EXCHANGES_PER_STREAM:
            raise ValueError(f"1 to {MAX_EXCHANGES_PER_STREAM} exchanges per stream")
        answers: list[bytes | JobProtocolError] = []
        try:
            with trio.fail_after(time_limit):
                answers += await self.channels.exchange(
                    peer,
                    JOB_PROTOCOL,
                    payloads,
                    answers=True,
                    max_bytes=self._limits.max_frame_bytes,
                    time_limit=time_limit,
                )
        except trio.TooSlowError:
            failure = JobProtocolError(f"no answer from {peer} within {time_limit} s")
            return answers + [failure] * (len(payloads) - len(answers))
        except ChannelError as exc:
            failure = JobProtocolError(f"job exchange with {peer} failed: {exc}")
            return [*exc.answers, *[failure] * (len(payloads) - len(exc.answers))]
        return answers

    async def request(
        self, peer: str, request: JobRequest, *, time_limit: float = 10.0
    ) -> JobAccept | JobDecline:
        """Send ``request`` to provider ``peer``; the verified accept, or the decline."""
        (answer,) = await self.request_many(peer, [request], time_limit=time_limit)
        if isinstance(answer, JobProtocolError):
            raise answer
        return answer

    async def request_many(
        self, peer: str, requests: list[JobRequest], *, time_limit: float = 10.0
    ) -> list[JobAccept | JobDecline | JobProtocolError]:
        """Send ``requests`` to provider ``peer`` on one stream; per request, the verified
        accept, the decline, or why there is neither."""
        datas = await self._exchange_many(peer, [encode(r) for r in requests], time_limit)
        out: list[JobAccept | JobDecline | JobProtocolError] = []
        for request, data in zip(requests, datas, strict=True):
            try:
                if isinstance(data, JobProtocolError):
                    raise data
                out.append(self._check_answer(peer, request, data))
            except JobProtocolError as exc:
                out.append(exc)
        return out

    def _check_answer(self, peer: str, request: JobRequest, data: bytes) -> JobAccept | JobDecline:
        try:
            answer = decode(data, expect=("job_accept", "job_decline"))
        except DecodeError as exc:
            raise JobProtocolError(f"bad answer from {peer}: {exc}") from None
        assert isinstance(answer, JobAccept | JobDecline)
        if isinstance(answer, JobDecline):
            if answer.request_id not in (request.request_id, _NO_REQUEST_ID):
                raise JobProtocolError("decline for another request")
            return answer
        if answer.request_id != request.request_id:
            raise JobProtocolError("accept for another request")
        offer = answer.offer
        try:
            offer.verify()
            if offer.provider != address_from_peer_id(peer):
                raise JobProtocolError("accepted offer is not the provider's own")
        except (BadSignature, IdentityError) as exc:
            raise JobProtocolError(f"accepted offer does not verify: {exc}") from None
        if offer.client != request.client:
            raise JobProtocolError("accepted offer is bound to another client")
        if answer.spec_hash != request.spec.spec_hash():
            raise JobProtocolError("accept is for another job spec")
        if offer.chain_id != self.config.chain_id or offer.contract != self.config.contract:
            raise JobProtocolError("accepted offer is for another chain or contract")
        return answer

    async def notify_created(
        self, peer: str, notice: JobCreatedNotice, *, time_limit: float = 10.0
    ) -> None:
        """Tell provider ``peer`` that its job is created (one frame, no answer)."""
        await self.notify_created_many(peer, [notice], time_limit=time_limit)

    async def notify_created_many(
        self, peer: str, notices: list[JobCreatedNotice], *, time_limit: float = 10.0
    ) -> None:
        """Tell provider ``peer`` that its jobs are created (one stream, no answer)."""
        if not 0 < len(notices) <= MAX_EXCHANGES_PER_STREAM:
            raise ValueError(f"1 to {MAX_EXCHANGES_PER_STREAM} notices per stream")
        try:
            with trio.fail_after(time_limit):
                await self.channels.exchange(
                    peer,
                    CREATED_PROTOCOL,
                    [encode_frame(n) for n in notices],
                    answers=False,
                    max_bytes=0,
                    time_limit=time_limit,
                )
        except (ChannelError, trio.TooSlowError) as exc:
            raise JobProtocolError(f"cannot notify {peer}: {exc!r}") from None

    async def deliver_result(
        self, peer: str, manifest: ResultManifest, *, time_limit: float = 10.0
    ) -> ResultAck:
        """Deliver ``manifest`` to client ``peer``; its acknowledgement."""
        (ack,) = await self.deliver_results(peer, [manifest], time_limit=time_limit)
        if isinstance(ack, JobProtocolError):
            raise ack
        return ack

    async def deliver_results(
        self, peer: str, manifests: list[ResultManifest], *, time_limit: float = 10.0
    ) -> list[ResultAck | JobProtocolError]:
        """Deliver ``manifests`` to client ``peer`` on one stream; per manifest, its
        acknowledgement or why there is none."""
        datas = await self._exchange_many(peer, [encode(m) for m in manifests], time_limit)
        out: list[ResultAck | JobProtocolError] = []
        for manifest, data in zip(manifests, datas, strict=True):
            if isinstance(data, JobProtocolError):
                out.append(data)
                continue
            try:
                ack = decode_frame(data, ResultAck)
            except DecodeError as exc:
                out.append(JobProtocolError(f"bad ack from {peer}: {exc}"))
                continue
            if ack.job_id != manifest.job_id:
                out.append(JobProtocolError("ack for another job"))
                continue
            out.append(ack)
        return out
