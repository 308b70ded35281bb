"""The HTTP API (aiohttp): routes, token auth, JSON errors, and serving.

Every route answers JSON (``/metrics`` the Prometheus text format, a blob its
bytes); every error is ``{"error": {"code": ..., "message": ...}}`` with a
4xx/5xx status. Routes that change state need ``Authorization: Bearer <token>``;
so do the blob routes (they carry a client's data); with ``api.auth_reads`` the
read routes do too (``/health`` never does). Blob uploads stream to disk and
stop at ``api.max_blob_bytes``. Bad input
(malformed JSON, wrong types, unknown fields or models, bodies over
``api.max_body_bytes``) is refused before anything is handed on, so it changes
nothing. Store calls run in a worker thread (the store is thread-safe), so a
slow disk never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any, Final, NoReturn

import msgspec
from aiohttp import web

from node import __version__
from node.api.auth import check_bearer
from node.api.blobs import BlobTooLarge, receive_blob
from node.api.models import (
    DETERMINISM_NAMES,
    JobSubmitter,
    NodeInfoSource,
    SubmitJobBody,
    SubmitRejected,
    SubmitRequest,
)
from node.api.views import history_json, job_json, offer_json
from node.config import ApiConfig, ClientConfig
from node.metrics import CONTENT_TYPE, Metrics
from node.p2p.blobstore import BlobStore
from node.store import Role, Store, StoreError
from protocol.content import ContentId
from protocol.errors import IdentityError, InvalidField
from protocol.identity import parse_address
from protocol.lifecycle import JobState
from protocol.messages import JobSpec, ModelRef

__all__ = ["ApiError", "create_app", "serve"]

log = logging.getLogger(__name__)

_U64_MAX: Final = 2**64 - 1
_MAX_LIMIT: Final = 1000
_JSON: Final = msgspec.json.Encoder()
_SUBMIT_DECODER: Final = msgspec.json.Decoder(SubmitJobBody)
_SPEC_DECODER: Final = msgspec.msgpack.Decoder(JobSpec)
_SPEC_ENCODER: Final = msgspec.msgpack.Encoder(order="deterministic")


class ApiError(Exception):
    """An error answered to the caller as JSON."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _json(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_JSON.encode(data), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, code: str, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="gpunet"'} if status == 401 else None
    return _json({"error": {"code": code, "message": message}}, status, headers)


_HTTP_CODES: Final = {
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "method not allowed on this route"),
    413: ("body_too_large", "the body is too large"),
}


