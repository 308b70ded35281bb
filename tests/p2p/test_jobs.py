"""The job protocol: accept/decline, result delivery, and bad input on the stream."""

from __future__ import annotations

import secrets

import pytest
import trio
from conftest import CHAIN_ID, CONTRACT, make_offer, make_request
from libp2p.peer.id import ID
from nodes import running, wait_for

from node.p2p.framing import encode_uvarint, read_frame
from node.p2p.jobs import CREATED_PROTOCOL, JOB_PROTOCOL, JobProtocolError
from node.p2p.node import P2PNode
from node.p2p.wire import JobCreatedNotice, TicketRequest, encode_frame
from protocol.identity import Identity
from protocol.messages import (
    Attestation,
    DeclineReason,
    Determinism,
    JobAccept,
    JobDecline,
    JobRequest,
    ResultManifest,
    decode,
    encode,
)

pytestmark = pytest.mark.timeout(90)


def provider_handler(node_box: list[P2PNode]):  # type: ignore[no-untyped-def]
    async def on_request(peer: str, req: JobRequest) -> JobAccept | JobDecline:
        if req.max_price_per_gpu_second < 100:
            return JobDecline(request_id=req.request_id, reason=DeclineReason.PRICE)
        offer = make_offer(node_box[0].identity, client=req.client, nonce=7)
        return JobAccept(request_id=req.request_id, spec_hash=req.spec.spec_hash(), offer=offer)

    return on_request


def manifest_for(provider: Identity, job_id: int = 3) -> ResultManifest:
    output = secrets.token_bytes(32)
    att = Attestation.create(
        provider,
        chain_id=CHAIN_ID,
        contract=CONTRACT,
        job_id=job_id,
        spec_hash=secrets.token_bytes(32),
        output_hash=output,
        runtime="torch-2.13.0/cpu",
        determinism=Determinism.EXACT,
        metered_millis=5,
    )
    return ResultManifest(job_id=job_id, output=output, output_size=10, attestation=att)


def test_request_accept_decline_and_result_delivery() -> None:
    box: list[P2PNode] = []
    results: list[tuple[str, int]] = []

    async def on_result(peer: str, manifest: ResultManifest) -> bool:
        results.append((peer, manifest.job_id))
        return True

    async def main() -> None:
        async with running(2, on_job_request=provider_handler(box), on_result=on_result) as nodes:
            provider, client = nodes
            box.append(provider)
            req = make_request(client.identity)
            with trio.fail_after(10):
                answer = await client.jobs.request(provider.peer_id, req)
            assert isinstance(answer, JobAccept)
            assert answer.offer.client == client.identity.address
            cheap = msgspec_replace(make_request(client.identity), max_price_per_gpu_second=1)
            answer = await client.jobs.request(provider.peer_id, cheap)
            assert isinstance(answer, JobDecline) and answer.reason is DeclineReason.PRICE
            assert answer.request_id == cheap.request_id
            # a request naming someone else as the client is declined
            spoof = make_request(Identity.generate())
            answer = await client.jobs.request(provider.peer_id, spoof)
            assert isinstance(answer, JobDecline) and answer.reason is DeclineReason.BAD_REQUEST
            # result delivery: provider -> client
            good = manifest_for(provider.identity)
            ack = await provider.jobs.deliver_result(client.peer_id, good)
            assert ack.ok and results == [(provider.peer_id, 3)]
            # an attestation by someone else than the sender is refused
            forged = manifest_for(Identity.generate())
            ack = await provider.jobs.deliver_result(client.peer_id, forged)
            assert not ack.ok and "not signed by the sender" in ack.reason
            assert len(results) == 1

    trio.run(main)


def msgspec_replace(req: JobRequest, **changes: int) -> JobRequest:
    import msgspec

    return msgspec.structs.replace(req, **changes)


async def raw_exchange(client: P2PNode, provider: P2PNode, payload: bytes) -> bytes | str:
    stream = await client.host.new_stream(ID.from_base58(provider.peer_id), [JOB_PROTOCOL])
    await stream.write(payload)
    try:
        return await read_frame(stream, max_bytes=1 << 16, time_limit=5)
    except Exception as exc:  # noqa: BLE001 - the test inspects what happened
        return type(exc).__name__


