"""``gpunet provider start`` (with its HTTP API), ``submit``, ``offers`` and ``jobs``, end to end.

One real provider process (``gpunet provider start``) on a devnet made by
``gpunet devnet up``; the client commands run in-process against it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from node.chain.anvil import free_port
from node.chain.escrow import Escrow
from node.chain.rpc import Rpc, parse_quantity
from node.commands.market import MAX_FILE_BYTES
from node.runtime import formats
from protocol.identity import parse_address
from tests.cli.conftest import PASSWORD, Node, assert_user_error, fund, invoke, make_node

ARCH = "resnet18@1"
CONFIG = {"width": 8, "classes": 10, "image": 32}
CONFIG_TEXT = "width=8,classes=10,image=32"
PRICE = 2_000_000_000_000

pytestmark = pytest.mark.timeout(180)


@dataclasses.dataclass
class Market:
    state: dict[str, Any]
    provider: Node
    peer_addr: str
    api_url: str
    files: Path
    proc: subprocess.Popen[bytes]

    def submit(self, node: Node, *args: str) -> Any:
        return invoke("submit", "--node-config", str(node.config), *args)


@pytest.fixture(scope="module")
def market(
    devnet_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Market]:
    root = tmp_path_factory.mktemp("market")
    provider = make_node(
        root / "provider",
        devnet_state,
        '[p2p]\nlisten_addrs = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n\n'
        f"[provider]\nprice_per_gpu_second = {PRICE}\noffer_interval_s = 1\n"
        "allow_untrusted = true\n\n[runtime]\npool_size = 1\n\n"
        f"[api]\nport = {free_port()}\n",
    )
    fund(devnet_state, provider, "200e18")
    staked = provider.run("stake", "--amount", "100e18")
    assert staked.exit_code == 0, staked.output
    files = root / "files"
    files.mkdir()
    (files / "w.safetensors").write_bytes(formats.random_weights(ARCH, CONFIG, seed=7))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    (files / "x.safetensors").write_bytes(formats.save_safetensors({"x": x}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "provider", "start", "--config", str(provider.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GPUNET_PASSWORD": PASSWORD},
    )
    try:
        lines = _read_until(proc, "ready:", 90)
        api = next(line.split()[1] for line in lines if line.startswith("api "))
        addr = next(line.split()[1] for line in lines if line.startswith("listening "))
        yield Market(devnet_state, provider, addr, api, files, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        assert proc.returncode == 0, out[-3000:].decode(errors="replace")


def _read_until(proc: subprocess.Popen[bytes], marker: str, timeout: float) -> list[str]:
    """Lines the process printed, up to the one containing ``marker``."""
    assert proc.stdout is not None
    fd, buffer = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffer += chunk
            lines = buffer.decode(errors="replace").splitlines()
            if any(marker in line for line in lines):
                return [line.strip() for line in lines]
    raise AssertionError(f"provider did not get ready: {buffer.decode(errors='replace')[-3000:]}")


def _tx_count(state: dict[str, Any], node: Node) -> int:
    rpc = Rpc(state["rpc_url"])
    raw = rpc.request("eth_getTransactionCount", ["0x" + node.identity.address.hex(), "latest"])
    return parse_quantity(raw, "nonce")


def test_submit_runs_a_job_and_writes_the_verified_output(market: Market, tmp_path: Path) -> None:
    escrow = Escrow(Rpc(market.state["rpc_url"]), parse_address(market.state["escrow_address"]))
    client = make_node(tmp_path / "client", market.state, "[p2p]\nmdns = false\n")
    fund(market.state, client, "10e18")
    provider_before = escrow.balance_of(market.provider.identity.address)
    out = tmp_path / "y.safetensors"
    result = market.submit(
        client,
        "--arch", ARCH, "--config", CONFIG_TEXT,
        "--weights", str(market.files / "w.safetensors"),
        "--inputs", str(market.files / "x.safetensors"),
        "--max-price", str(2 * PRICE), "--bootstrap", market.peer_addr,
        "--out", str(out), "--deadline", "120", "--min-tier", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    # the right tensor: the same model run bare, here
    weights = (market.files / "w.safetensors").read_bytes()
    model = formats.load_model(ARCH, CONFIG, weights)
    expected = formats.run(ARCH, CONFIG, model, (market.files / "x.safetensors").read_bytes())
    got = formats.parse_safetensors(data, "output")
    assert set(got) == {"logits"} and got["logits"].shape == (3, 10)
    assert torch.allclose(got["logits"], expected["logits"], atol=1e-4)
    summary = dict(
        (m.group(1).strip(), m.group(2))
        for m in re.finditer(r"^ *(\S(?:\S| (?! ))*)  +(.+)$", result.stdout, re.M)
    )
    assert summary["output"].startswith(f"sha256:{hashlib.sha256(data).hexdigest()} ")
    assert summary["provider"] == market.provider.identity.checksum_address
    assert summary["verified"].startswith("yes")
    cost = int(summary["cost"].split()[0])
    assert cost > 0 and int(summary["refund"].split()[0]) == 2 * PRICE * 10 - cost
    assert escrow.balance_of(market.provider.identity.address) == provider_before + cost
    for stage in ("selecting", "requesting", "matched", "accepted"):
        assert f"{stage}: " in result.stderr
    job_id = int(summary["job id"])

    # the provider's store has it, finalized, with its history
    listing = ""
    for _ in range(100):
        listing = market.provider.run("jobs", "--role", "provider", "--state", "finalized").output
        if re.search(rf"│\s+{job_id} │ finalized", listing):
            break
        time.sleep(0.1)
    local_id = re.search(rf"│\s+(\d+) │ provider │\s+{job_id} │ finalized", listing)
    assert local_id is not None, listing
    shown = market.provider.run("jobs", "show", local_id.group(1))
    assert shown.exit_code == 0, shown.output
    assert "createJob: none -> matched" in shown.output
    assert "submitResult: matched -> submitted" in shown.output
    assert client.identity.checksum_address in shown.output

    # and the client's: `gpunet jobs` on the client node finds what `gpunet submit` ran
    # (its store is <data_dir>/client; jobs read only <data_dir> and said "no store yet")
    mine = client.run("jobs")
    assert mine.exit_code == 0, mine.output
    row = re.search(rf"│\s+(\d+) │ client\s+│\s+{job_id} │ finalized", mine.output)
    assert row is not None, mine.output
    assert client.run("jobs", "--role", "client").output == mine.output
    shown = client.run("jobs", "--role", "client", "show", row.group(1))
    assert shown.exit_code == 0, shown.output
    assert "acceptResult: submitted -> finalized" in shown.output
    assert market.provider.identity.checksum_address in shown.output
    assert_user_error(market.provider.run("jobs", "show", local_id.group(1), "--role", "client"),
                      "no client job with id")  # fmt: skip


def _http(url: str, *, body: bytes | None = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    with contextlib.suppress(ValueError):
        return status, json.loads(raw)
    return status, raw.decode()


def test_provider_serves_the_http_api(market: Market) -> None:
    status, health = _http(market.api_url + "/health")
    assert status == 200 and health["status"] == "ok"
    status, info = _http(market.api_url + "/v1/node")
    assert status == 200
    assert info["address"] == market.provider.identity.checksum_address
    assert info["roles"] == ["provider"]
    assert info["escrow_address"] == market.state["escrow_address"]
    assert info["sandbox"]["tier"] in range(4) and info["devices"]
    status, listed = _http(market.api_url + "/v1/jobs")
    assert status == 200 and isinstance(listed["jobs"], list)
    status, metrics = _http(market.api_url + "/metrics")
    assert status == 200 and "gpunet_p2p_" in metrics and "gpunet_jobs{" in metrics
    body = json.dumps(
        {
            "model": {"arch": ARCH, "config": CONFIG, "weights": "sha256:" + "ab" * 32,
                      "weights_size": 10},
            "inputs": "sha256:" + "cd" * 32, "inputs_size": 10, "max_payment": "1000",
        }
    ).encode()  # fmt: skip
    status, _ = _http(market.api_url + "/v1/jobs", body=body)
    assert status == 401
    token = (market.provider.home / "api.token").read_text().strip()
    status, answer = _http(market.api_url + "/v1/jobs", body=body, token=token)
    assert status == 422 and answer["error"]["code"] == "not_a_client"


def test_offers_prints_the_order_book(market: Market, tmp_path: Path) -> None:
    node = make_node(tmp_path / "viewer", market.state, "[p2p]\nmdns = false\n")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(node.run, "offers", "--bootstrap", market.peer_addr, "--wait", "5")
        # while the viewer is connected, the provider's peer gauge (sampled every 2 s) sees it
        peers = 0.0
        while not running.done() and peers < 1:
            time.sleep(0.2)
            found = re.search(
                r"^gpunet_p2p_peers (\S+)$", _http(market.api_url + "/metrics")[1], re.M
            )
            peers = float(found.group(1)) if found else 0.0
        shown = running.result()
    assert peers >= 1
    assert shown.exit_code == 0, shown.output
    assert "1 offer(s)" in shown.output
    row = next(
        line
        for line in shown.output.splitlines()
        if market.provider.identity.checksum_address in line
    )
    assert str(PRICE) in row and market.peer_addr.rsplit("/", 1)[1] in row


def test_submit_mistakes_are_refused_before_any_transaction(market: Market, tmp_path: Path) -> None:
    client = make_node(tmp_path / "client", market.state, "[p2p]\nmdns = false\n")
    fund(market.state, client, "10e18")
    w, x = market.files / "w.safetensors", market.files / "x.safetensors"
    huge = tmp_path / "huge.safetensors"
    with huge.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04\x95 this is a pickle, not safetensors")
    other_weights = tmp_path / "other.safetensors"
    other_weights.write_bytes(formats.random_weights(ARCH, {**CONFIG, "width": 16}))
    wrong_shape = tmp_path / "wrong.safetensors"
    wrong_shape.write_bytes(formats.save_safetensors({"x": torch.ones(1, 3, 64, 64)}))
    exists = tmp_path / "exists.safetensors"
    exists.write_bytes(b"keep me")
    base = {"--arch": ARCH, "--config": CONFIG_TEXT, "--weights": str(w), "--inputs": str(x)}
    cases: list[tuple[dict[str, str], str]] = [
        ({"--weights": str(tmp_path / "missing.safetensors")}, "does not exist"),
        ({"--inputs": str(tmp_path)}, "not a file"),
        ({"--weights": str(huge)}, "over the limit"),
        ({"--config": "width=eight"}, "not key=integer"),
        ({"--config": "width"}, "not key=integer"),
        ({"--config": "width=8,width=8"}, "given twice"),
        ({"--config": "width=8,depth=3"}, "unknown config keys"),
        ({"--config": "width=0,classes=10,image=32"}, "not in ["),
        ({"--arch": "resnet9000@1"}, "unknown architecture"),
        ({"--weights": str(junk)}, "not a safetensors file"),
        ({"--weights": str(other_weights)}, "--weights"),
        ({"--inputs": str(wrong_shape)}, "shape"),
        ({"--bootstrap": "/ip4/127.0.0.1/tcp/1"}, "not a peer multiaddr"),
        ({"--listen": "tcp://0.0.0.0:1"}, "not a multiaddr"),
        ({"--out": str(exists)}, "already exists"),
        ({"--max-price": "cheap"}, "whole number"),
        ({"--max-price": "-1"}, "between 1 and"),
    ]
    for override, needle in cases:
        args = [item for pair in {**base, **override}.items() for item in pair]
        result = market.submit(client, *args)
        assert_user_error(result, needle)
    assert_user_error(market.submit(client, "--arch", ARCH), "--weights")  # missing option
    nobody = market.peer_addr.replace(market.peer_addr.split("/")[4], str(free_port()))
    args = [item for pair in base.items() for item in pair]
    unreachable = market.submit(client, *args, "--bootstrap", nobody, "--wait", "1")
    assert_user_error(unreachable, "cannot reach", code=1)
    assert exists.read_bytes() == b"keep me"
    assert _tx_count(market.state, client) == 0  # not one transaction was sent


def test_jobs_on_a_node_without_a_store(tmp_path: Path, devnet_state: dict[str, Any]) -> None:
    node = make_node(tmp_path / "fresh", devnet_state)
    listed = node.run("jobs")
    assert listed.exit_code == 0 and "no store" in listed.output
    assert not (node.home / "node.sqlite").exists()
    assert_user_error(node.run("jobs", "--state", "bogus"), "bogus")
    assert_user_error(node.run("jobs", "show", "x"), "x")


def test_offers_and_provider_mistakes(market: Market, tmp_path: Path) -> None:
    node = make_node(tmp_path / "viewer", market.state, "[p2p]\nmdns = false\n")
    assert_user_error(node.run("offers", "--bootstrap", "not-an-addr"), "not a peer multiaddr")
    bare = tmp_path / "bare.toml"
    bare.write_text('[node]\ndata_dir = "/nonexistent"\n')
    assert_user_error(invoke("offers", "--config", str(bare)), "no escrow contract")
    bad = tmp_path / "bad.toml"
    bad.write_text("[chain]\nescrow_address = 12\n")
    assert_user_error(invoke("offers", "--config", str(bad)), "escrow_address")
    # a second provider on the same API port: one clear line, and the first keeps serving
    second = subprocess.run(
        [sys.executable, "-m", "node.cli", "provider", "start", "--config",
         str(market.provider.config)],
        check=False, capture_output=True, text=True, timeout=120,
        env={**os.environ, "GPUNET_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert second.returncode == 2, second.stdout + second.stderr
    assert "error: cannot serve the API on 127.0.0.1:" in second.stderr
    assert "Traceback" not in second.stderr
    assert _http(market.api_url + "/health")[0] == 200


def test_a_declined_job_says_what_to_change(market: Market, tmp_path: Path) -> None:
    client = make_node(tmp_path / "client", market.state, "[p2p]\nmdns = false\n")
    fund(market.state, client, "10e18")
    result = market.submit(
        client,
        "--arch", ARCH, "--config", CONFIG_TEXT,
        "--weights", str(market.files / "w.safetensors"),
        "--inputs", str(market.files / "x.safetensors"),
        "--max-price", str(2 * PRICE), "--bootstrap", market.peer_addr,
        "--deadline", "20", "--min-tier", "0",  # the provider wants 30 s or more
    )  # fmt: skip
    # the hint was "retry later; the provider may be busy" whatever the reason
    assert result.exit_code == 1, result.output
    error, hint = result.stderr.strip().splitlines()[-2:]  # after the progress lines
    assert error.startswith("error: provider ") and "declined: deadline" in error, error
    assert hint == "hint: give the job more time with --deadline", hint


def test_interrupted_submit_names_the_job_it_leaves_in_flight(
    market: Market, tmp_path: Path
) -> None:
    """Ctrl-C after the match: the escrow holds the payment; the user is told which job
    and what settles it, and the SDK's running call is cancelled, not destroyed pending.
    The provider is frozen (SIGSTOP) at the match so that the result cannot come first."""
    client = make_node(tmp_path / "client", market.state, "[p2p]\nmdns = false\n")
    fund(market.state, client, "10e18")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "submit", "--node-config", str(client.config),
         "--arch", ARCH, "--config", CONFIG_TEXT,
         "--weights", str(market.files / "w.safetensors"),
         "--inputs", str(market.files / "x.safetensors"),
         "--max-price", str(2 * PRICE), "--bootstrap", market.peer_addr,
         "--deadline", "120", "--min-tier", "0", "--out", str(tmp_path / "y.safetensors")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "GPUNET_PASSWORD": PASSWORD},
    )  # fmt: skip
    frozen = False
    try:
        assert proc.stderr is not None
        progress = ""
        deadline = time.monotonic() + 90
        while "matched: job " not in progress:
            assert time.monotonic() < deadline and proc.poll() is None, progress
            if select.select([proc.stderr], [], [], 1.0)[0]:
                progress += proc.stderr.readline()
        market.proc.send_signal(signal.SIGSTOP)
        frozen = True
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if frozen:
            market.proc.send_signal(signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    job_id = re.search(r"matched: job (\d+) ", progress)
    assert job_id is not None, progress
    assert proc.returncode == 130, err
    assert f"job {job_id.group(1)} left in flight" in err, err
    assert "gpunet client serve" in err and err.strip().endswith("interrupted"), err
    assert "Traceback" not in err and "Task was destroyed" not in err, err