class _Api:
    """Handlers and middlewares, closed over the node's parts."""

    def __init__(
        self,
        *,
        store: Store,
        token: str,
        metrics: Metrics,
        node_info: NodeInfoSource,
        submit: JobSubmitter,
        config: ApiConfig,
        client: ClientConfig,
        known_models: Callable[[], Collection[str]] | None,
        clock: Callable[[], float],
        blobs: BlobStore | None = None,
    ) -> None:
        self.blobs = blobs
        self.store = store
        self.token = token
        self.metrics = metrics
        self.node_info = node_info
        self.submit = submit
        self.config = config
        self.client = client
        self.known_models = known_models
        self.clock = clock

    # ------------------------------------------------------------ middlewares
    @web.middleware
    async def errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Turn every failure into a JSON error, and count requests by route and status."""
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _error(exc.status, exc.code, exc.message)
        except web.HTTPException as exc:
            code, message = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
            if exc.status == 413:
                message = f"the body is over {self.config.max_body_bytes} bytes"
            response = _error(exc.status, code, message)
        except Exception:
            log.exception("API handler failed: %s %s", request.method, request.path)
            response = _error(500, "internal", "internal error; see the node's log")
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self.metrics.api_requests.labels(route, str(response.status)).inc()
        return response

    @web.middleware
    async def auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Require the bearer token for state changes (and reads, with ``auth_reads``)."""
        reads = request.method in ("GET", "HEAD") and not request.path.startswith("/v1/blobs")
        if request.path != "/health" and (not reads or self.config.auth_reads):
            header = request.headers.get("Authorization")
            if not header:
                raise ApiError(
                    401, "missing_token", "this route needs 'Authorization: Bearer <token>'"
                )
            if not check_bearer(header, self.token):
                raise ApiError(401, "invalid_token", "the bearer token is not valid")
        return await handler(request)

    # ------------------------------------------------------------ routes
    async def health(self, request: web.Request) -> web.Response:
        """Liveness."""
        return _json({"status": "ok", "version": __version__})

    async def node(self, request: web.Request) -> web.Response:
        """Node identity, roles, chain and sandbox report (from the node's callback)."""
        _no_params(request)
        info = await self.node_info()
        return _json(msgspec.to_builtins(info) | {"schema_version": self.store.schema_version})

    async def offers(self, request: web.Request) -> web.Response:
        """Offers seen on the network, cheapest first, with filters."""
        q = _Query(
            request,
            {"provider", "device_class", "min_tier", "max_price", "include_expired", "limit"},
        )
        provider = q.address("provider")
        device_class = q.text("device_class", 64)
        min_tier = q.integer("min_tier", 0, 3)
        max_price = q.integer("max_price", 0, _U64_MAX)
        include_expired = q.boolean("include_expired") or False
        limit = q.integer("limit", 1, _MAX_LIMIT) or 100
        records = await asyncio.to_thread(
            self.store.offers.select,
            now=int(self.clock()),
            provider=provider,
            device_class=device_class,
            min_tier=min_tier,
            max_price=max_price,
            include_expired=include_expired,
            limit=limit,
        )
        return _json({"offers": [offer_json(r) for r in records]})

    async def jobs(self, request: web.Request) -> web.Response:
        """Jobs, newest first, paged with ``before``."""
        q = _Query(request, {"role", "state", "in_flight", "before", "limit"})
        role = q.choice("role", {r.value: r for r in Role})
        states = q.choices("state", {s.name.lower(): s for s in JobState})
        in_flight = q.boolean("in_flight")
        before = q.integer("before", 1, 2**63 - 1)
        limit = q.integer("limit", 1, _MAX_LIMIT) or 100
        found = await asyncio.to_thread(
            self.store.jobs.select,
            role=role,
            states=states,
            in_flight=in_flight,
            before=before,
            limit=limit,
        )
        next_before = found[-1].id if len(found) == limit else None
        return _json({"jobs": [job_json(j) for j in found], "next_before": next_before})

    async def job(self, request: web.Request) -> web.Response:
        """One job with its history."""
        _no_params(request)
        raw = request.match_info["id"]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
            raise ApiError(400, "invalid_id", f"a job id is a positive integer, not {raw[:40]!r}")
        local_id = int(raw)

        def load() -> tuple[Any, Any]:
            job = self.store.jobs.get(local_id)
            return job, self.store.jobs.history(local_id)

        try:
            job, history = await asyncio.to_thread(load)
        except StoreError:
            raise ApiError(404, "job_not_found", f"no job with id {local_id}") from None
        return _json(job_json(job) | {"history": history_json(history)})

    async def submit_job(self, request: web.Request) -> web.Response:
        """Validate a job submission strictly, then hand it to the submitter."""
        _no_params(request)
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the job as application/json")
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            raise ApiError(
                413, "body_too_large", f"the body is over {self.config.max_body_bytes} bytes"
            )
        body = await request.read()  # aiohttp enforces client_max_size on chunked bodies too
        submission = self._validate(body)
        try:
            local_id = await self.submit(submission)
        except SubmitRejected as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        job = await asyncio.to_thread(self.store.jobs.get, local_id)
        return _json(job_json(job), 202, {"Location": f"/v1/jobs/{local_id}"})

    async def upload_blob(self, request: web.Request) -> web.Response:
        """Store a blob (weights or inputs) that a job will name by content id."""
        _no_params(request)
        if self.blobs is None:
            raise ApiError(
                422, "not_a_client", "this node keeps no client blobs; run a client node"
            )
        if request.content_type != "application/octet-stream":
            raise ApiError(
                415, "unsupported_media_type", "send the blob as application/octet-stream"
            )
        limit = self.config.max_blob_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "body_too_large", f"the blob is over {limit} bytes")
        try:
            cid, size = await receive_blob(request.content, self.blobs, limit)
        except BlobTooLarge:
            raise ApiError(413, "body_too_large", f"the blob is over {limit} bytes") from None
        return _json({"cid": str(cid), "size": size}, 201, {"Location": f"/v1/blobs/{cid}"})

    async def blob(self, request: web.Request) -> web.StreamResponse:
        """The bytes of a blob this node holds (an upload, or a job's fetched output)."""
        _no_params(request)
        raw = request.match_info["cid"]
        try:
            cid = ContentId.parse(raw)
        except InvalidField:
            raise ApiError(
                400, "invalid_cid", f"a content id is sha256:<64 hex>, not {raw[:80]!r}"
            ) from None
        if self.blobs is None or not self.blobs.has(cid):
            raise ApiError(404, "blob_not_found", f"this node holds no blob {cid}")
        return web.FileResponse(
            self.blobs.path(cid), headers={"Content-Type": "application/octet-stream"}
        )

    async def metrics_text(self, request: web.Request) -> web.Response:
        """Prometheus metrics (job counts refreshed from the store on each scrape)."""
        counts = await asyncio.to_thread(self.store.jobs.counts)
        self.metrics.set_job_counts({(role.value, state): n for (role, state), n in counts.items()})
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    # ------------------------------------------------------------ validation
    def _validate(self, body: bytes) -> SubmitRequest:
        try:
            parsed = _SUBMIT_DECODER.decode(body)
        except msgspec.ValidationError as exc:
            raise ApiError(422, "invalid_field", _field_message(str(exc))) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        spec = JobSpec(
            format=parsed.format,
            model=ModelRef(
                arch=parsed.model.arch,
                config=dict(parsed.model.config),
                weights=bytes.fromhex(parsed.model.weights[7:]),
                weights_size=parsed.model.weights_size,
            ),
            inputs=bytes.fromhex(parsed.inputs[7:]),
            inputs_size=parsed.inputs_size,
            determinism=DETERMINISM_NAMES[parsed.determinism],
            min_sandbox_tier=(
                self.client.min_sandbox_tier
                if parsed.min_sandbox_tier is None
                else parsed.min_sandbox_tier
            ),
            max_output_bytes=parsed.max_output_bytes,
            max_gpu_millis=parsed.max_gpu_millis,
        )
        try:  # the protocol's own rules (config keys, ranges) decide, not a copy of them
            spec = _SPEC_DECODER.decode(_SPEC_ENCODER.encode(spec))
        except (msgspec.ValidationError, ValueError, OverflowError, TypeError) as exc:
            raise ApiError(422, "invalid_field", _field_message(str(exc))) from None
        if self.known_models is not None and spec.model.arch not in self.known_models():
            raise ApiError(
                422, "unknown_model", f"model {spec.model.arch!r} is not in this node's catalog"
            )
        max_payment = int(parsed.max_payment)
        limit = self.client.max_price_per_gpu_second
        price = (
            limit
            if parsed.max_price_per_gpu_second is None
            else int(parsed.max_price_per_gpu_second)
        )
        if max_payment > _U64_MAX or price > _U64_MAX:
            raise ApiError(422, "invalid_field", "amounts must be below 2**64")
        if price > limit:
            raise ApiError(
                422,
                "price_above_limit",
                f"max_price_per_gpu_second {price} is above this node's client limit {limit}",
            )
        deadline = (
            self.client.default_deadline_s if parsed.deadline_s is None else parsed.deadline_s
        )
        return SubmitRequest(
            spec=spec, max_price_per_gpu_second=price, max_payment=max_payment, deadline_s=deadline
        )


