"""One gpunet p2p peer in its own OS process, driven by JSON lines (tests and benchmarks).

stdout: one JSON object per line (``ready``, ``offer``, answers to commands).
stdin : commands, one JSON object per line:

  {"cmd": "publish", "nonce": n}          publish this peer's offer with nonce n
  {"cmd": "connect", "addr": "/ip4/…"}    dial a peer
  {"cmd": "book"}                         -> {"event": "book", "n": entries}
  {"cmd": "peers"}                        -> {"event": "peers", "n": …, "mesh": …}
  {"cmd": "provide", "key": hex}          DHT provide
  {"cmd": "find", "key": hex}             -> {"event": "found", "providers": […]}
  {"cmd": "job", "peer": id}              job round trip -> {"event": "job", "ms": …}
  {"cmd": "put_blob", "size": n}          -> {"event": "blob", "cid": hex}
  {"cmd": "fetch", "peer": id, "cid": hex, "via": …, "parallel": k} -> {"event": "fetched", …}
  {"cmd": "quit"}                         stop; -> {"event": "bye", "threads": […]}

Every peer accepts job requests (binding an offer to the client) and serves
blobs to anyone asking for job 1 — benchmark settings, not production ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from node.p2p.blobstore import BlobStore
from node.p2p.config import Limits, P2PConfig
from node.p2p.orderbook import AddResult
from node.p2p.service import P2PService
from protocol.content import ContentId
from protocol.identity import Identity
from protocol.messages import (
    Capabilities,
    Determinism,
    JobAccept,
    JobDecline,
    JobFormat,
    JobRequest,
    JobSpec,
    ModelRef,
    Offer,
)

CHAIN_ID = 31337
CONTRACT = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
CAPS = Capabilities(
    device_class="cpu",
    gpu_model="none",
    gpu_memory_mib=0,
    gpu_count=0,
    sandbox_tier=1,
    formats=(JobFormat.CATALOG_V1,),
    determinism=(Determinism.EXACT,),
    runtimes=("torch-2.13.0",),
    max_job_bytes=1 << 30,
)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def offer_of(identity: Identity, nonce: int, client: bytes | None = None) -> Offer:
    extra: dict[str, Any] = {"client": client} if client is not None else {}
    return Offer.create(
        identity,
        chain_id=CHAIN_ID,
        contract=CONTRACT,
        price_per_gpu_second=100 + nonce % 7,
        nonce=nonce,
        expiry=int(time.time()) + 3600,
        capabilities=CAPS,
        **extra,
    )


def job_request(identity: Identity) -> JobRequest:
    spec = JobSpec(
        model=ModelRef(arch="mlp-1", weights=secrets.token_bytes(32), weights_size=1000),
        inputs=secrets.token_bytes(32),
        inputs_size=100,
    )
    return JobRequest(
        request_id=secrets.token_bytes(16),
        client=identity.address,
        spec=spec,
        max_price_per_gpu_second=1000,
        max_payment=10**9,
        deadline=int(time.time()) + 3600,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", action="append", default=[])
    parser.add_argument("--no-dht", action="store_true")
    parser.add_argument("--store", default="", help="parent directory of the blob store")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)

    identity = Identity.generate()
    config = P2PConfig(
        chain_id=CHAIN_ID,
        contract=CONTRACT,
        bootstrap=tuple(args.bootstrap),
        enable_dht=not args.no_dht,
        eclipse_protection=False,  # every peer is 127.0.0.1
        limits=Limits(requests_per_second=1000, request_burst=1000),
    )
    root = Path(tempfile.mkdtemp(prefix="gpunet-peer-", dir=args.store or None))
    store_dir = root / "blobs"

    async def on_job(peer: str, req: JobRequest) -> JobAccept | JobDecline:
        offer = offer_of(identity, 1, client=req.client)
        return JobAccept(request_id=req.request_id, spec_hash=req.spec.spec_hash(), offer=offer)

    async def authorize(peer: str, cid: ContentId, job_id: int) -> bool:
        return job_id == 1

    def on_offer(offer: Offer, peer: str, result: AddResult) -> None:
        emit("offer", provider=offer.provider.hex(), nonce=offer.nonce, t=time.time())

    service = P2PService(
        identity,
        config,
        on_job_request=on_job,
        on_offer=on_offer,
        blob_store=BlobStore(store_dir),
        authorize=authorize,
    )
    await service.start()
    emit(
        "ready",
        peer_id=identity.peer_id,
        addrs=await service.addrs(),
        address=identity.address.hex(),
    )
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = json.loads(line)
        name = cmd["cmd"]
        try:
            if name == "quit":
                break
            if name == "publish":
                await service.publish_offer(offer_of(identity, int(cmd["nonce"])))
                emit("published", nonce=cmd["nonce"], t=time.time())
            elif name == "connect":
                emit("connected", peer=await service.connect(cmd["addr"]))
            elif name == "book":
                emit("book", n=len(service.book))
            elif name == "peers":
                mesh = await service.call(_mesh, service)
                emit("peers", n=len(await service.peers()), mesh=mesh)
            elif name == "provide":
                emit("provided", ok=await service.provide(cmd["key"]))
            elif name == "find":
                emit("found", providers=await service.find_providers(cmd["key"]))
            elif name == "job":
                t0 = time.perf_counter()
                answer = await service.request_job(cmd["peer"], job_request(identity))
                ms = (time.perf_counter() - t0) * 1000
                emit("job", ms=ms, accepted=isinstance(answer, JobAccept))
            elif name == "put_blob":
                data = os.urandom(int(cmd["size"]))
                assert service.blob_store is not None
                cid = service.blob_store.put_bytes(data)
                emit("blob", cid=cid.digest.hex())
            elif name == "fetch":
                cid = ContentId(bytes.fromhex(cmd["cid"]))
                t0 = time.perf_counter()
                path = await service.fetch_blob(
                    cmd["peer"],
                    cid,
                    1,
                    max_size=1 << 31,
                    via=cmd.get("via", "dataplane"),
                    parallel=int(cmd.get("parallel", 2)),
                )
                seconds = time.perf_counter() - t0
                size = path.stat().st_size
                path.unlink()
                emit("fetched", seconds=seconds, size=size)
            else:
                emit("error", message=f"unknown command {name}")
        except Exception as exc:  # noqa: BLE001 - reported to the driver, the peer keeps running
            emit("error", message=repr(exc))
    await service.stop()
    shutil.rmtree(root, ignore_errors=True)
    emit("bye", threads=[t.name for t in threading.enumerate() if not t.name.startswith("asyncio")])


async def _mesh(service: P2PService) -> int:
    return service.node.mesh_size()


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # skip slow interpreter teardown of library leftovers (notes §4.3)
