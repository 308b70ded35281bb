"""Devnet demo (foundation milestone): a real anvil chain and one signed offer exchanged.

What runs, all real: anvil on a free loopback port; two node identities with
encrypted keystores (mode 0600); a provider process-side TCP listener that
gossips nothing yet but sends its signed EIP-712 offer bound to anvil's chain
id; a client that verifies the offer signature, checks the offer's provider
against the peer id it talked to, sends a JobRequest and gets a JobAccept with
an offer bound to itself. The escrow contract, libp2p, the sandbox and the
full marketplace replace the pieces marked below as their issues land.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from node.keys import create_keystore, load_keystore
from protocol.identity import Identity, address_from_peer_id
from protocol.messages import (
    Capabilities,
    Determinism,
    JobAccept,
    JobFormat,
    JobRequest,
    JobSpec,
    ModelRef,
    Offer,
    decode_as,
    encode,
)

ROOT = Path(__file__).resolve().parent.parent
console = Console()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rpc(url: str, method: str, params: list[object] | None = None) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, body.encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.loads(response.read(1 << 20))
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


@contextlib.contextmanager
def anvil() -> Iterator[str]:
    """Start anvil on a free loopback port; always stop it."""
    binary = ROOT / "node_modules" / ".bin" / "anvil"
    port = _free_port()
    proc = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _rpc(url, "eth_chainId")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_receipt(url: str, tx_hash: str, timeout: float = 10.0) -> dict[str, str]:
    """Poll for a receipt (anvil often has none on the first poll right after sending)."""
    deadline = time.monotonic() + timeout
    while (receipt := _rpc(url, "eth_getTransactionReceipt", [tx_hash])) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no receipt for {tx_hash} after {timeout} s")
        time.sleep(0.002)
    assert isinstance(receipt, dict)
    return receipt


def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(len(data).to_bytes(4, "big") + data)


def _recv(sock: socket.socket, limit: int) -> bytes:
    header = sock.recv(4, socket.MSG_WAITALL)
    size = int.from_bytes(header, "big")
    if len(header) != 4 or size > limit:
        raise RuntimeError(f"bad frame header ({size} bytes announced, limit {limit})")
    return sock.recv(size, socket.MSG_WAITALL)


def main() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="gpunet-demo-"))
    try:
        with anvil() as url:
            chain_id = int(str(_rpc(url, "eth_chainId")), 16)
            console.print(f"[bold]anvil[/] at {url}, chain id {chain_id}")
            provider = create_keystore(data_dir / "provider.json", "demo", scrypt_n=2**14)
            client = create_keystore(data_dir / "client.json", "demo", scrypt_n=2**14)
            assert load_keystore(data_dir / "provider.json", "demo") == provider
            contract = bytes(20)  # the escrow is deployed here once the contracts issue lands
            caps = Capabilities(
                device_class="cpu",
                gpu_model="",
                gpu_memory_mib=0,
                gpu_count=0,
                sandbox_tier=0,
                formats=(JobFormat.CATALOG_V1,),
                determinism=(Determinism.EXACT,),
                runtimes=("torch-2.13.0",),
                max_job_bytes=256 << 20,
            )
            expiry = int(time.time()) + 600
            listener = socket.create_server(("127.0.0.1", 0))
            port = listener.getsockname()[1]
            errors: list[BaseException] = []
            terms = _Terms(chain_id, contract, caps, expiry)
            thread = threading.Thread(
                target=_provider, args=(listener, provider, terms, errors), name="demo-provider"
            )
            thread.start()
            try:
                rows = _client(port, client, chain_id)
            finally:
                thread.join(10)
                listener.close()
            if errors:
                raise errors[0]
            table = Table(title="foundation demo: signed offer exchange")
            table.add_column("step")
            table.add_column("result")
            for step, result in rows:
                table.add_row(step, result)
            console.print(table)
            funder = _rpc(url, "eth_accounts")[0]  # type: ignore[index]
            tx = {"from": funder, "to": provider.checksum_address, "value": hex(10**18)}
            tx_hash = _rpc(url, "eth_sendTransaction", [tx])
            receipt = _wait_receipt(url, str(tx_hash))
            balance = int(
                str(_rpc(url, "eth_getBalance", [provider.checksum_address, "latest"])), 16
            )
            console.print(
                f"funded provider {provider.checksum_address} on anvil: tx {tx_hash} "
                f"(block {int(receipt['blockNumber'], 16)}), balance {balance} wei"
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class _Terms:
    chain_id: int
    contract: bytes
    caps: Capabilities
    expiry: int


def _provider(
    listener: socket.socket, me: Identity, terms: _Terms, errors: list[BaseException]
) -> None:
    chain_id, contract, caps, expiry = terms.chain_id, terms.contract, terms.caps, terms.expiry
    try:
        listener.settimeout(10)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            _send(conn, me.peer_id.encode())
            open_offer = Offer.create(
                me,
                chain_id=chain_id,
                contract=contract,
                price_per_gpu_second=10**12,
                nonce=1,
                expiry=expiry,
                capabilities=caps,
            )
            _send(conn, encode(open_offer))
            request = decode_as(_recv(conn, JobRequest.MAX_BYTES), JobRequest)
            bound = Offer.create(
                me,
                chain_id=chain_id,
                contract=contract,
                price_per_gpu_second=open_offer.price_per_gpu_second,
                nonce=2,
                expiry=expiry,
                capabilities=caps,
                client=request.client,
            )
            accept = JobAccept(
                request_id=request.request_id, spec_hash=request.spec.spec_hash(), offer=bound
            )
            _send(conn, encode(accept))
    except Exception as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
        errors.append(exc)


def _client(port: int, me: Identity, chain_id: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        peer_id = _recv(sock, 128).decode()
        offer = decode_as(_recv(sock, Offer.MAX_BYTES), Offer)
        offer.verify()
        if offer.provider != address_from_peer_id(peer_id) or offer.chain_id != chain_id:
            raise RuntimeError("offer does not belong to the peer that sent it")
        rows.append(("offer received", f"{len(encode(offer))} B, signature valid"))
        rows.append(("provider peer id", peer_id))
        rows.append(("peer id -> address", "0x" + address_from_peer_id(peer_id).hex()))
        spec = JobSpec(
            model=ModelRef(arch="resnet18@1", config={}, weights=os.urandom(32), weights_size=1),
            inputs=os.urandom(32),
            inputs_size=1,
        )
        request = JobRequest(
            request_id=os.urandom(16),
            client=me.address,
            spec=spec,
            max_price_per_gpu_second=2 * 10**12,
            max_payment=10**15,
            deadline=int(time.time()) + 300,
        )
        _send(sock, encode(request))
        accept = decode_as(_recv(sock, JobAccept.MAX_BYTES), JobAccept)
        accept.offer.verify()
        if accept.offer.client != me.address or accept.spec_hash != spec.spec_hash():
            raise RuntimeError("accept is not bound to this client and job")
        rows.append(("job accepted", f"client-bound offer nonce {accept.offer.nonce}, verified"))
        rows.append(("spec hash", "0x" + accept.spec_hash.hex()))
    return rows


if __name__ == "__main__":
    main()