def test_garbage_oversized_and_invalid_input_on_the_job_stream() -> None:
    box: list[P2PNode] = []

    async def main() -> None:
        async with running(2, on_job_request=provider_handler(box)) as (provider, client):
            box.append(provider)
            # 1. garbage that is a valid frame but not a message -> bad_request decline
            got = await raw_exchange(client, provider, encode_uvarint(5) + b"\xff" * 5)
            assert isinstance(got, bytes)
            msg = decode(got)
            assert isinstance(msg, JobDecline) and msg.reason is DeclineReason.BAD_REQUEST
            # 2. an oversized frame -> reset without reading it
            got = await raw_exchange(client, provider, encode_uvarint(10**8) + b"x" * 100)
            assert got == "StreamBroken"
            # 3. a broken varint -> reset
            got = await raw_exchange(client, provider, b"\xff" * 12)
            assert got == "StreamBroken"
            # 4. a wrong message type (an offer on the job stream) -> decline
            offer = encode(make_offer(client.identity))
            got = await raw_exchange(client, provider, encode_uvarint(len(offer)) + offer)
            assert isinstance(got, bytes) and isinstance(decode(got), JobDecline)
            # 5. silence -> the provider times out the read (read_timeout=3 s) and resets
            with trio.fail_after(8):
                got = await raw_exchange(client, provider, b"")
            assert got == "StreamBroken"
            assert provider.metrics.get("job_frames_bad", kind="FrameTimeout") == 1
            assert provider.guard.strikes(client.peer_id) == 4
            # the provider still serves a correct request (no crash, no state change)
            answer = await client.jobs.request(provider.peer_id, make_request(client.identity))
            assert isinstance(answer, JobAccept)
            # a fifth strike bans the client: it is disconnected and refused
            await raw_exchange(client, provider, encode_uvarint(10**8))
            await wait_for(lambda: provider.guard.is_banned(client.peer_id))
            await wait_for(lambda: client.peer_id not in provider.connected_peers())
            with pytest.raises(JobProtocolError):
                await client.jobs.request(provider.peer_id, make_request(client.identity))

    trio.run(main)


def test_rate_limit_and_stream_limit() -> None:
    from node.p2p.config import Limits

    box: list[P2PNode] = []
    limits = Limits(
        read_timeout=3.0, requests_per_second=0.5, request_burst=2, max_streams_per_peer=2
    )

    async def main() -> None:
        async with running(2, on_job_request=provider_handler(box), config={"limits": limits}) as (
            provider,
            client,
        ):
            box.append(provider)
            answers = [
                await client.jobs.request(provider.peer_id, make_request(client.identity))
                for _ in range(3)
            ]
            assert [type(a).__name__ for a in answers] == ["JobAccept", "JobAccept", "JobDecline"]
            assert isinstance(answers[2], JobDecline)
            assert answers[2].reason is DeclineReason.RATE_LIMITED
            assert provider.metrics.get("refused_rate", kind="request") == 1
            # the kept-open job stream holds a slot until closed
            assert provider.guard._streams.get(client.peer_id, 0) == 1
            await client.jobs.channels.close_all()
            await wait_for(lambda: provider.guard._streams.get(client.peer_id, 0) == 0)
            # two idle streams hold both slots; a third is reset at once, not after the timeout
            pid = ID.from_base58(provider.peer_id)
            idle = [await client.host.new_stream(pid, [JOB_PROTOCOL]) for _ in range(2)]
            await wait_for(lambda: provider.guard._streams.get(client.peer_id, 0) == 2)
            t0 = trio.current_time()
            try:
                got = await raw_exchange(client, provider, b"")
            except Exception as exc:  # noqa: BLE001 - reset while negotiating is also fine
                got = type(exc).__name__
            assert got in ("StreamBroken", "StreamFailure"), got
            assert trio.current_time() - t0 < 2.5
            assert provider.metrics.get("refused_streams") == 1
            for s in idle:
                await s.reset()

    trio.run(main)


def test_a_failing_handler_declines_and_the_node_survives() -> None:
    async def broken(peer: str, req: JobRequest) -> JobAccept | JobDecline:
        raise ZeroDivisionError("application bug")

    async def main() -> None:
        async with running(2, on_job_request=broken) as (provider, client):
            for _ in range(2):
                answer = await client.jobs.request(provider.peer_id, make_request(client.identity))
                assert isinstance(answer, JobDecline) and answer.reason is DeclineReason.CAPACITY
            assert provider.metrics.get("job_handler_errors") == 2

    trio.run(main)


def test_client_refuses_a_forged_or_mismatched_accept() -> None:
    other = Identity.generate()
    mode: list[str] = ["forged"]

    async def on_request(peer: str, req: JobRequest) -> JobAccept | JobDecline:
        if mode[0] == "forged":  # an offer signed by someone else than the provider
            offer = make_offer(other, client=req.client)
        else:  # the provider's own offer, but bound to another client
            offer = make_offer(box[0].identity, client=other.address)
        return JobAccept(request_id=req.request_id, spec_hash=req.spec.spec_hash(), offer=offer)

    box: list[P2PNode] = []

    async def main() -> None:
        async with running(2, on_job_request=on_request) as (provider, client):
            box.append(provider)
            for m, why in (("forged", "not the provider's own"), ("rebound", "another client")):
                mode[0] = m
                with pytest.raises(JobProtocolError, match=why):
                    await client.jobs.request(provider.peer_id, make_request(client.identity))

    trio.run(main)


