"""Layer rules of DESIGN.md §1, checked on the source: protocol/ is pure and sans-I/O."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Modules that do I/O, run event loops or pull in heavy runtimes: never in protocol/.
FORBIDDEN_IN_PROTOCOL = {
    "node", "socket", "ssl", "asyncio", "trio", "anyio", "selectors", "subprocess",
    "multiprocessing", "threading", "urllib", "http", "requests", "httpx", "aiohttp",
    "web3", "libp2p", "torch", "safetensors", "sqlite3", "sqlite_utils", "shutil",
    "tempfile", "pathlib", "io", "os", "getpass", "logging",
}  # fmt: skip
FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval", "__import__"}
# Third-party packages protocol/ may use: light, pure computation.
ALLOWED_THIRD_PARTY = {"msgspec", "eth_hash", "eth_keyfile", "coincurve", "base58"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }


def test_protocol_is_pure() -> None:
    files = sorted((ROOT / "protocol").rglob("*.py"))
    assert files, "no protocol sources found"
    for path in files:
        imports = _imports(path)
        bad = imports & FORBIDDEN_IN_PROTOCOL
        assert not bad, f"{path.name} imports {sorted(bad)}"
        third_party = {m for m in imports if m not in sys.stdlib_module_names and m != "protocol"}
        assert third_party <= ALLOWED_THIRD_PARTY, f"{path.name} imports {sorted(third_party)}"
        calls = _calls(path) & FORBIDDEN_CALLS
        assert not calls, f"{path.name} calls {sorted(calls)}"


def test_nothing_imports_a_role() -> None:
    """Only the user interfaces (the CLI and its command modules) sit above the roles."""
    roles = {"node.provider", "node.client", "node.verifier", "node.cli"}
    interfaces = {ROOT / "node" / "cli.py", *(ROOT / "node" / "commands").rglob("*.py")}
    for path in sorted((ROOT / "node").rglob("*.py")) + sorted((ROOT / "protocol").rglob("*.py")):
        if path in interfaces:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in roles:
                raise AssertionError(f"{path} imports the role {node.module}")
            if isinstance(node, ast.Import):
                hit = {a.name for a in node.names} & roles
                assert not hit, f"{path} imports the role {hit}"


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import socket\nfrom node.chain import x\nopen('f')\n")
    assert _imports(bad) & FORBIDDEN_IN_PROTOCOL == {"socket", "node"}
    assert _calls(bad) & FORBIDDEN_CALLS == {"open"}
