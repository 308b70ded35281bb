"""Start and stop a local anvil (npm ``@foundry-rs/anvil``) on a free loopback port.

Every started process is registered with ``atexit`` as well, so a crashed test
run cannot leave orphan anvils behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from node.chain.errors import ChainError, RpcError, RpcUnavailable
from node.chain.rpc import Rpc

REPO_ROOT = Path(__file__).resolve().parents[2]


def find_anvil() -> str:
    """Path of the pinned anvil binary (node_modules/.bin first, then PATH)."""
    local = REPO_ROOT / "node_modules" / ".bin" / "anvil"
    if local.exists():
        return str(local)
    found = shutil.which("anvil")
    if found is None:
        raise ChainError("anvil not found: run scripts/bootstrap.sh (npm ci)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """A running anvil process; use as a context manager or call :meth:`stop`."""

    def __init__(self, *, block_time: float | None = None, startup_timeout: float = 20.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [find_anvil(), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if block_time is not None:
            cmd += ["--block-time", str(block_time)]
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "1"},
        )
        atexit.register(self.stop)
        self._wait_ready(startup_timeout)

    def _wait_ready(self, timeout: float) -> None:
        rpc = Rpc(self.url, timeout=1.0)
        rpc.retry = type(rpc.retry)(attempts=1)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise ChainError(f"anvil exited with {self._proc.returncode}: {err[-500:]}")
            try:
                rpc.chain_id()
                return
            except (RpcUnavailable, RpcError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise ChainError("anvil did not answer in time") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the process (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()
        atexit.unregister(self.stop)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Anvil:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
