"""Ctrl-C and SIGTERM in the middle of ``gpunet devnet up``: prompt exit, no anvil left.

The real command runs as a subprocess; the signal is sent the moment anvil is
spawned (a process holding the state directory's ``anvil.log`` open), while the
command waits for it to answer, so the command has started a child it must stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import holds_open, live_processes

pytestmark = pytest.mark.timeout(120)


def _holders(log: Path) -> list[int]:
    """Live processes with ``log`` open (anvil and its npm wrapper write into it)."""
    return live_processes(holds_open(log))


# a shell's background job may ignore SIGINT; the CLI must see it as Ctrl-C
_MAIN = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from node.cli import main; sys.argv[0] = 'gpunet'; main()"
)


def _gpunet(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _MAIN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(("sig", "code", "word"), [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "terminated"),
])  # fmt: skip
def test_signal_while_anvil_starts_stops_it(
    tmp_path: Path, sig: signal.Signals, code: int, word: str
) -> None:
    state_dir = tmp_path / "devnet"
    log = state_dir / "anvil.log"
    proc = _gpunet("devnet", "up", "--dir", str(state_dir))
    leaked: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and _holders(log)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "anvil never started"
            time.sleep(0.01)
        signalled = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err
        assert time.monotonic() - signalled < 10  # anvil gets SIGTERM, then SIGKILL after 5 s
        assert err.strip().splitlines()[-1] == word, err
        assert "Traceback" not in err
        assert not (state_dir / "devnet.json").exists()
        time.sleep(0.5)
        leaked = _holders(log)
        assert leaked == [], f"anvil left running: {leaked}"
    finally:
        for pid in leaked:  # only when the test failed: do not leave its anvil behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
