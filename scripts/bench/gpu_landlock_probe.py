#!/usr/bin/env python3
"""Which Landlock rules let CUDA initialise (diagnostics for the GPU worker's rule set).

    python3 scripts/bench/gpu_landlock_probe.py [--device cuda:0] [--json FILE]

Each candidate runs in a fresh single-threaded process: Landlock with the CPU worker's
rules plus the candidate's extra read / write / device paths (no scoping, TCP denied),
then ``import torch`` and a CUDA op. Candidates run in parallel and are listed tightest
first; ``--json`` writes the first that works (``{"read": [...], "write": [...],
"devices": [...]}``), the shape of ``node.runtime.sandbox.GPU_LANDLOCK``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from node.runtime import landlock, sandbox
spec = json.loads(sys.argv[1])
if spec is not None:
    paths = sandbox.RuntimePaths.current()
    base_read = [*paths.read_paths({code!r}), "/proc", "/dev", "/sys"]
    nodes = sandbox.gpu_nodes({device!r})
    landlock.restrict(base_read + spec["read"], ["/tmp", "/dev/null"] + spec["write"],
                      devices=nodes + spec["devices"], scope=False)
import torch
torch.zeros(1, device={device!r}).add_(1)
print("cuda ok")
"""

#: tightest first; ``None`` is the control (no Landlock at all)
CANDIDATES: dict[str, dict[str, list[str]] | None] = {
    "cpu-rules": {"read": [], "write": [], "devices": []},
    "+write /dev/shm": {"read": [], "write": ["/dev/shm"], "devices": []},
    "+write /proc/self": {"read": [], "write": ["/proc/self"], "devices": []},
    "+write /proc": {"read": [], "write": ["/proc"], "devices": []},
    "+write /sys": {"read": [], "write": ["/sys"], "devices": []},
    "+ioctl /dev": {"read": [], "write": [], "devices": ["/dev"]},
    "+write /dev": {"read": [], "write": ["/dev"], "devices": []},
    "+read /": {"read": ["/"], "write": [], "devices": []},
    "+write /proc /dev, ioctl /dev": {"read": [], "write": ["/proc", "/dev"], "devices": ["/dev"]},
    "+read /, write /dev /proc /sys": {
        "read": ["/"], "write": ["/dev", "/proc", "/sys"], "devices": []},
    "+read /, write /dev /proc /sys, ioctl /dev": {
        "read": ["/"], "write": ["/dev", "/proc", "/sys"], "devices": ["/dev"]},
    "+write /, ioctl /dev": {"read": [], "write": ["/"], "devices": ["/dev"]},
    "no landlock (control)": None,
}  # fmt: skip


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    code = CHILD.format(root=str(ROOT), code=str(ROOT), device=args.device)
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, spec in CANDIDATES.items()
    }
    chosen = None
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        ok = proc.returncode == 0 and "cuda ok" in out
        last = out.strip().splitlines()[-1] if out.strip() else ""
        print(f"{'OK  ' if ok else 'FAIL'} {name}: {last[:200]}", flush=True)
        if ok and chosen is None and CANDIDATES[name] is not None:
            chosen = CANDIDATES[name]
    if args.json and chosen is not None:
        args.json.write_text(json.dumps(chosen))
    return 0 if chosen is not None else 1


if __name__ == "__main__":
    sys.exit(main())
