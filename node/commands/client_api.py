"""A client node's HTTP API (``gpunet client serve``): job submission for non-Python clients.

:class:`ClientNode` ties :func:`node.api.create_app` to a running
:class:`node.client.AsyncClient`: ``POST /v1/blobs`` stores weights and inputs
in the client's blob store, ``POST /v1/jobs`` (validated by the API) is checked
against those blobs, recorded at once (role client, state ``none``) and run in
a task the node owns; the job's record then follows it (``matched`` ...
``finalized``, or ``last_error`` and abandoned when no provider took it), and
the verified output is named in ``output`` and served by
``GET /v1/blobs/{cid}``. A submission that names a blob the node does not hold,
or holds with another size, is refused (``422 blob_missing`` /
``blob_size_mismatch``) with nothing recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.api import NodeInfo, SubmitRequest
    from node.client import AsyncClient
    from node.config import Config
    from node.metrics import Metrics

__all__ = ["ClientNode"]

log = logging.getLogger("gpunet.client")


class ClientNode:
    """The submitter behind a client node's API; owns the task of every submitted job."""

    def __init__(self, client: AsyncClient, config: Config, metrics: Metrics) -> None:
        self.client = client
        self.config = config
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, request: SubmitRequest) -> int:
        """Check the blobs, record the job, start working on it; returns the local id."""
        from node.api import SubmitRejected
        from node.store.records import NewJob, Role
        from protocol.content import ContentId
        from protocol.messages import JobFormat

        spec = request.spec
        if spec.format is not JobFormat.CATALOG_V1:
            raise SubmitRejected("unsupported_format", "a client node submits catalog-v1 jobs only")
        parts = (
            ("weights", spec.model.weights, spec.model.weights_size),
            ("inputs", spec.inputs, spec.inputs_size),
        )
        for what, digest, size in parts:
            cid = ContentId(digest)
            have = self.client.blobs.size(cid)
            if have is None:
                raise SubmitRejected(
                    "blob_missing", f"{what} {cid} is not on this node; upload it: POST /v1/blobs"
                )
            if have != size:
                raise SubmitRejected(
                    "blob_size_mismatch", f"{what} {cid} has {have} bytes, the job says {size}"
                )
        job = await asyncio.to_thread(
            self.client.store.jobs.create,
            NewJob(
                role=Role.CLIENT,
                spec_hash=spec.spec_hash(),
                max_payment=request.max_payment,
                price=request.max_price_per_gpu_second,
                deadline=int(time.time()) + request.deadline_s,
                spec=spec,
            ),
        )
        task = asyncio.create_task(self._work(job.id, request), name=f"api-job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job.id

    async def _work(self, local_id: int, request: SubmitRequest) -> None:
        from protocol.content import ContentId, cid_of
        from protocol.lifecycle import JobState
        from protocol.messages import encode

        spec, store = request.spec, self.client.store
        blobs = self.client.blobs
        try:
            weights = await asyncio.to_thread(blobs.path(ContentId(spec.model.weights)).read_bytes)
            inputs = await asyncio.to_thread(blobs.path(ContentId(spec.inputs)).read_bytes)
            result = await self.client.run(
                (spec.model.arch, dict(spec.model.config), weights),
                inputs,
                max_price=request.max_price_per_gpu_second,
                max_payment=request.max_payment,
                deadline_s=request.deadline_s,
                max_gpu_millis=spec.max_gpu_millis,
                min_tier=spec.min_sandbox_tier,
                determinism=spec.determinism,
                max_output_bytes=spec.max_output_bytes,
                record=local_id,
            )
        except Exception as exc:  # noqa: BLE001 - the job's outcome, recorded for the API
            message = f"{type(exc).__name__}: {exc}"
            log.warning("job %d: %s", local_id, message)
            job = await asyncio.to_thread(store.jobs.set_error, local_id, message)
            if job.state is JobState.NONE:
                await asyncio.to_thread(store.jobs.abandon, local_id, message)
            return
        await asyncio.to_thread(
            store.jobs.set_result, local_id, cid_of(result.output_bytes), encode(result.attestation)
        )

    async def close(self) -> None:
        """Cancel and await every job task (their records resume on the next start)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve the API while the block runs; yields its URL."""
        from node import __version__
        from node.api import TokenError, create_app, load_or_create_token, serve
        from node.commands.common import UserError
        from node.runtime import catalog

        cfg = self.config
        try:
            token = load_or_create_token(cfg.api_token_path)
        except TokenError as exc:
            raise UserError(str(exc), "fix the file, or set [api] token_file") from None
        client = self.client

        async def node_info() -> NodeInfo:
            from node.api import NodeInfo
            from protocol.identity import checksum_address

            return NodeInfo(
                version=__version__,
                address=client.identity.checksum_address,
                peer_id=client.identity.peer_id,
                roles=["client"],
                chain_id=cfg.chain.chain_id,
                escrow_address=checksum_address(client.escrow.address),
            )

        known = frozenset(catalog.CATALOG)
        app = create_app(
            store=client.store,
            token=token,
            metrics=self.metrics,
            node_info=node_info,
            submit=self.submit,
            config=cfg.api,
            client=cfg.client,
            known_models=lambda: known,
            blobs=client.blobs,
        )
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self.close)
            try:
                port = await stack.enter_async_context(serve(app, cfg.api.host, cfg.api.port))
            except OSError as exc:
                raise UserError(
                    f"cannot serve the API on {cfg.api.host}:{cfg.api.port}: {exc.strerror or exc}",
                    "choose another [api] port",
                ) from None
            yield f"http://{cfg.api.host}:{port}"