def test_job_created_notice_reaches_the_handler_and_garbage_strikes() -> None:
    notices: list[tuple[str, JobCreatedNotice]] = []

    async def on_created(peer: str, notice: JobCreatedNotice) -> None:
        notices.append((peer, notice))

    async def main() -> None:
        async with running(2, on_created=on_created) as (provider, client):
            tx = secrets.token_bytes(32)
            await client.jobs.notify_created(
                provider.peer_id, JobCreatedNotice(job_id=9, tx_hash=tx)
            )
            await wait_for(lambda: len(notices) == 1)
            assert notices == [(client.peer_id, JobCreatedNotice(job_id=9, tx_hash=tx))]
            # undecodable (a short hash) -> reset and a strike; the handler never sees it
            bad = encode_frame(TicketRequest(cid=bytes(32), job_id=1))
            stream = await client.host.new_stream(
                ID.from_base58(provider.peer_id), [CREATED_PROTOCOL]
            )
            await stream.write(encode_uvarint(len(bad)) + bad)
            await wait_for(lambda: provider.guard.strikes(client.peer_id) == 1)
            assert len(notices) == 1
            assert provider.metrics.get("job_messages_bad") == 1

    trio.run(main)


def test_many_exchanges_on_one_stream_are_answered_in_order_per_item() -> None:
    """Several requests, results and notices share one stream each; every item gets
    its own answer (an accept, a decline, a refused ack) in the order sent."""
    box: list[P2PNode] = []
    results: list[int] = []
    notices: list[int] = []
    streams: list[str] = []

    async def on_result(peer: str, manifest: ResultManifest) -> bool:
        results.append(manifest.job_id)
        return True

    async def on_created(peer: str, notice: JobCreatedNotice) -> None:
        notices.append(notice.job_id)

    async def main() -> None:
        async with running(
            2, on_job_request=provider_handler(box), on_result=on_result, on_created=on_created
        ) as (provider, client):
            box.append(provider)
            for node in (provider, client):
                opened = node.host.new_stream

                async def counting(peer, protocols, opened=opened):  # type: ignore[no-untyped-def]
                    streams.append(str(protocols[0]))
                    return await opened(peer, protocols)

                node.host.new_stream = counting  # type: ignore[method-assign]
            good = [make_request(client.identity) for _ in range(5)]
            cheap = msgspec_replace(make_request(client.identity), max_price_per_gpu_second=1)
            spoof = make_request(Identity.generate())
            batch = [good[0], cheap, good[1], spoof, *good[2:]]
            with trio.fail_after(20):
                answers = await client.jobs.request_many(provider.peer_id, batch)
            assert len(answers) == len(batch)
            for req, answer in zip(batch, answers, strict=True):
                assert not isinstance(answer, JobProtocolError), answer
                assert answer.request_id == req.request_id
            kinds = [type(a).__name__ for a in answers]
            assert (
                kinds == ["JobAccept", "JobDecline", "JobAccept", "JobDecline"] + ["JobAccept"] * 3
            )
            assert answers[1].reason is DeclineReason.PRICE  # type: ignore[union-attr]
            assert answers[3].reason is DeclineReason.BAD_REQUEST  # type: ignore[union-attr]
            # results: a forged attestation in the middle is refused, the rest acknowledged
            manifests = [manifest_for(provider.identity, job_id=j) for j in (11, 12, 13)]
            manifests.insert(1, manifest_for(Identity.generate(), job_id=99))
            acks = await provider.jobs.deliver_results(client.peer_id, manifests)
            assert [a.job_id for a in acks] == [11, 99, 12, 13]  # type: ignore[union-attr]
            assert [a.ok for a in acks] == [True, False, True, True]  # type: ignore[union-attr]
            assert sorted(results) == [11, 12, 13]  # handled concurrently, answered in order
            tx = secrets.token_bytes(32)
            await client.jobs.notify_created_many(
                provider.peer_id, [JobCreatedNotice(job_id=j, tx_hash=tx) for j in (4, 5, 6)]
            )
            await wait_for(lambda: len(notices) == 3)
            assert notices == [4, 5, 6]
            # one stream per batch, not per item
            assert streams == [str(JOB_PROTOCOL), str(JOB_PROTOCOL), str(CREATED_PROTOCOL)]

    trio.run(main)


