"""The committed artifacts are exactly what the pinned compiler produces from contracts/src."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_artifacts_match_a_fresh_compile() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_contracts.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_artifacts_are_path_independent() -> None:
    for path in (ROOT / "contracts" / "artifacts").glob("*.json"):
        text = path.read_text()
        assert str(ROOT) not in text, f"{path.name} mentions the checkout path"
        art = json.loads(text)
        assert art["settings"]["metadata"] == {"bytecodeHash": "none", "appendCBOR": False}
        assert art["bytecode"].startswith("0x") and len(art["bytecode"]) > 2
