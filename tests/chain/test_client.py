"""The chain client itself: typed errors, concurrent nonces, retries, hostile RPC answers."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest

from node.chain import errors as E
from node.chain.anvil import Anvil, free_port
from node.chain.devnet import Devnet
from node.chain.escrow import Escrow
from node.chain.rpc import Receipt, RetryPolicy, Rpc, Signer, parse_data, parse_quantity


def test_every_custom_error_has_a_typed_exception() -> None:
    names = {err.name for err in Escrow.abi.errors.values()}
    missing = names - set(E.REVERT_TYPES)
    assert not missing, f"no exception class for {sorted(missing)}"
    for name in names:
        assert issubclass(E.REVERT_TYPES[name], E.ContractRevert)


def test_decode_revert_edge_cases() -> None:
    errors = Escrow.abi.errors
    assert isinstance(E.decode_revert(b"", errors), E.UnknownRevert)
    assert isinstance(E.decode_revert(b"\x12\x34\x56\x78", errors), E.UnknownRevert)
    msg = bytes.fromhex("08c379a0") + bytes(31) + b"\x20" + bytes(31) + b"\x02" + b"hi" + bytes(30)
    err = E.decode_revert(msg, errors)
    assert isinstance(err, E.RevertString) and err.fields == {"message": "hi"}
    sel = next(k for k, v in errors.items() if v.name == "NotClient")
    truncated = E.decode_revert(sel + b"\x00", errors)  # selector right, args cut
    assert isinstance(truncated, E.UnknownRevert)


def test_concurrent_transactions_from_one_account(net: Devnet) -> None:
    """Four threads share one signer; the nonce manager keeps every tx valid."""
    provider = net.provider()
    start = int(
        net.rpc.request("eth_getTransactionCount", ["0x" + provider.address.hex(), "latest"]), 16
    )

    def send(k: int) -> int:
        return provider.escrow.cancel_nonces([10_000 + k * 256])[0].receipt.status

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(send, range(24)))
    assert statuses == [1] * 24
    end = int(
        net.rpc.request("eth_getTransactionCount", ["0x" + provider.address.hex(), "latest"]), 16
    )
    assert end - start == 24
    assert all(net.escrow.nonce_used(provider.address, 10_000 + k * 256) for k in range(24))


def test_nonce_resync_after_external_transaction(net: Devnet) -> None:
    """The same key used by a second Signer (another process) makes our counter stale:
    the next send is rejected, the counter resyncs, and the one after succeeds."""
    a = net.actor(deposit=10)
    a.escrow.withdraw(1)
    twin = Signer(net.rpc, a.identity.private_key)
    a.escrow.with_signer(twin).withdraw(1)
    with pytest.raises(E.RpcError):
        a.escrow.withdraw(1, gas=100_000)
    a.escrow.withdraw(1, gas=100_000)
    assert net.escrow.balance_of(a.address) == 7


def test_unreachable_node_is_retried_with_backoff() -> None:
    rpc = Rpc(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    rpc.retry = RetryPolicy(attempts=3, initial_delay=0.05, max_delay=1.0)
    t0 = time.monotonic()
    with pytest.raises(E.RpcUnavailable):
        rpc.block_number()
    assert time.monotonic() - t0 >= 0.05 + 0.1


def test_rpc_survives_node_restart_within_retries() -> None:
    node = Anvil()
    rpc = Rpc(node.url)
    assert rpc.block_number() == 0
    node.stop()
    rpc.retry = RetryPolicy(attempts=2, initial_delay=0.01)
    with pytest.raises(E.RpcUnavailable):
        rpc.block_number()


# ---------------------------------------------------------------- hostile answers
class _Hostile(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, object]] = {}

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        result = self.answers.get(body["method"], None)
        payload = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()
        status = 200
        if body["method"] == "garbage":
            payload = b"[1, 2, 3]"
        elif body["method"] == "not_json":
            payload = b"<html>oops</html>"
        elif body["method"] == "deep":  # SIGSEGV in json.loads at a node's recursion limit
            payload = b'{"jsonrpc": "2.0", "id": 1, "result": ' + b"[" * 300_000 + b"]" * 300_000
            payload += b"}"
        elif body["method"] == "http_500":
            status = 500
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[Rpc]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rpc = Rpc(f"http://127.0.0.1:{server.server_address[1]}")
    rpc.retry = RetryPolicy(attempts=2, initial_delay=0.01)
    yield rpc
    server.shutdown()
    server.server_close()


def test_bad_answers_raise_clear_errors(hostile: Rpc) -> None:
    _Hostile.answers = {
        "eth_blockNumber": "0xZZ",
        "eth_chainId": 5,
        "eth_getLogs": {"not": "a list"},
        "eth_getTransactionReceipt": {"status": "0x1"},
        "eth_call": "0x" + "00" * (2 * 1024 * 1024),
    }
    with pytest.raises(E.RpcError, match="not hex"):
        hostile.block_number()
    with pytest.raises(E.RpcError, match="hex quantity"):
        hostile.chain_id()
    with pytest.raises(E.RpcError, match="list"):
        hostile.get_logs(bytes(20), 0, 1)
    with pytest.raises(E.RpcError, match="receipt"):
        hostile.receipt(bytes(32))
    with pytest.raises(E.RpcError, match="hex data"):
        hostile.call(bytes(20), b"")
    with pytest.raises(E.RpcError, match="not a JSON object"):
        hostile.request("garbage", [])
    with pytest.raises(E.RpcError, match="bad answer"):
        hostile.request("not_json", [])
    with pytest.raises(E.RpcError, match="bad answer"):
        hostile.request("deep", [])
    with pytest.raises(E.RpcUnavailable, match="500"):  # 5xx is retried, then given up
        hostile.request("http_500", [])


def test_parsers() -> None:
    assert parse_quantity("0x10", "x") == 16
    for bad in ("10", "0x", "0x" + "f" * 65, None, 16):
        with pytest.raises(E.RpcError):
            parse_quantity(bad, "x")
    assert parse_data("0xabcd", "x", 2) == b"\xab\xcd"
    for bad_data in ("abcd", "0xabc", "0xzz", 5):
        with pytest.raises(E.RpcError):
            parse_data(bad_data, "x")
    with pytest.raises(E.RpcError):
        parse_data("0xabcd", "x", 3)
    with pytest.raises(E.RpcError):
        Receipt.parse({"transactionHash": "0x" + "00" * 32, "logs": [{"topics": "x"}]})


def test_send_to_receipt_latency(net: Devnet) -> None:
    """Fast paths: local signing, raw send, tight polling (anvil: ~5 ms per tx here)."""
    p = net.provider()
    p.escrow.cancel_nonces([1])  # warm
    n = 30
    t0 = time.perf_counter()
    for k in range(n):
        p.escrow.cancel_nonces([5000 + k], gas=60_000)
    per_tx = (time.perf_counter() - t0) / n
    assert per_tx < 0.1, f"{per_tx * 1000:.1f} ms per transaction"
