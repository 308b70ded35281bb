"""Client nodes over HTTP and provider metrics, every node a separate OS process.

Real anvil, real ``gpunet provider start`` and ``gpunet client serve`` processes,
real libp2p and sandbox. A non-Python client's path (upload blobs, submit,
follow, download the verified output) runs over the client node's HTTP API;
the provider's ``/metrics`` is scraped and parsed while and after it works; a
client node is killed with SIGKILL after ``createJob`` and restarted from its
data dir, and the job still ends (finalized or refunded) with nothing lost.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from node.chain import lookup
from node.chain.anvil import Anvil, free_port
from node.chain.devnet import TOKEN, Actor, Devnet
from node.runtime import detect, formats
from tests.e2e.node_process import PROCESS_ESCROW, NodeProcess

pytestmark = pytest.mark.timeout(300)

PRICE = 10**15
ARCH = "resnet18@1"
RESNET = {"width": 16, "classes": 10, "image": 64}


@pytest.fixture
def devnet() -> Iterator[tuple[Anvil, Devnet]]:
    if detect.check().tier < 2:
        pytest.skip("the provider process needs sandbox tier 2 on this host")
    with Anvil() as anvil:
        yield anvil, Devnet(anvil.url, PROCESS_ESCROW)


def http(
    url: str, *, data: bytes | None = None, token: str | None = None, kind: str = "json"
) -> tuple[int, Any]:
    headers = {}
    if data is not None:
        headers["Content-Type"] = (
            "application/json" if kind == "json" else "application/octet-stream"
        )
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status, ctype = resp.read(), resp.status, resp.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        raw, status, ctype = exc.read(), exc.code, exc.headers["Content-Type"]
    if ctype.startswith("application/json"):
        return status, json.loads(raw)
    return status, raw


def scrape(api: str) -> dict[str, float]:
    """``/metrics`` parsed as a Prometheus scraper does: ``name{k=v,...} -> value``."""
    status, raw = http(api + "/metrics")
    assert status == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(raw.decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def upload_job(api: str, token: str, seed: int, batch: int, **over: Any) -> dict[str, Any]:
    """Upload weights and inputs over HTTP; the ``POST /v1/jobs`` body naming them."""
    weights = formats.random_weights(ARCH, RESNET, seed=1)
    x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    inputs = formats.save_safetensors({"x": x})
    cids = []
    for blob in (weights, inputs):
        status, answer = http(api + "/v1/blobs", data=blob, token=token, kind="octet")
        assert status == 201, answer
        assert answer["size"] == len(blob)
        cids.append(answer["cid"])
    return {
        "model": {"arch": ARCH, "config": RESNET, "weights": cids[0],
                  "weights_size": len(weights)},
        "inputs": cids[1], "inputs_size": len(inputs), "min_sandbox_tier": 2,
        "max_price_per_gpu_second": str(2 * PRICE), "max_payment": str(2 * PRICE * 60),
        "max_gpu_millis": 60_000, "deadline_s": 120, **over,
    }  # fmt: skip


def submit(api: str, token: str, body: dict[str, Any]) -> int:
    status, job = http(api + "/v1/jobs", data=json.dumps(body).encode(), token=token)
    assert status == 202, job
    assert job["state"] == "none" and job["role"] == "client"
    return int(job["id"])


def wait_state(api: str, local_id: int, states: set[str], within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, job = http(f"{api}/v1/jobs/{local_id}")
        assert status == 200, job
        if job["state"] in states:
            return job
        assert job["abandoned_at"] is None, job["last_error"]
        time.sleep(0.05)
    raise AssertionError(f"job {local_id} did not reach {states}: {job}")


def provider_node(tmp: Path, devnet: Devnet, actor: Actor, api: bool) -> NodeProcess:
    return NodeProcess.make(
        tmp / "provider", devnet, actor, ["provider", "start", "--yes"],
        '[p2p]\nlisten_addrs = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n'
        f"[provider]\nprice_per_gpu_second = {PRICE}\noffer_interval_s = 1\n"
        "max_concurrent_jobs = 1\n[runtime]\npool_size = 1\n"
        + ("[api]\nport = 0\n" if api else "[api]\nenabled = false\n"),
    )  # fmt: skip


def client_node(
    tmp: Path, devnet: Devnet, actor: Actor, bootstrap: str, p2p_port: int
) -> NodeProcess:
    return NodeProcess.make(
        tmp / "client", devnet, actor, ["client", "serve", "--wait", "20"],
        f'[p2p]\nlisten_addrs = ["/ip4/127.0.0.1/tcp/{p2p_port}"]\nmdns = false\n'
        f'bootstrap_peers = ["{bootstrap}"]\n'
        f"[client]\nmax_price_per_gpu_second = {10 * PRICE}\n[api]\nport = 0\n",
    )  # fmt: skip


def test_a_client_node_runs_jobs_over_http_and_the_provider_metrics_move(
    devnet: tuple[Anvil, Devnet], tmp_path: Path
) -> None:
    anvil, net = devnet
    prov_actor = net.provider()
    provider = provider_node(tmp_path, net, prov_actor, api=True)
    provider.start()
    client = None
    try:
        papi = provider.printed("api ")
        client = client_node(
            tmp_path, net, net.actor(deposit=100 * TOKEN), provider.printed("listening "), 0
        )
        client.start()
        capi, token = client.printed("api "), client.token
        assert "offers from 1 provider(s)" in client.log()
        status, info = http(capi + "/v1/node")
        assert status == 200 and info["roles"] == ["client"]
        # the offers it saw on gossip are listed
        for _ in range(100):  # written by the follower loop, a moment after gossip
            offers = http(capi + "/v1/offers")[1]["offers"]
            if offers:
                break
            time.sleep(0.05)
        assert {o["provider"].lower() for o in offers} == {"0x" + prov_actor.address.hex()}

        # bad submissions through the real process: clear errors, nothing recorded
        body = upload_job(capi, token, seed=0, batch=2)
        missing = {**body, "inputs": "sha256:" + "00" * 32}
        for bad, code in [
            (json.dumps(missing).encode(), "blob_missing"),
            (json.dumps({**body, "inputs_size": body["inputs_size"] + 1}).encode(),
             "blob_size_mismatch"),
            (json.dumps({**body, "model": {**body["model"], "arch": "nope@1"}}).encode(),
             "unknown_model"),
            (b"{not json", "malformed_json"),
        ]:  # fmt: skip
            status, err = http(capi + "/v1/jobs", data=bad, token=token)
            assert status in (400, 422) and err["error"]["code"] == code, err
        assert http(capi + "/v1/jobs", data=json.dumps(body).encode())[0] == 401
        assert http(capi + "/v1/jobs")[1]["jobs"] == []

        # four jobs at once on a provider with one worker: they queue
        earned_before = net.escrow.balance_of(prov_actor.address)
        depths: list[float] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                depths.append(scrape(papi)["gpunet_queue_depth"])
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            bodies = [upload_job(capi, token, seed=i, batch=4) for i in range(4)]
            ids = [submit(capi, token, b) for b in bodies]
            jobs = [wait_state(capi, i, {"finalized"}, 120) for i in ids]
        finally:
            done.set()
            watcher.join()

        # each output is the right tensor, fetched over HTTP from the client node
        weights = formats.random_weights(ARCH, RESNET, seed=1)
        model = formats.load_model(ARCH, RESNET, weights)
        for i, local_id in enumerate(ids):
            job = jobs[i]
            for _ in range(100):  # the output is named just after the accept
                if job["output"] is not None:
                    break
                time.sleep(0.05)
                job = http(f"{capi}/v1/jobs/{local_id}")[1]
            assert job["attestation"]["provider"] == prov_actor.identity.checksum_address
            status, data = http(f"{capi}/v1/blobs/{job['output']}", token=token)
            assert status == 200
            x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(i))
            expected = formats.run(ARCH, RESNET, model, formats.save_safetensors({"x": x}))
            got = formats.parse_safetensors(data, "output")
            assert torch.allclose(got["logits"], expected["logits"], atol=1e-4)

        earned = net.escrow.balance_of(prov_actor.address) - earned_before
        assert earned > 0
        provider_metrics = {}
        for _ in range(100):  # the provider sees the last JobFinalized log a poll later
            provider_metrics = scrape(papi)
            if provider_metrics["gpunet_earnings_total"] == earned:
                break
            time.sleep(0.05)
        assert provider_metrics["gpunet_earnings_total"] == earned
        assert max(depths) >= 1, depths  # a job waited for the one worker
        assert provider_metrics["gpunet_queue_depth"] == 0
        (busy,) = [
            v
            for k, v in provider_metrics.items()
            if k.startswith("gpunet_device_utilization_ratio{device=cpu-")
        ]
        assert 0 < busy <= 1
        assert provider_metrics["gpunet_jobs{role=provider,state=finalized}"] == 4
        client_metrics = scrape(capi)
        assert client_metrics["gpunet_jobs{role=client,state=finalized}"] == 4
        assert client_metrics["gpunet_jobs{role=client,state=none}"] == 0

        # the chain goes away: the provider's failed RPC calls are counted
        assert not any(k.startswith("gpunet_rpc_errors_total") for k in provider_metrics)
        anvil.stop()
        errors = 0.0
        for _ in range(100):
            errors = sum(
                v for k, v in scrape(papi).items() if k.startswith("gpunet_rpc_errors_total")
            )
            if errors:
                break
            time.sleep(0.1)
        assert errors > 0
    finally:
        if client is not None:
            client.stop()
        provider.stop()


def test_a_client_process_killed_after_create_job_restarts_and_the_job_ends(
    devnet: tuple[Anvil, Devnet], tmp_path: Path
) -> None:
    _, net = devnet
    prov_actor, client_actor = net.provider(), net.actor(deposit=100 * TOKEN)
    provider = provider_node(tmp_path, net, prov_actor, api=False)
    provider.start()
    client = client_node(tmp_path, net, client_actor, provider.printed("listening "), free_port())
    try:
        client.start()
        capi, token = client.printed("api "), client.token
        held_before = net.token_balance_of_escrow()
        body = upload_job(capi, token, seed=5, batch=8, deadline_s=35)
        local_id = submit(capi, token, body)
        matched = wait_state(capi, local_id, {"matched", "submitted", "finalized"}, 60)
        client.kill()  # SIGKILL: no cleanup, right after createJob was recorded
        assert matched["state"] == "matched", matched  # killed before it could accept
        job_id = matched["job_id"]
        assert job_id is not None

        client.args[3] = "0"  # --wait 0: restart without waiting for offers
        client.start()
        capi = client.printed("api ")
        job = wait_state(capi, local_id, {"finalized", "refunded"}, 120)
        # nothing lost: the same record, its onchain id and its whole history
        assert job["job_id"] == job_id
        shown = http(f"{capi}/v1/jobs/{local_id}")[1]
        events = [h["event"] for h in shown["history"]]
        assert events[0] == "createJob", events
        chain = [e.name for e in lookup.job_events(net.escrow, job_id)]
        if job["state"] == "finalized":  # the provider ran it and finalized after the window
            assert events[-1] == "finalize" and "ResultSubmitted" in chain, (events, chain)
            (paid,) = [
                e.fields["payment"]
                for e in lookup.job_events(net.escrow, job_id)
                if e.name == "JobFinalized"
            ]
            assert net.escrow.balance_of(prov_actor.address) == paid
            assert net.escrow.balance_of(client_actor.address) == 100 * TOKEN - paid
        else:  # the provider could not fetch from the dead client: refunded with the penalty
            assert events[-1] == "refund" and "JobRefunded" in chain, (events, chain)
            penalty = net.params.refund_penalty
            assert net.escrow.balance_of(client_actor.address) == 100 * TOKEN + penalty
        # money is conserved: the escrow holds exactly what its accounts own
        held = net.token_balance_of_escrow()
        owned = sum(
            net.escrow.balance_of(a.address)
            + net.escrow.stake_of(a.address).active
            + net.escrow.stake_of(a.address).unbonding
            for a in net.actors
        )
        assert held == owned == held_before
    finally:
        with contextlib.suppress(Exception):
            client.stop()
        provider.stop()
