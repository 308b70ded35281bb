"""A provider's blob store stays bounded while it runs jobs, and never loses a blob it
still owes: real anvil, libp2p and sandbox, a provider with a ~100 kB bound."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from node.chain.devnet import Devnet
from node.client import AsyncClient, Result
from node.provider import ProviderDaemon
from node.runtime import formats
from node.runtime.pool import WorkerPool
from protocol.content import ContentId
from tests.e2e.verification_kit import (
    PRICE,
    committee_devnet,
    provider_daemon,
    sandbox_pool,
    sdk_client,
    until,
)

pytestmark = pytest.mark.timeout(180)

MLP = {"in": 64, "hidden": 128, "depth": 1, "out": 16}  # ~42 kB of weights
MAX_BYTES = 100_000  # about two jobs' blobs


@pytest.fixture
def devnet() -> Iterator[Devnet]:
    yield from committee_devnet()  # its own chain: the test warps its clock


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    yield from sandbox_pool()


async def job(client: AsyncClient, seed: int) -> Result:
    """One paid job with weights of its own (accepted: its challenge window still runs)."""
    weights = formats.random_weights("mlp@1", MLP, seed=seed)
    x = torch.randn(2, MLP["in"], generator=torch.Generator().manual_seed(seed))
    return await client.run(("mlp@1", MLP, weights), {"x": x}, max_price=PRICE)


def stored(daemon: ProviderDaemon) -> set[bytes]:
    return {bytes.fromhex(p.name) for p in daemon.blobs.root.iterdir() if len(p.name) == 64}


async def owed_and_written(daemon: ProviderDaemon, job_id: int) -> set[bytes]:
    """The job's blobs (spec, weights, inputs, output), once every file is written (a
    small output and the spec are written after the submission is mined)."""
    await until(lambda: job_id in daemon._job_blobs, 10, f"job {job_id}'s blobs")
    owed = set(daemon._job_blobs[job_id])
    await until(lambda: owed <= stored(daemon), 10, f"job {job_id}'s files")
    return owed


def test_the_store_stays_bounded_and_a_job_in_its_window_keeps_its_blobs(
    devnet: Devnet, pool: WorkerPool
) -> None:
    verifier = devnet.verifier()  # staked: may fetch every blob of a job in its window

    async def scenario() -> None:
        tmp = Path(tempfile.mkdtemp())
        async with (
            provider_daemon(
                devnet,
                pool,
                tmp,
                devnet.provider(),
                offer_ttl_s=600,  # offers stay valid on the warped chain clock
                max_blob_bytes=MAX_BYTES,
                blob_collect_s=1.0,
            ) as daemon,
            sdk_client(devnet, tmp, daemon) as client,
        ):
            # three jobs, all in their challenge window: owed, so kept past the bound
            early = [await job(client, seed) for seed in (1, 2, 3)]
            early_blobs = set()
            for r in early:
                early_blobs |= await owed_and_written(daemon, r.job_id)
            await asyncio.sleep(1.5)  # a collection pass or more
            assert early_blobs <= stored(daemon)
            assert daemon.blobs.usage()[1] > MAX_BYTES

            # their windows end: no longer owed, so collected down to the low watermark
            devnet.warp(devnet.params.challenge_window + 1)
            await until(
                lambda: daemon.blobs.usage()[1] <= daemon.blobs.low_watermark, 15, "a collection"
            )
            assert not early_blobs <= stored(daemon)

            # a job in its window, then blobs of the old jobs used again (served to a
            # peer), so the new job's are the least recently used; one more job goes over
            kept = await job(client, 4)
            kept_blobs = await owed_and_written(daemon, kept.job_id)
            for digest in stored(daemon) - kept_blobs:
                daemon.blobs.has(ContentId(digest))
            latest = await job(client, 5)
            latest_blobs = await owed_and_written(daemon, latest.job_id)
            await until(lambda: daemon.blobs.usage()[1] <= MAX_BYTES, 15, "a collection")
            # the old jobs' weights went, though used more recently than the kept job's
            # (a small old blob may stay: collection stops at the low watermark)
            left = {d: daemon.blobs.size(ContentId(d)) or 0 for d in stored(daemon)}
            owed = kept_blobs | latest_blobs
            assert owed <= left.keys()
            assert all(size < 10_000 for d, size in left.items() if d not in owed)
            assert daemon.blobs.usage() == (len(left), sum(left.values()))
            for digest in kept_blobs:
                cid = ContentId(digest)
                assert daemon.blobs.path(cid).is_file()
                assert await daemon._authorize(verifier.identity.peer_id, cid, kept.job_id)
            output = ContentId(kept.attestation.output_hash)
            assert await daemon._authorize(client.identity.peer_id, output, kept.job_id)

    asyncio.run(scenario())