def test_a_stream_carries_a_bounded_number_of_exchanges() -> None:
    from node.p2p.jobs import MAX_EXCHANGES_PER_STREAM

    box: list[P2PNode] = []

    async def main() -> None:
        async with running(2, on_job_request=provider_handler(box)) as (provider, client):
            box.append(provider)
            requests = [make_request(client.identity) for _ in range(MAX_EXCHANGES_PER_STREAM)]
            with pytest.raises(ValueError):
                await client.jobs.request_many(provider.peer_id, [*requests, requests[0]])
            # a peer writing more frames than the cap on one stream gets no more answers
            stream = await client.host.new_stream(ID.from_base58(provider.peer_id), [JOB_PROTOCOL])
            one = encode(requests[0])
            await stream.write((encode_uvarint(len(one)) + one) * (MAX_EXCHANGES_PER_STREAM + 2))
            answered = 0
            with trio.fail_after(30):
                while True:
                    try:
                        await read_frame(stream, max_bytes=1 << 16, time_limit=10)
                    except Exception:  # noqa: BLE001 - the end of the stream ends the loop
                        break
                    answered += 1
            assert answered == MAX_EXCHANGES_PER_STREAM
            assert provider.metrics.get("job_streams_capped") == 1

    trio.run(main)


def test_frames_split_across_writes_and_a_stream_ending_inside_a_frame() -> None:
    box: list[P2PNode] = []
    seen: list[bytes] = []

    def handler(node_box: list[P2PNode]):  # type: ignore[no-untyped-def]
        inner = provider_handler(node_box)

        async def on_request(peer: str, req: JobRequest) -> JobAccept | JobDecline:
            seen.append(req.request_id)
            return await inner(peer, req)

        return on_request

    async def main() -> None:
        async with running(2, on_job_request=handler(box)) as (provider, client):
            box.append(provider)
            first, second = make_request(client.identity), make_request(client.identity)
            data = b"".join(encode_uvarint(len(encode(r))) + encode(r) for r in (first, second))
            stream = await client.host.new_stream(ID.from_base58(provider.peer_id), [JOB_PROTOCOL])
            for piece in (data[:1], data[1:7], data[7:-5], data[-5:]):  # frames cut anywhere
                await stream.write(piece)
                await trio.sleep(0.02)
            answers = [await read_frame(stream, max_bytes=1 << 16, time_limit=5) for _ in "ab"]
            assert [decode(a).request_id for a in answers] == [first.request_id, second.request_id]  # type: ignore[attr-defined]
            # half of a third frame, then the end of the stream: no handler call, no answer
            third = encode(make_request(client.identity))
            await stream.write(encode_uvarint(len(third)) + third[:10])
            await stream.close()
            await wait_for(lambda: provider.metrics.get("job_frames_bad", kind="StreamBroken") == 1)
            assert seen == [first.request_id, second.request_id]

    trio.run(main)


def test_kept_open_streams_are_reused_replaced_when_idle_and_retried_when_stale() -> None:
    """Exchanges reuse one stream; a stream idle past the client's limit is replaced
    before use; one the server already ended (its read timeout) fails on first use and
    the batch goes once more on a fresh stream, so the caller never sees it."""
    from node.p2p.config import Limits

    box: list[P2PNode] = []
    limits = Limits(read_timeout=1.0)

    async def main() -> None:
        async with running(2, on_job_request=provider_handler(box), config={"limits": limits}) as (
            provider,
            client,
        ):
            box.append(provider)
            channels = client.jobs.channels
            assert channels.max_idle_s == 0.5
            for _ in range(3):
                answer = await client.jobs.request(provider.peer_id, make_request(client.identity))
                assert isinstance(answer, JobAccept)
            assert channels.opened == 1
            await trio.sleep(0.7)  # idle past max_idle_s: replaced before use
            assert isinstance(
                await client.jobs.request(provider.peer_id, make_request(client.identity)),
                JobAccept,
            )
            assert channels.opened == 2
            channels.max_idle_s = 100.0
            await trio.sleep(1.5)  # the provider ends the idle stream after read_timeout
            await wait_for(lambda: provider.guard._streams.get(client.peer_id, 0) == 0)
            assert isinstance(
                await client.jobs.request(provider.peer_id, make_request(client.identity)),
                JobAccept,
            )
            assert channels.opened == 3  # the stale stream failed; the retry opened one
            # the provider counted no bad frame for the streams that simply fell idle
            assert provider.metrics.get("job_frames_bad", kind="FrameTimeout") == 0

    trio.run(main)