def _field_message(text: str) -> str:
    """msgspec's ``... - at `$.a.b``` as ``a.b: ...``."""
    message, sep, path = text.partition(" - at `$")
    if not sep:
        return message
    field = path.rstrip("`").lstrip(".")
    return f"{field}: {message[0].lower()}{message[1:]}" if field else message


def _no_params(request: web.Request) -> None:
    if request.query:
        raise ApiError(
            400, "invalid_query", f"unknown query parameter {next(iter(request.query))!r}"
        )


class _Query:
    """Strict query-string parsing: unknown or repeated parameters are errors."""

    def __init__(self, request: web.Request, allowed: set[str]) -> None:
        self.q = request.query
        for key in self.q:
            if key not in allowed:
                raise ApiError(
                    400,
                    "invalid_query",
                    f"unknown query parameter {key[:40]!r} (known: {', '.join(sorted(allowed))})",
                )
            if len(self.q.getall(key)) > 1:
                raise ApiError(400, "invalid_query", f"query parameter {key!r} given twice")

    def _bad(self, key: str, what: str) -> NoReturn:
        raise ApiError(400, "invalid_query", f"{key} must be {what}, not {self.q[key][:40]!r}")

    def text(self, key: str, max_len: int) -> str | None:
        value = self.q.get(key)
        if value is not None and not 0 < len(value) <= max_len:
            self._bad(key, f"1-{max_len} characters")
        return value

    def integer(self, key: str, lo: int, hi: int) -> int | None:
        value = self.q.get(key)
        if value is None:
            return None
        if (
            not value.isascii()
            or not value.isdigit()
            or len(value) > 20
            or not lo <= int(value) <= hi
        ):
            self._bad(key, f"an integer in [{lo}, {hi}]")
        return int(value)

    def boolean(self, key: str) -> bool | None:
        value = self.q.get(key)
        if value is None:
            return None
        if value not in ("true", "false"):
            self._bad(key, "true or false")
        return value == "true"

    def address(self, key: str) -> bytes | None:
        value = self.q.get(key)
        if value is None:
            return None
        try:
            return parse_address(value)
        except IdentityError:
            self._bad(key, "a 0x address")

    def choice(self, key: str, options: Mapping[str, Any]) -> Any:
        value = self.q.get(key)
        if value is None:
            return None
        if value not in options:
            self._bad(key, "one of " + ", ".join(options))
        return options[value]

    def choices(self, key: str, options: Mapping[str, Any]) -> list[Any] | None:
        value = self.q.get(key)
        if value is None:
            return None
        parts = value.split(",")
        if len(parts) > len(options) or any(p not in options for p in parts):
            self._bad(key, "a comma-separated list of " + ", ".join(options))
        return [options[p] for p in parts]


