"""An auditor on a ``gpunet devnet up`` chain: ``gpunet verify --stake 100e18`` as
docs/cli.md shows it, then SIGTERM: a clean stop, exit 0, no sandbox worker left.

Before, ``--stake`` took only plain integers (``100e18`` was a usage error) and the
devnet had no verifier committee, so ``gpunet verify`` refused every devnet.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from node.chain.anvil import free_port
from tests.cli.conftest import PASSWORD, fund, live_processes, make_node
from tests.cli.test_user_errors import assert_error, gpunet

pytestmark = pytest.mark.timeout(180)


def _workers_of(pid: int) -> list[int]:
    """Live sandbox processes of the node process ``pid`` (their scratch dir names it)."""
    marker = f"gpunet-rt-{pid}-".encode()
    return live_processes(lambda proc: marker in (proc / "cmdline").read_bytes())


def test_verify_stakes_on_a_devnet_and_stops_on_sigterm(
    tmp_path: Path, devnet_state: dict[str, Any]
) -> None:
    node = make_node(tmp_path, devnet_state, "[p2p]\nmdns = false\n\n[runtime]\npool_size = 1\n")
    fund(devnet_state, node, "150e18")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUNET_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "verify", "--config", str(node.config),
         "--stake", "100e18", "--listen", "/ip4/127.0.0.1/tcp/0",
         "--metrics-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**env, "HOME": str(tmp_path), "GPUNET_PASSWORD": PASSWORD},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        out = ""
        deadline = time.monotonic() + 120
        while "ready" not in out:
            assert time.monotonic() < deadline, out
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                assert line, (out, proc.communicate())
                out += line
        assert "staked 100000000000000000000 (100 tokens) in committee 0x" in out, out
        assert devnet_state["committee_address"] in out, out
        workers = _workers_of(proc.pid)
        assert workers, "the verifier's sandbox pool did not start"
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped:" in rest and "Traceback" not in err, (rest, err)
        time.sleep(0.5)
        assert _workers_of(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_verify_stake_beyond_the_wallet_is_one_line(
    tmp_path: Path, devnet_state: dict[str, Any]
) -> None:
    node = make_node(tmp_path, devnet_state)
    fund(devnet_state, node, "5e18")
    result = gpunet("verify", "--config", str(node.config), "--stake", "100e18", home=tmp_path)
    assert_error(result, 2, "--stake: the wallet holds 5000000000000000000 (5 tokens)",
                 hint="gpunet devnet up --fund")  # fmt: skip


def test_verify_on_a_busy_metrics_port_is_one_line(
    tmp_path: Path, devnet_state: dict[str, Any]
) -> None:
    node = make_node(tmp_path, devnet_state, "[p2p]\nmdns = false\n")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = gpunet("verify", "--config", str(node.config), "--metrics-port", str(port),
                        "--listen", "/ip4/127.0.0.1/tcp/0", home=tmp_path)  # fmt: skip
    # it was an OSError traceback from aiohttp, after the worker pool had started
    assert_error(result, 2, f"cannot serve /metrics on 127.0.0.1:{port}",
                 "Address already in use", hint="--metrics-port")  # fmt: skip
