"""node/runtime may import only torch, safetensors, the standard library and protocol."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "node" / "runtime"
ALLOWED = {"torch", "safetensors", "protocol"}


def _imports(path: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # relative imports must stay inside node.runtime
            depth = len(path.relative_to(RUNTIME).parts) - 1
            if node.level > depth + 1:
                out.append((node.lineno, "." * node.level + (node.module or "")))
    return out


def test_runtime_imports_only_allowed_modules() -> None:
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) >= 15
    bad = []
    for f in files:
        for line, mod in _imports(f):
            top = mod.split(".")[0]
            if top in ALLOWED or top in sys.stdlib_module_names or top == "__future__":
                continue
            if mod.startswith("node.runtime"):
                continue
            bad.append(f"{f.relative_to(RUNTIME)}:{line}: {mod}")
    assert bad == []


def test_scanner_catches_a_forbidden_import(tmp_path: Path) -> None:
    # The check must be able to fail: numpy/node.chain are not allowed.
    f = RUNTIME / "x.py"
    src = "import numpy\nfrom node.chain import client\n"
    tree = ast.parse(src)
    mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mods += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    flagged = [
        m
        for m in mods
        if m.split(".")[0] not in ALLOWED | set(sys.stdlib_module_names)
        and not m.startswith("node.runtime")
    ]
    assert flagged == ["numpy", "node.chain"]
    assert not f.exists()


def test_zygote_modules_do_not_import_torch_at_module_level() -> None:
    # lockdown must run before `import torch`: these modules are imported first.
    for name in ("__init__.py", "zygote.py", "lockdown.py", "landlock.py", "seccomp.py", "wire.py"):
        tree = ast.parse((RUNTIME / name).read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        mods = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        mods += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert not any(m.split(".")[0] == "torch" for m in mods), name
        assert "formats" not in mods and "catalog" not in mods, name