def create_app(
    *,
    store: Store,
    token: str,
    metrics: Metrics,
    node_info: NodeInfoSource,
    submit: JobSubmitter,
    config: ApiConfig | None = None,
    client: ClientConfig | None = None,
    known_models: Callable[[], Collection[str]] | None = None,
    clock: Callable[[], float] = time.time,
    blobs: BlobStore | None = None,
) -> web.Application:
    """The API application; serve it with :func:`serve` (or aiohttp's test server).

    ``blobs`` is a client node's blob store (the blob routes); without it the
    node takes no uploads.
    """
    config = config or ApiConfig()
    if len(token) < 32:
        raise ValueError("the API token must be at least 32 characters")
    api = _Api(
        store=store,
        token=token,
        metrics=metrics,
        node_info=node_info,
        submit=submit,
        config=config,
        client=client or ClientConfig(),
        known_models=known_models,
        clock=clock,
        blobs=blobs,
    )
    app = web.Application(middlewares=[api.errors, api.auth], client_max_size=config.max_body_bytes)
    app.router.add_get("/health", api.health, allow_head=False)
    app.router.add_get("/metrics", api.metrics_text, allow_head=False)
    app.router.add_get("/v1/node", api.node, allow_head=False)
    app.router.add_get("/v1/offers", api.offers, allow_head=False)
    app.router.add_get("/v1/jobs", api.jobs, allow_head=False)
    app.router.add_post("/v1/jobs", api.submit_job)
    app.router.add_get("/v1/jobs/{id}", api.job, allow_head=False)
    app.router.add_post("/v1/blobs", api.upload_blob)
    app.router.add_get("/v1/blobs/{cid}", api.blob, allow_head=False)
    return app


@contextlib.asynccontextmanager
async def serve(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` on ``host:port`` for the duration of the block; yields the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        yield int(bound)
    finally:
        await runner.cleanup()
