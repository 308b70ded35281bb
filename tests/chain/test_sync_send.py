"""Transactions with ``eth_sendRawTransactionSync`` (EIP-7966) and the fallbacks to a
polled receipt: a node without the method, and an answer lost after the node took it.

The fallbacks are driven through a forwarding proxy in front of the real anvil that
changes only what the test names; everything else reaches anvil unchanged.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from typing import ClassVar

import pytest

from node.chain.devnet import Devnet
from node.chain.errors import ContractRevert
from node.chain.rpc import Rpc, Signer

SYNC = "eth_sendRawTransactionSync"


class _Proxy(http.server.BaseHTTPRequestHandler):
    upstream: ClassVar[str] = ""
    mode: ClassVar[str] = "forward"  # or "unsupported", "drop"
    seen: ClassVar[Counter[str]] = Counter()

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        body = json.loads(raw)
        self.seen[body["method"]] += 1
        if body["method"] == SYNC and self.mode == "unsupported":
            error = {"code": -32601, "message": f"the method {SYNC} does not exist"}
            self._answer(json.dumps({"jsonrpc": "2.0", "id": body["id"], "error": error}).encode())
            return
        up = urllib.parse.urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=10)
        conn.request("POST", "/", body=raw, headers={"Content-Type": "application/json"})
        answer = conn.getresponse().read()
        conn.close()
        if body["method"] == SYNC and self.mode == "drop":
            self.close_connection = True  # anvil mined it; the answer never comes back
            return
        self._answer(answer)

    def _answer(self, payload: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy(net: Devnet) -> Iterator[str]:
    _Proxy.upstream, _Proxy.mode = net.rpc.url, "forward"
    _Proxy.seen = Counter()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _nonce(net: Devnet, address: bytes) -> int:
    return int(net.rpc.request("eth_getTransactionCount", ["0x" + address.hex(), "latest"]), 16)


def test_anvil_answers_with_the_receipt(net: Devnet) -> None:
    p = net.provider()
    hashes: list[bytes] = []
    res = p.escrow.transact("cancelNonces", 77, 1, gas=60_000, on_signed=hashes.append)
    assert p.signer.sync_send is True
    assert res.receipt.status == 1 and hashes == [res.receipt.tx_hash]
    assert net.rpc.receipt(res.receipt.tx_hash) == res.receipt  # what anvil itself records
    assert net.escrow.nonce_used(p.address, 77 * 256)


def test_a_revert_comes_back_as_a_failed_receipt(net: Devnet) -> None:
    """A reverting transaction is mined (status 0); the typed revert is raised as before."""
    c = net.actor(deposit=1)
    with pytest.raises(ContractRevert):
        c.escrow.withdraw(5, gas=100_000)  # more than the balance
    assert c.signer.sync_send is True


def test_a_node_without_the_method_falls_back_once(net: Devnet, proxy: str) -> None:
    _Proxy.mode = "unsupported"
    p = net.provider()
    signer = Signer(Rpc(proxy), p.identity.private_key)
    escrow = p.escrow.with_signer(signer)
    start = _nonce(net, p.address)
    for k in range(3):
        assert escrow.transact("cancelNonces", 300 + k, 1, gas=60_000).receipt.status == 1
    assert signer.sync_send is False
    assert _Proxy.seen[SYNC] == 1  # asked once, then remembered
    assert _Proxy.seen["eth_sendRawTransaction"] == 3
    assert _nonce(net, p.address) == start + 3  # the refused first try cost no nonce


def test_a_lost_answer_is_recovered_by_polling(net: Devnet, proxy: str) -> None:
    _Proxy.mode = "drop"
    p = net.provider()
    signer = Signer(Rpc(proxy), p.identity.private_key)
    escrow = p.escrow.with_signer(signer)
    start = _nonce(net, p.address)
    res = escrow.transact("cancelNonces", 400, 1, gas=60_000)
    assert res.receipt.status == 1
    assert _nonce(net, p.address) == start + 1  # sent twice, mined once
    assert _Proxy.seen["eth_sendRawTransaction"] == 1  # the resend ("nonce too low")
    assert _Proxy.seen["eth_getTransactionReceipt"] >= 1
    _Proxy.mode = "forward"
    assert escrow.transact("cancelNonces", 401, 1, gas=60_000).receipt.status == 1
    assert _nonce(net, p.address) == start + 2


def test_a_failing_on_signed_hook_does_not_stop_the_transaction(net: Devnet) -> None:
    """Its nonce is taken: an unsent transaction would hold back every later one."""
    p = net.provider()

    def broken(tx_hash: bytes) -> None:
        raise RuntimeError("hook bug")

    for sync in (True, False):
        p.signer.sync_send = sync
        start = _nonce(net, p.address)
        res = p.escrow.transact("cancelNonces", 500 + sync, 1, gas=60_000, on_signed=broken)
        assert res.receipt.status == 1 and _nonce(net, p.address) == start + 1
