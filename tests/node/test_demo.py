"""The README's first command runs end to end (real anvil, real sockets, real signatures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_and_verifies_the_offer_exchange() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "signature valid" in out.stdout
    assert "client-bound offer nonce 2, verified" in out.stdout
    assert "balance 1000000000000000000 wei" in out.stdout
