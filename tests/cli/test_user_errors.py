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
    result: subprocess.CompletedProcess[str],
    code: int,
    *needles: str,
    hint: str = "",
    after_log: bool = False,
) -> None:
    """Exit ``code``; stderr is exactly ``error: …`` and ``hint: …`` (``after_log``: ends
    with them, after a daemon's log lines); no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    if after_log:
        lines = lines[-2:]
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


# ---------------------------------------------------------------- keys
def test_wrong_password_says_so(tmp_path: Path) -> None:
    config = node_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    for command in (("keys", "show", "--keystore", str(tmp_path / "keystore.json")),
                    ("balance", "--config", str(config))):  # fmt: skip
        result = gpunet(*command, home=tmp_path, env={"GPUNET_PASSWORD": "not-it"})
        # it was "cannot decrypt keystore: MAC mismatch", hint "create one with: gpunet keys new"
        assert_error(result, 2, "wrong password for keystore", hint="GPUNET_PASSWORD")


def test_missing_keystore_is_reported_before_any_password_prompt(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPUNET_")}
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "keys", "show", "--keystore", str(tmp_path / "no.json")],
        check=False, capture_output=True, text=True, input="", timeout=60,
        env={**base, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert_error(result, 2, "cannot open keystore", hint="gpunet keys new")


def test_password_input_that_ends_is_a_clear_error(tmp_path: Path) -> None:
    node_config(tmp_path, "http://127.0.0.1:1")
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPUNET_")}
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "keys", "show", "--keystore",
         str(tmp_path / "keystore.json")],
        check=False, capture_output=True, text=True, input="", timeout=60,
        env={**base, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr  # it was "aborted", exit 1
    assert "Traceback" not in result.stderr
    error, hint = result.stderr.strip().splitlines()[-2:]  # after getpass's own prompt
    assert error == "error: no keystore password: the input ended", result.stderr
    assert "GPUNET_PASSWORD_FILE" in hint


def test_keys_new_in_a_directory_that_cannot_exist(tmp_path: Path) -> None:
    result = gpunet("keys", "new", "--keystore", "/proc/no-such-dir/k.json", home=tmp_path)
    assert_error(result, 2, "cannot create a keystore in /proc/no-such-dir", hint="--keystore")


_LIMITED = (
    "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200)); "
    "from node.cli import main; sys.argv[0] = 'gpunet'; main()"
)


def test_keys_new_that_cannot_finish_writing_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keystore.json"
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPUNET_")}
    # files over 200 bytes cannot be written (EFBIG), as on a full disk; a keystore is ~490
    result = subprocess.run(
        [sys.executable, "-c", _LIMITED, "keys", "new", "--keystore", str(path)],
        check=False, capture_output=True, text=True, timeout=60,
        env={**base, "HOME": str(tmp_path), "GPUNET_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert_error(result, 2, f"cannot write {path}", hint="another --keystore")
    assert list(path.parent.iterdir()) == []  # no half-written key, no temporary file
    again = gpunet("keys", "new", "--keystore", str(path), home=tmp_path)
    assert again.returncode == 0, again.stderr  # and the path is free for a retry
    assert json.loads(path.read_text())["crypto"]


def test_keys_new_refuses_an_existing_file_before_asking_for_a_password(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    path.write_text("{}")
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPUNET_")}
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "keys", "new", "--keystore", str(path)],
        check=False, capture_output=True, text=True, input="", timeout=60,
        env={**base, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert_error(result, 2, "already exists; refusing to overwrite", hint="--keystore")
    assert path.read_text() == "{}"


# ---------------------------------------------------------------- p2p
def test_unreachable_bootstrap_peer_is_one_line_without_libp2p_chatter(tmp_path: Path) -> None:
    from protocol.identity import Identity

    config = node_config(tmp_path, "http://127.0.0.1:1")
    peer = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{Identity.generate().peer_id}"
    result = gpunet("offers", "--config", str(config), "--wait", "0", "--bootstrap", peer,
                    "--listen", "/ip4/127.0.0.1/tcp/0", home=tmp_path)  # fmt: skip
    # py-libp2p's "Failed to open TCP stream: …" ERROR lines came first
    assert_error(result, 1, f"cannot reach {peer}", hint="is the peer running")
