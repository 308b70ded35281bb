"""Which isolation layers this host gives, and the sandbox tier they add up to.

Tiers (published as ``Capabilities.sandbox_tier``; precise definitions in docs/runtime.md):

* **2**: every layer: key separation, a separate host uid, bubblewrap namespaces (no
  network), Landlock ABI >= 4 (files + TCP), seccomp, a per-job cgroup (memory, pids,
  cpu), rlimits, wall clock, output cap, clean env. Runs ``catalog-v1`` and ``export-v2``.
* **1**: seccomp, a way to cap memory (cgroup, or RLIMIT_AS on CPU), a filesystem fence
  (Landlock ABI >= 1 or bubblewrap), key separation, and a separate uid or a user
  namespace. Runs ``catalog-v1`` only.
* **0**: anything less. The node refuses to serve unless the operator passes the
  explicit insecure override, and then advertises tier 0 (untrusted).
* **3**: reserved for tier 2 inside an outer kernel boundary (gVisor, a microVM); this
  runtime cannot verify one and never reports 3.

Every probe runs the real primitive (in a forked child or a throwaway process), so a
layer is reported present only if it actually worked here.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import cgroup, landlock, seccomp
from .sandbox import LAYERS, RuntimePaths


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer's status."""

    ok: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class SandboxReport:
    """The result of :func:`check`."""

    layers: Mapping[str, Layer]
    tier: int
    landlock_abi: int
    cgroup_kind: str
    root: bool

    @property
    def available(self) -> frozenset[str]:
        """Names of the layers that work."""
        return frozenset(k for k, v in self.layers.items() if v.ok)

    def formats(self) -> tuple[str, ...]:
        """Job formats this tier may run."""
        return ("catalog-v1", "export-v2") if self.tier >= 2 else ("catalog-v1",)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "tier": self.tier,
            "formats": list(self.formats()),
            "landlock_abi": self.landlock_abi,
            "cgroup": self.cgroup_kind,
            "layers": {k: {"ok": v.ok, "detail": v.detail} for k, v in self.layers.items()},
        }

    def to_text(self) -> str:
        """Human report: one line per layer, then the tier."""
        lines = [
            f"{'ok' if v.ok else 'MISSING':7} {k:15} {v.detail}" for k, v in self.layers.items()
        ]
        lines.append(f"sandbox tier: {self.tier}  (formats: {', '.join(self.formats())})")
        return "\n".join(lines)


def _probe_fork(fn: Any) -> tuple[bool, str]:
    """Run ``fn`` in a forked child; (ok, detail)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            fn()
            code = 0
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            os.write(w, str(exc).encode()[:300])
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0, msg


def _bwrap_probe(root: bool) -> Layer:
    exe = shutil.which("bwrap")
    if exe is None:
        return Layer(False, "bubblewrap not installed (apt-get install bubblewrap)")
    argv = [exe, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent"]
    if not root:
        argv.append("--unshare-user")
    argv += ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib64", "/lib64"]
    argv += ["--symlink", "usr/lib", "/lib", "--proc", "/proc", "--", "/usr/bin/true"]
    try:
        res = subprocess.run(argv, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Layer(False, f"bwrap failed to run: {exc}")
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()[:200]
        return Layer(False, f"bwrap cannot create namespaces: {err}")
    mode = "no user namespace, supervisor is root" if root else "user namespace"
    return Layer(True, f"user/pid/net/ipc/uts/mount namespaces ({mode})")


def _key_layer(keystores: Iterable[str | os.PathLike[str]], paths: RuntimePaths) -> Layer:
    mounted = [paths.prefix, paths.venv, str(Path(__file__).resolve().parents[1])]
    for key in keystores:
        k = Path(key).resolve()
        for m in mounted:
            if k == Path(m) or Path(m) in k.parents:
                return Layer(False, f"keystore {k} lies under {m}, which workers mount")
    return Layer(True, "keystore not mounted in workers; workers are exec'd, env cleared")


def tier_of(ok: frozenset[str]) -> int:
    """Map the available layers to a tier (see module docstring)."""
    full = {
        "key_separation", "uid", "bwrap", "landlock", "landlock_tcp", "seccomp", "cgroup",
        "rlimits", "wallclock", "output_cap", "clean_env",
    }  # fmt: skip
    if full <= ok:
        return 2
    base = {"key_separation", "seccomp", "wallclock", "output_cap", "rlimits"}
    fence = bool({"landlock", "bwrap"} & ok)
    memcap = "cgroup" in ok or "rlimits" in ok
    uid = "uid" in ok or "bwrap" in ok
    return 1 if base <= ok and fence and memcap and uid else 0


def check(
    keystores: Iterable[str | os.PathLike[str]] = (), *, device: str = "cpu"
) -> SandboxReport:
    """Probe every layer on this host and compute the tier."""
    root = os.geteuid() == 0
    paths = RuntimePaths.current()
    abi = landlock.abi_version()
    layers: dict[str, Layer] = {"key_separation": _key_layer(keystores, paths)}
    layers["uid"] = (
        Layer(True, "workers drop to a dedicated uid per slot (supervisor is root)")
        if root
        else Layer(False, "supervisor is not root: cannot switch workers to their own uid")
    )
    layers["bwrap"] = _bwrap_probe(root)
    if abi >= 1:
        ok, msg = _probe_fork(lambda: landlock.restrict(["/usr"], ["/tmp"]))
        layers["landlock"] = Layer(ok, f"ABI {abi}" if ok else f"ABI {abi} but failed: {msg}")
    else:
        layers["landlock"] = Layer(False, "kernel has no Landlock (needs 5.13+ and lsm=landlock)")
    landlock_ok = layers["landlock"].ok
    layers["landlock_tcp"] = Layer(
        landlock_ok and abi >= 4, f"TCP bind/connect fenced (ABI {abi}, needs 4)"
    )
    scope_detail = "abstract unix + signal scoping (ABI 6); CPU zygote only"
    layers["landlock_scope"] = Layer(landlock_ok and abi >= 6, scope_detail)
    if seccomp.supported():
        ok, msg = _probe_fork(lambda: seccomp.install("job"))
        layers["seccomp"] = Layer(ok, "deny-list filter, TSYNC" if ok else f"failed: {msg}")
    else:
        layers["seccomp"] = Layer(False, "no seccomp filter for this architecture/kernel")
    kind, detail = cgroup.detect()
    layers["cgroup"] = Layer(bool(kind), detail)
    layers["rlimits"] = Layer(True, "CPU, FSIZE, NOFILE, CORE; AS on CPU workers only")
    layers["wallclock"] = Layer(True, "zygote kills at the deadline, supervisor kills the cgroup")
    layers["output_cap"] = Layer(True, "RLIMIT_FSIZE + size check before reading")
    layers["clean_env"] = Layer(True, "bwrap --clearenv, python -I, fds closed")
    if device.startswith("cuda"):
        layers["landlock_scope"] = Layer(False, "not applied on GPU workers (breaks CUDA init)")
    ordered = {k: layers[k] for k in LAYERS}
    tier = tier_of(frozenset(k for k, v in ordered.items() if v.ok))
    return SandboxReport(ordered, tier, abi, kind, root)
