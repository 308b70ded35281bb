"""Load the committed contract artifacts (``contracts/artifacts/*.json``).

The artifacts are produced by ``scripts/build_contracts.py`` and checked by a
test, so a running node needs no Node.js or compiler.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"


@dataclasses.dataclass(frozen=True)
class Artifact:
    """ABI and bytecode of one compiled contract."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: bytes
    deployed_bytecode: bytes


@functools.cache
def load_artifact(name: str) -> Artifact:
    """Read ``contracts/artifacts/<name>.json``."""
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no artifact {path}; run scripts/build_contracts.py")
    data = json.loads(path.read_text())
    return Artifact(
        name=data["contractName"],
        abi=tuple(data["abi"]),
        bytecode=bytes.fromhex(data["bytecode"].removeprefix("0x")),
        deployed_bytecode=bytes.fromhex(data["deployedBytecode"].removeprefix("0x")),
    )
