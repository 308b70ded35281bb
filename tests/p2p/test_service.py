"""The asyncio facade: callbacks cross the bridge both ways; stop leaves no threads."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from conftest import make_config, make_offer, make_request

from node.p2p.blobstore import BlobStore
from node.p2p.bridge import BridgeClosed
from node.p2p.orderbook import AddResult
from node.p2p.service import P2PService
from protocol.content import ContentId
from protocol.identity import Identity
from protocol.messages import DeclineReason, JobAccept, JobDecline, JobRequest, Offer

pytestmark = pytest.mark.timeout(90)


def test_two_services_in_one_asyncio_loop(tmp_path: Path) -> None:
    baseline = set(threading.enumerate())
    provider_id, client_id = Identity.generate(), Identity.generate()
    seen_offers: list[tuple[str, AddResult]] = []
    loops: list[asyncio.AbstractEventLoop] = []

    async def on_job(peer: str, req: JobRequest) -> JobAccept | JobDecline:
        loops.append(asyncio.get_running_loop())  # runs on asyncio, not in trio
        await asyncio.sleep(0.01)
        return JobDecline(request_id=req.request_id, reason=DeclineReason.CAPACITY)

    async def authorize(peer: str, cid: ContentId, job_id: int) -> bool:
        loops.append(asyncio.get_running_loop())
        return peer == client_id.peer_id and job_id == 9

    def on_offer(offer: Offer, peer: str, result: AddResult) -> None:
        seen_offers.append((peer, result))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        provider = P2PService(
            provider_id,
            make_config(enable_dht=False),
            on_job_request=on_job,
            blob_store=BlobStore(tmp_path / "p"),
            authorize=authorize,
        )
        client = P2PService(
            client_id,
            make_config(enable_dht=False),
            on_offer=on_offer,
            blob_store=BlobStore(tmp_path / "c"),
        )
        await provider.start()
        await client.start()
        try:
            await client.connect((await provider.addrs())[0])
            assert await client.peers() == [provider.peer_id]
            answer = await client.request_job(provider.peer_id, make_request(client_id))
            assert isinstance(answer, JobDecline) and answer.reason is DeclineReason.CAPACITY
            assert provider.blob_store is not None
            data = os.urandom(300_000)
            cid = provider.blob_store.put_bytes(data)
            path = await client.fetch_blob(provider.peer_id, cid, 9, max_size=1 << 20)
            assert path.read_bytes() == data
            # offers: retry publishing until the mesh has formed
            for nonce in range(1, 40):
                await provider.publish_offer(make_offer(provider_id, nonce=nonce))
                await asyncio.sleep(0.25)
                if client.query():
                    break
            assert client.query()[0].offer.provider == provider_id.address
            await asyncio.sleep(0.1)
            assert seen_offers and seen_offers[0][0] == provider.peer_id
            assert loops and all(x is loop for x in loops)
        finally:
            await client.stop()
            await provider.stop()
        assert provider.done.done() and provider.done.exception() is None
        with pytest.raises(BridgeClosed):
            await client.peers()

    asyncio.run(main())
    leftover = [t for t in threading.enumerate() if t not in baseline]
    assert leftover == [], leftover
