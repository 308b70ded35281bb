"""The README's first command runs end to end: devnet, 3 provider processes and a verifier
process, jobs, the audit, balances."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(400)
def test_demo_runs_jobs_and_conserves_money() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--jobs",
            "6",
            "--concurrency",
            "2",
            "--sample-rate",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=380,
        cwd=ROOT,
        check=False,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "client sees offers from 3 providers" in out.stdout
    assert "6/6 jobs verified and paid" in out.stdout
    assert "money is conserved" in out.stdout
    assert out.stdout.count("✓") == 6
    # the verifier ran as its own process and re-ran every result (sample rate 1)
    assert "saw 6 results, sampled 6, re-executed 6, matched 6, mismatched 0" in out.stdout
    assert "challenges 0: every sampled result re-ran" in out.stdout
