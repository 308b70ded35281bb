"""Hosts without bubblewrap: tier 1 from Landlock + seccomp + uid + cgroup, and a negative
control showing the host-side checks do catch a leak when the fences are off."""

from __future__ import annotations

import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import code_job, mlp_job

from node.runtime import detect, formats
from node.runtime.errors import SandboxUnavailable
from node.runtime.pool import PoolConfig, WorkerPool
from node.runtime.sandbox import CODE_ROOT, LAYERS, RuntimePaths, unreachable_for_other_uids


@pytest.fixture
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bytes]]:
    secret = secrets.token_hex(16).encode()
    d = tmp_path_factory.mktemp("hostsecret")
    d.chmod(0o755)
    path = d / "secret.txt"
    path.write_bytes(secret)
    path.chmod(0o644)  # readable by any uid: only a fence can keep a job out
    yield path, secret


def _attack(pool: WorkerPool, path: Path, port: int) -> bytes:
    code = f"""
import socket
data = b''
try:
    data += open({str(path)!r}, 'rb').read()
except OSError as exc:
    data += repr(exc).encode()
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()
except OSError as exc:
    data += repr(exc).encode()
outputs = {{'y': torch.tensor(list(data), dtype=torch.uint8)}}
"""
    res = pool.run(code_job(code))
    return bytes(formats.parse_safetensors(res.output, "x")["y"].tolist())


def _listener() -> tuple[socket.socket, list[int], threading.Event]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    hits = [0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                srv.accept()[0].close()
                hits[0] += 1
            except TimeoutError:
                continue
            except OSError:  # the test closed the socket before setting ``stop``
                return

    threading.Thread(target=loop, daemon=True).start()
    return srv, hits, stop


def test_without_fences_the_checks_see_the_leak(
    host_report: detect.SandboxReport, secret_file: tuple[Path, bytes]
) -> None:
    srv, hits, stop = _listener()
    try:
        cfg = PoolConfig(
            layers=frozenset({"rlimits", "cgroup"}), insecure=True, allow_test_code=True
        )
        with WorkerPool(cfg) as pool:
            assert pool.tier == 0
            out = _attack(pool, secret_file[0], srv.getsockname()[1])
        time.sleep(0.4)
        assert secret_file[1] in out  # the negative control: the leak is detected
        assert hits[0] == 1
    finally:
        stop.set()
        srv.close()


def test_tier_1_without_bwrap_still_fences(
    host_report: detect.SandboxReport, secret_file: tuple[Path, bytes]
) -> None:
    need = {"landlock", "landlock_tcp", "seccomp", "uid", "cgroup"}
    if not need <= host_report.available:
        pytest.skip(f"host lacks {sorted(need - host_report.available)}")
    blocked = unreachable_for_other_uids(RuntimePaths.current().read_paths(str(CODE_ROOT)))
    if blocked:
        pytest.skip(f"the interpreter is not reachable for a dropped uid without bwrap: {blocked}")
    srv, hits, stop = _listener()
    try:
        layers = frozenset(LAYERS) - {"bwrap"}
        cfg = PoolConfig(layers=layers, min_tier=1, allow_test_code=True)
        with WorkerPool(cfg) as pool:
            assert pool.tier == 1
            out = _attack(pool, secret_file[0], srv.getsockname()[1])
            assert pool.run(mlp_job()).tier == 1
        time.sleep(0.4)
        assert secret_file[1] not in out
        assert hits[0] == 0
    finally:
        stop.set()
        srv.close()


def test_unreachable_interpreter_is_reported_not_ignored(
    host_report: detect.SandboxReport,
) -> None:
    blocked = unreachable_for_other_uids(RuntimePaths.current().read_paths(str(CODE_ROOT)))
    if not blocked or not host_report.root:
        pytest.skip("interpreter is world-reachable here (or not root): nothing to report")
    cfg = PoolConfig(layers=frozenset(LAYERS) - {"bwrap"}, min_tier=1)
    with pytest.raises(SandboxUnavailable, match="cannot reach"):
        WorkerPool(cfg).start()


def test_reachability_check() -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # "/" and "/tmp" are world-searchable
    try:
        base.chmod(0o755)
        d = base / "private"
        d.mkdir(mode=0o700)
        (d / "f").write_text("x")
        (d / "f").chmod(0o644)
        assert unreachable_for_other_uids([str(d / "f")]) == [f"{d / 'f'} (blocked at {d})"]
        d.chmod(0o755)
        assert unreachable_for_other_uids([str(d / "f")]) == []
    finally:
        shutil.rmtree(base)
