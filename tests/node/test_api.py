"""The HTTP API on a real aiohttp test server and a real sqlite store: routes vs the
OpenAPI file, response schemas, token auth, strict validation with no state change."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import msgspec
import pytest
import pytest_asyncio
import yaml
from aiohttp.test_utils import TestClient, TestServer

from node.api import (
    NodeInfo,
    SandboxReport,
    SubmitRejected,
    SubmitRequest,
    TokenError,
    create_app,
    load_or_create_token,
    serve,
)
from node.api.models import DeviceInfo
from node.config import ApiConfig, ClientConfig
from node.metrics import Metrics
from node.p2p.blobstore import BlobStore
from node.store import NewJob, Role, Store
from protocol.content import ContentId
from protocol.lifecycle import JobEvent
from protocol.messages import encode
from tests.node.factories import PROVIDERS, attestation, h, offer, spec

OPENAPI = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text()
)
TOKEN = "t" * 43
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = 1_700_000_000.0
CID = "sha256:" + "ab" * 32
# what node.runtime.detect.SandboxReport.to_dict() gives
RUNTIME_REPORT = {
    "tier": 2,
    "formats": ["catalog-v1", "export-v2"],
    "landlock_abi": 4,
    "cgroup": "v2",
    "layers": {
        "bwrap": {"ok": True, "detail": "bubblewrap 0.8"},
        "seccomp": {"ok": False, "detail": "x"},
    },
}


class Node:
    """The parts the API is given: a real store, metrics, and recording callbacks."""

    def __init__(self, path: Path) -> None:
        self.store = Store(path, clock=lambda: NOW)
        self.metrics = Metrics("test")
        self.submitted: list[SubmitRequest] = []
        self.reject: SubmitRejected | None = None

    async def node_info(self) -> NodeInfo:
        return NodeInfo(
            version="0.1.0",
            address=PROVIDERS[0].checksum_address,
            peer_id=PROVIDERS[0].peer_id,
            roles=["provider", "client"],
            chain_id=31337,
            escrow_address="0x" + "00" * 20,
            sandbox=msgspec.convert(RUNTIME_REPORT | {"trusted": True}, SandboxReport),
            devices=[DeviceInfo(name="cpu0", device_class="cpu")],
        )

    async def submit(self, request: SubmitRequest) -> int:
        if self.reject is not None:
            raise self.reject
        self.submitted.append(request)
        job = self.store.jobs.create(
            NewJob(
                role=Role.CLIENT,
                spec=request.spec,
                spec_hash=request.spec.spec_hash(),
                max_payment=request.max_payment,
                price=request.max_price_per_gpu_second,
                deadline=int(NOW) + request.deadline_s,
                request_id=os.urandom(16),
            )
        )
        return job.id

    def app(self, config: ApiConfig | None = None, blobs: BlobStore | None = None) -> Any:
        return create_app(
            store=self.store,
            token=TOKEN,
            metrics=self.metrics,
            node_info=self.node_info,
            submit=self.submit,
            config=config or ApiConfig(max_body_bytes=64 * 1024),
            client=ClientConfig(max_price_per_gpu_second=5000, default_deadline_s=900),
            known_models=lambda: {"mlp@1", "resnet18@1"},
            clock=lambda: NOW,
            blobs=blobs,
        )


@pytest.fixture
def node(tmp_path: Path) -> Node:
    n = Node(tmp_path / "node.sqlite")
    yield n  # type: ignore[misc]
    n.store.close()


@pytest_asyncio.fixture
async def client(node: Node) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(node.app())) as c:
        yield c


def check_schema(path: str, method: str, status: int, body: Any) -> None:
    response = OPENAPI["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": OPENAPI["components"]}).validate(body)


def body(**over: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "model": {"arch": "mlp@1", "config": {"hidden": 64}, "weights": CID, "weights_size": 10},
        "inputs": CID,
        "inputs_size": 20,
        "max_payment": "18446744073709551615",
    }
    b.update(over)
    return b


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path: Path) -> None:
    n = Node(tmp_path / "s.sqlite")
    app = n.app()
    registered = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in OPENAPI["paths"].items() for m in ops}
    assert registered == documented
    n.store.close()


@pytest.mark.asyncio
async def test_reads_match_their_schemas(node: Node, client: TestClient[Any, Any]) -> None:
    node.store.offers.put(offer(0, price=700))
    node.store.offers.put(offer(1, price=900, tier=3))
    sp = spec("j")
    job = node.store.jobs.create(
        NewJob(
            role=Role.PROVIDER,
            spec=sp,
            spec_hash=sp.spec_hash(),
            max_payment=2**64 - 1,
            price=10,
            deadline=2_000_000_000,
            counterparty=PROVIDERS[1].address,
        )
    )
    node.store.jobs.transition(job.id, JobEvent.CREATE, job_id=5, block=3, tx_hash="0x" + "11" * 32)
    node.store.jobs.record_tx(job.id, JobEvent.SUBMIT, "0x" + "22" * 32)
    node.store.jobs.set_result(
        job.id, ContentId(h("out")), encode(attestation(5, sp.spec_hash(), h("out")))
    )
    node.store.jobs.transition(job.id, JobEvent.SUBMIT, block=4, tx_hash="0x" + "22" * 32)

    for path, url in [
        ("/health", "/health"),
        ("/v1/node", "/v1/node"),
        ("/v1/offers", "/v1/offers?min_tier=2&max_price=800"),
        ("/v1/jobs", "/v1/jobs?role=provider&state=submitted,matched&in_flight=true"),
        ("/v1/jobs/{id}", f"/v1/jobs/{job.id}"),
    ]:
        resp = await client.get(url)
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        check_schema(path, "get", 200, data)
        if path == "/v1/offers":
            assert [o["price_per_gpu_second"] for o in data["offers"]] == ["700"]
        if path == "/v1/jobs":
            assert [j["id"] for j in data["jobs"]] == [job.id]
        if path == "/v1/jobs/{id}":
            assert data["state"] == "submitted" and data["max_payment"] == str(2**64 - 1)
            assert [e["event"] for e in data["history"]] == ["createJob", "submitResult"]
            assert data["attestation"]["metered_millis"] == 1234
        if path == "/v1/node":
            assert data["sandbox"] == RUNTIME_REPORT | {"trusted": True}
            assert data["schema_version"] >= 1


@pytest.mark.asyncio
async def test_submit_needs_the_token(node: Node, client: TestClient[Any, Any]) -> None:
    for headers, code in [
        ({}, "missing_token"),
        ({"Authorization": "Bearer wrong"}, "invalid_token"),
        ({"Authorization": f"Basic {TOKEN}"}, "invalid_token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "invalid_token"),
    ]:
        resp = await client.post("/v1/jobs", json=body(), headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        data = await resp.json()
        assert data["error"]["code"] == code
        check_schema("/v1/jobs", "post", 401, data)
    assert node.store.jobs.count() == 0 and node.submitted == []

    resp = await client.post("/v1/jobs", json=body(), headers=AUTH)
    assert resp.status == 202, await resp.text()
    data = await resp.json()
    check_schema("/v1/jobs", "post", 202, data)
    assert resp.headers["Location"] == f"/v1/jobs/{data['id']}"
    assert (data["role"], data["state"], data["in_flight"]) == ("client", "none", True)
    [request] = node.submitted
    assert request.max_price_per_gpu_second == 5000  # the client config's default
    assert request.deadline_s == 900
    assert request.max_payment == 2**64 - 1
    assert request.spec.min_sandbox_tier == 2
    assert node.store.jobs.get(data["id"]).spec == request.spec


@pytest.mark.asyncio
async def test_auth_reads(node: Node) -> None:
    async with TestClient(TestServer(node.app(ApiConfig(auth_reads=True)))) as c:
        assert (await c.get("/health")).status == 200
        for url in ("/v1/jobs", "/v1/offers", "/v1/node", "/metrics", "/v1/jobs/1"):
            resp = await c.get(url)
            assert resp.status == 401, url
        assert (await c.get("/v1/jobs", headers=AUTH)).status == 200


BAD_SUBMISSIONS: list[tuple[str, Any, int, str, str]] = [
    ("malformed", b'{"model": ', 400, "malformed_json", "not valid JSON"),
    ("not an object", b"[1, 2]", 422, "invalid_field", "Expected `object`"),
    ("wrong type", body(inputs_size="20"), 422, "invalid_field", "inputs_size"),
    ("bool as int", body(inputs_size=True), 422, "invalid_field", "inputs_size"),
    ("negative", body(inputs_size=-1), 422, "invalid_field", "inputs_size"),
    ("unknown field", body(priority=1), 422, "invalid_field", "priority"),
    ("missing field", {"inputs": CID}, 422, "invalid_field", "model"),
    ("bad cid", body(inputs="sha256:XYZ"), 422, "invalid_field", "inputs"),
    ("amount as number", body(max_payment=5), 422, "invalid_field", "max_payment"),
    ("amount over u64", body(max_payment="99999999999999999999"), 422, "invalid_field", "2**64"),
    (
        "bad arch characters (protocol rule)",
        body(model={"arch": "mlp 1", "weights": CID, "weights_size": 1}),
        422,
        "invalid_field",
        "model.arch",
    ),
    ("bad determinism", body(determinism="roughly"), 422, "invalid_field", "determinism"),
    ("tier out of range", body(min_sandbox_tier=9), 422, "invalid_field", "min_sandbox_tier"),
    ("deadline too long", body(deadline_s=10**9), 422, "invalid_field", "deadline_s"),
    (
        "bad config key (protocol rule)",
        body(model={"arch": "mlp@1", "config": {"Hidden": 1}, "weights": CID, "weights_size": 1}),
        422,
        "invalid_field",
        "model.config",
    ),
    (
        "config value out of range",
        body(model={"arch": "mlp@1", "config": {"a": 10**24}, "weights": CID, "weights_size": 1}),
        422,
        "invalid_field",
        "model.config",
    ),
    ("not UTF-8", b'{"inputs": "\xff"}', 400, "malformed_json", "not valid JSON"),
    (
        "unknown model",
        body(model={"arch": "llama-70b", "weights": CID, "weights_size": 1}),
        422,
        "unknown_model",
        "llama-70b",
    ),
    ("price above limit", body(max_price_per_gpu_second="5001"), 422, "price_above_limit", "5000"),
    (
        "huge body",
        b'{"x": "' + b"a" * (80 * 1024) + b'"}',
        413,
        "body_too_large",
        "over 65536 bytes",
    ),
]


@pytest.mark.asyncio
async def test_bad_submissions_change_nothing(node: Node, client: TestClient[Any, Any]) -> None:
    for name, payload, status, code, text in BAD_SUBMISSIONS:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        resp = await client.post(
            "/v1/jobs", data=raw, headers=AUTH | {"Content-Type": "application/json"}
        )
        data = await resp.json()
        assert resp.status == status, (name, data)
        assert data["error"]["code"] == code, (name, data)
        assert text in data["error"]["message"], (name, data)
        check_schema("/v1/jobs", "post", status, data)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    resp = await client.post(
        "/v1/jobs", data=chunks(), headers=AUTH | {"Content-Type": "application/json"}
    )
    assert resp.status == 413  # no Content-Length: the cap applies while reading
    assert "over 65536 bytes" in (await resp.json())["error"]["message"]
    resp = await client.post("/v1/jobs", data=b"x=1", headers=AUTH | {"Content-Type": "text/plain"})
    assert (resp.status, (await resp.json())["error"]["code"]) == (415, "unsupported_media_type")
    node.reject = SubmitRejected("no_matching_offer", "no provider offers mlp@1", status=409)
    resp = await client.post("/v1/jobs", json=body(), headers=AUTH)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "no_matching_offer"
    assert node.store.jobs.count() == 0 and node.submitted == []


@pytest.mark.asyncio
async def test_bad_queries_and_routes(node: Node, client: TestClient[Any, Any]) -> None:
    cases = [
        ("/v1/jobs?limit=0", 400, "invalid_query"),
        ("/v1/jobs?limit=abc", 400, "invalid_query"),
        ("/v1/jobs?role=admin", 400, "invalid_query"),
        ("/v1/jobs?state=matched,bogus", 400, "invalid_query"),
        ("/v1/jobs?in_flight=yes", 400, "invalid_query"),
        ("/v1/jobs?sort=id", 400, "invalid_query"),
        ("/v1/jobs?limit=1&limit=2", 400, "invalid_query"),
        ("/v1/offers?provider=0x12", 400, "invalid_query"),
        ("/v1/offers?max_price=184467440737095516150", 400, "invalid_query"),
        ("/v1/node?x=1", 400, "invalid_query"),
        ("/v1/jobs/abc", 400, "invalid_id"),
        ("/v1/jobs/0", 400, "invalid_id"),
        ("/v1/jobs/99999999999999999999999", 400, "invalid_id"),
        ("/v1/jobs/999", 404, "job_not_found"),
        ("/nope", 404, "not_found"),
    ]
    for url, status, code in cases:
        resp = await client.get(url)
        data = await resp.json()
        assert (resp.status, data["error"]["code"]) == (status, code), url
    resp = await client.delete("/v1/jobs", headers=AUTH)
    assert (resp.status, (await resp.json())["error"]["code"]) == (405, "method_not_allowed")


@pytest.mark.asyncio
async def test_job_pages(node: Node, client: TestClient[Any, Any]) -> None:
    for i in range(5):
        sp = spec(f"p{i}")
        node.store.jobs.create(
            NewJob(
                role=Role.CLIENT,
                spec=sp,
                spec_hash=sp.spec_hash(),
                max_payment=1,
                price=1,
                deadline=1,
            )
        )
    seen: list[int] = []
    url = "/v1/jobs?limit=2"
    while True:
        data = await (await client.get(url)).json()
        seen += [j["id"] for j in data["jobs"]]
        if data["next_before"] is None:
            break
        url = f"/v1/jobs?limit=2&before={data['next_before']}"
    assert seen == [5, 4, 3, 2, 1]


@pytest.mark.asyncio
async def test_metrics(node: Node, client: TestClient[Any, Any]) -> None:
    await client.post("/v1/jobs", json=body(), headers=AUTH)
    node.metrics.queue_depth.set(3)
    node.metrics.device_utilization.labels("cuda:0").set(0.5)
    node.metrics.earned(2500)
    node.metrics.p2p_peers.set(4)
    node.metrics.rpc_error("eth_call")
    node.metrics.rpc_error("weird method name!")
    node.metrics.transition("client", JobEvent.CREATE)
    from node.p2p.metrics import P2PMetrics

    p2p = P2PMetrics()
    p2p.inc("blob_refused", reason="forbidden")
    p2p.inc("blob_refused", 2, reason="not_found")
    p2p.inc("blob_tickets_issued")
    node.metrics.add_counters("p2p", p2p.snapshot)
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    for line in [
        'gpunet_jobs{role="client",state="none"} 1.0',
        'gpunet_jobs{role="provider",state="finalized"} 0.0',
        "gpunet_queue_depth 3.0",
        'gpunet_device_utilization_ratio{device="cuda:0"} 0.5',
        "gpunet_earnings_total 2500.0",
        "gpunet_p2p_peers 4.0",
        'gpunet_rpc_errors_total{method="eth_call"} 1.0',
        'gpunet_rpc_errors_total{method="other"} 1.0',
        'gpunet_jobs_transitions_total{event="createJob",role="client"} 1.0',
        'gpunet_api_requests_total{route="/v1/jobs",status="202"} 1.0',
        'gpunet_node_info{version="test"} 1.0',
        'gpunet_p2p_blob_refused_total{reason="not_found"} 2.0',
        'gpunet_p2p_blob_refused_total{reason="forbidden"} 1.0',
        "gpunet_p2p_blob_tickets_issued_total 1.0",
    ]:
        assert line in text, line


@pytest.mark.asyncio
async def test_serve_binds_loopback_and_stops(node: Node) -> None:
    async with serve(node.app(), "127.0.0.1", 0) as port:
        assert port > 0
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/health") as resp,
        ):
            assert (await resp.json())["status"] == "ok"
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            await session.get(f"http://127.0.0.1:{port}/health")


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "d" / "api.token"
    token = load_or_create_token(path)
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        load_or_create_token(path)
    short = tmp_path / "short.token"
    short.write_text("abc\n")
    short.chmod(0o600)
    with pytest.raises(TokenError, match="at least 32"):
        load_or_create_token(short)
    with pytest.raises(ValueError, match="at least 32"):
        create_app(
            store=None,  # type: ignore[arg-type]
            token="short",
            metrics=Metrics(),
            node_info=None,  # type: ignore[arg-type]
            submit=None,  # type: ignore[arg-type]
        )


def test_the_runtime_report_converts_to_the_api_shape() -> None:
    from node.runtime import detect

    report = detect.SandboxReport(
        layers={"bwrap": detect.Layer(True, "ok"), "seccomp": detect.Layer(False, "no filter")},
        tier=1,
        landlock_abi=0,
        cgroup_kind="none",
        root=False,
    )
    converted = msgspec.convert(report.to_dict() | {"trusted": False}, SandboxReport)
    assert converted.tier == 1 and converted.layers["seccomp"].detail == "no filter"
    assert converted.formats == list(report.formats())


@pytest.mark.asyncio
async def test_blob_upload_and_download(node: Node, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    config = ApiConfig(max_body_bytes=64 * 1024, max_blob_bytes=100_000)
    octet = {"Content-Type": "application/octet-stream"}
    data = os.urandom(70_000)  # over max_body_bytes: blobs have their own limit
    async with TestClient(TestServer(node.app(config, blobs))) as c:
        assert (await c.post("/v1/blobs", data=data, headers=octet)).status == 401
        resp = await c.post("/v1/blobs", data=data, headers={**AUTH, **octet})
        assert resp.status == 201
        answer = await resp.json()
        check_schema("/v1/blobs", "post", 201, answer)
        cid = "sha256:" + hashlib.sha256(data).hexdigest()
        assert answer == {"cid": cid, "size": len(data)}
        assert resp.headers["Location"] == f"/v1/blobs/{cid}"
        assert blobs.path(ContentId.parse(cid)).read_bytes() == data
        # reads of a client's data need the token even without auth_reads
        assert (await c.get(f"/v1/blobs/{cid}")).status == 401
        got = await c.get(f"/v1/blobs/{cid}", headers=AUTH)
        assert got.status == 200 and await got.read() == data
        # bad uploads: wrong type, too large (declared or streamed); nothing is left behind
        before = sorted(p.name for p in blobs.root.rglob("*"))
        bad = await c.post("/v1/blobs", data=b"x", headers={**AUTH, "Content-Type": "text/plain"})
        assert bad.status == 415
        huge = os.urandom(100_001)
        bad = await c.post("/v1/blobs", data=huge, headers={**AUTH, **octet})
        assert bad.status == 413 and (await bad.json())["error"]["code"] == "body_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(11):
                yield b"z" * 10_000

        bad = await c.post("/v1/blobs", data=chunks(), headers={**AUTH, **octet})
        assert bad.status == 413
        assert sorted(p.name for p in blobs.root.rglob("*")) == before
        for path, status, code in [
            ("/v1/blobs/sha256:" + "00" * 32, 404, "blob_not_found"),
            ("/v1/blobs/sha256:xyz", 400, "invalid_cid"),
            ("/v1/blobs/" + cid.upper(), 400, "invalid_cid"),
        ]:
            resp = await c.get(path, headers=AUTH)
            assert resp.status == status, path
            err = await resp.json()
            assert err["error"]["code"] == code
            check_schema("/v1/blobs/{cid}", "get", status, err)


@pytest.mark.asyncio
async def test_a_node_without_a_blob_store_takes_no_uploads(
    node: Node, client: TestClient[Any, Any]
) -> None:
    headers = {**AUTH, "Content-Type": "application/octet-stream"}
    resp = await client.post("/v1/blobs", data=b"abc", headers=headers)
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "not_a_client"
    resp = await client.get("/v1/blobs/sha256:" + "ab" * 32, headers=AUTH)
    assert resp.status == 404
