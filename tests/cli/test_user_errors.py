"""The real ``gpunet`` command given wrong input or a missing chain: one ``error:`` line,
one ``hint:`` line, the documented exit status, no traceback, nothing left behind.

Each case runs the command as a subprocess (``python -m node.cli``), as a user would.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.chain.anvil import free_port
from node.keys import create_keystore
from tests.cli.conftest import PASSWORD

pytestmark = pytest.mark.timeout(120)

ESCROW = "0x1234567890123456789012345678901234567890"


def gpunet(
    *args: str, home: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a clean environment with ``HOME=home``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPUNET_")}
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=90,
        env={**base, "HOME": str(home), "GPUNET_PASSWORD": PASSWORD, **(env or {})},
    )


def assert_error(
    result: subprocess.CompletedProcess[str], code: int, *needles: str, hint: str = ""
) -> None:
    """Exit ``code``; stderr is exactly ``error: …`` and ``hint: …``; no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), lines
    for needle in needles:
        assert needle in lines[0], lines
    assert hint in lines[1], lines


def node_config(home: Path, rpc_url: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    create_keystore(home / "keystore.json", PASSWORD, scrypt_n=2**10)
    config = home / "gpunet.toml"
    config.write_text(
        f'[node]\ndata_dir = "{home}"\n\n'
        f'[chain]\nrpc_url = "{rpc_url}"\nescrow_address = "{ESCROW}"\n'
    )
    return config


@pytest.fixture
def not_a_chain() -> Iterator[str]:
    """An HTTP server that answers JSON-RPC with 'method not found' (not a chain)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps(
                {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "nope"}}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.mark.parametrize("command", [("balance",), ("stake", "--amount", "1e18")])
def test_chain_that_refuses_connections_is_one_line_exit_1(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = node_config(tmp_path, url)
    result = gpunet(*command, "--config", str(config), home=tmp_path)
    # no "rpc eth_chainId failed …; retry" lines ahead of the error
    assert_error(result, 1, f"cannot reach the chain at {url}", "Connection refused",
                 hint="gpunet devnet status")  # fmt: skip


def test_url_that_is_not_a_chain_is_a_user_error(tmp_path: Path, not_a_chain: str) -> None:
    config = node_config(tmp_path, not_a_chain)
    result = gpunet("balance", "--config", str(config), home=tmp_path)
    assert_error(result, 2, "does not answer as an Ethereum JSON-RPC node", hint="[chain] rpc_url")
