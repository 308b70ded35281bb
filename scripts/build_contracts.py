#!/usr/bin/env python3
"""Compile contracts/src with the pinned npm solc and write contracts/artifacts/*.json.

    python scripts/build_contracts.py            # (re)write the artifacts
    python scripts/build_contracts.py --check    # recompile; exit 1 on any difference

The compiler is driven in standard-JSON mode through ``contracts/solc-shim.js``
(never the ``solcjs`` CLI, whose stdout is not pure JSON and is cut above 64 KiB).
Source unit names are relative to the repository root (``contracts/src/…``,
``@openzeppelin/contracts/…``) and the metadata hash is switched off
(``bytecodeHash: none``, no CBOR trailer), so the bytecode depends only on the
sources and the settings below, never on where the checkout lives.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "contracts" / "src"
ARTIFACTS = ROOT / "contracts" / "artifacts"
SHIM = ROOT / "contracts" / "solc-shim.js"

#: contracts whose artifacts are committed: source unit -> contract names
OUTPUTS: dict[str, tuple[str, ...]] = {
    "contracts/src/GpunetEscrow.sol": ("GpunetEscrow",),
    "contracts/src/test/TestToken.sol": ("TestToken",),
    "contracts/src/test/ReentrantToken.sol": ("ReentrantToken",),
}

SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 10_000},
    "evmVersion": "cancun",
    "viaIR": True,
    "metadata": {"bytecodeHash": "none", "appendCBOR": False},
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]},
    },
}


class BuildError(RuntimeError):
    """The compiler failed or reported errors."""


def standard_input() -> dict[str, Any]:
    """The standard-JSON input: every .sol under contracts/src, relative names."""
    sources = {
        path.relative_to(ROOT).as_posix(): {"content": path.read_text()}
        for path in sorted(SRC.rglob("*.sol"))
    }
    return {"language": "Solidity", "sources": sources, "settings": SETTINGS}


def compile_contracts() -> dict[str, dict[str, Any]]:
    """Run the shim and return ``{contract name: artifact}``."""
    node = shutil.which("node")
    if node is None:
        raise BuildError("node (Node.js >= 18) is required to compile the contracts")
    proc = subprocess.run(
        [
            node,
            str(SHIM),
            "--standard-json",
            "--base-path",
            str(ROOT),
            "--include-path",
            str(ROOT / "node_modules"),
        ],
        input=json.dumps(standard_input()).encode(),
        capture_output=True,
        check=False,
        cwd=ROOT,
        timeout=300,
    )
    if proc.returncode != 0:
        raise BuildError(f"solc shim failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    out = json.loads(proc.stdout)
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("\n".join(e.get("formattedMessage", str(e)) for e in errors))
    version = (
        subprocess.run([node, str(SHIM), "--version"], capture_output=True, check=True, text=True)
        .stdout.split("Version:")[-1]
        .strip()
    )
    artifacts: dict[str, dict[str, Any]] = {}
    for unit, names in OUTPUTS.items():
        for name in names:
            c = out["contracts"][unit][name]
            artifacts[name] = {
                "contractName": name,
                "sourceName": unit,
                "compiler": version,
                "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
                "abi": c["abi"],
                "bytecode": "0x" + c["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + c["evm"]["deployedBytecode"]["object"],
            }
    return artifacts


def render(artifact: dict[str, Any]) -> str:
    """Canonical text of one artifact file."""
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if artifacts differ")
    args = parser.parse_args(argv)
    artifacts = compile_contracts()
    if args.check:
        stale = [
            name
            for name, art in artifacts.items()
            if not (ARTIFACTS / f"{name}.json").is_file()
            or (ARTIFACTS / f"{name}.json").read_text() != render(art)
        ]
        if stale:
            print(f"stale artifacts: {', '.join(stale)}; run scripts/build_contracts.py")
            return 1
        print("artifacts up to date")
        return 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, art in artifacts.items():
        (ARTIFACTS / f"{name}.json").write_text(render(art))
        size = (len(art["deployedBytecode"]) - 2) // 2
        print(f"wrote contracts/artifacts/{name}.json (runtime {size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
