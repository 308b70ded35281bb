"""Attacks run as code *inside* the sandbox (the worst case: the job already has code
execution in the worker), each checked from the host side: listener hit counts, marker
files, secret bytes in the output, the workers' processes. All layers are on."""

from __future__ import annotations

import io
import os
import pickle
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import code_job, mlp_job

from node.runtime import sandbox
from node.runtime.errors import JobError
from node.runtime.pool import GRACE_S, RunResult, WorkerPool

EXFIL = """
import os
data = b''
try:
{body}
except BaseException as exc:
    data = repr(exc).encode()
outputs = {{'y': torch.tensor(list(data[:200000]) or [0], dtype=torch.uint8)}}
"""


def exfil(body: str) -> str:
    """Job code: run ``body`` (which sets ``data``) and return ``data`` as the output."""
    return EXFIL.format(body="\n".join("    " + line for line in body.strip().splitlines()))


def leaked(res: RunResult) -> bytes:
    return res.output


def _job_dirs(pool: WorkerPool) -> list[Path]:
    return sorted(pool.work.glob("slot*/j*"), key=lambda p: int(p.name[1:]))


def _last_job_dir(pool: WorkerPool) -> Path:
    return _job_dirs(pool)[-1]


def _worker_pids(pool: WorkerPool) -> list[int]:
    pids = []
    for slot in pool._all:
        assert slot.proc is not None and slot.proc.poll() is None
        pids.append(slot.proc.pid)
    return pids


class _Listener:
    """Counts connections accepted on a TCP port or an abstract unix socket."""

    def __init__(self, family: int, address: object) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.hits = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._t.join()
        self.sock.close()


@pytest.fixture
def tcp() -> Iterator[_Listener]:
    listener = _Listener(socket.AF_INET, ("127.0.0.1", 0))
    yield listener
    listener.close()


def test_listener_counts_a_real_connection(tcp: _Listener) -> None:
    # the host-side check can fail: a connection from outside the sandbox is counted
    port = tcp.sock.getsockname()[1]
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    time.sleep(0.5)
    assert tcp.hits == 1


def test_tcp_connect_out(pool: WorkerPool, tcp: _Listener) -> None:
    port = tcp.sock.getsockname()[1]
    res = pool.run(
        code_job(
            exfil(
                f"""
import socket
s = socket.create_connection(('127.0.0.1', {port}), timeout=2)
data = b'connected'
"""
            )
        )
    )
    time.sleep(0.5)
    assert tcp.hits == 0
    assert b"connected" not in leaked(res)


def test_abstract_unix_connect_out(pool: WorkerPool) -> None:
    name = "\0gpunet-test-" + secrets.token_hex(6)
    listener = _Listener(socket.AF_UNIX, name)
    try:
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(name)  # control: reachable from the host
        probe.close()
        time.sleep(0.4)
        assert listener.hits == 1
        res = pool.run(
            code_job(
                exfil(
                    f"""
import socket
s = socket.socket(socket.AF_UNIX)
s.connect({name!r})
data = b'connected'
"""
                )
            )
        )
        time.sleep(0.4)
        assert listener.hits == 1
        assert b"connected" not in leaked(res)
    finally:
        listener.close()


def test_read_etc_shadow(pool: WorkerPool) -> None:
    assert Path("/etc/shadow").read_bytes().startswith(b"root:")  # the host can
    res = pool.run(code_job(exfil("data = open('/etc/shadow', 'rb').read()")))
    assert b"root:" not in leaked(res)


def test_read_node_keystore(pool: WorkerPool, fake_keystore: tuple[Path, bytes]) -> None:
    path, secret = fake_keystore
    assert pool.report.layers["key_separation"].ok
    body = f"""
for p in [{str(path)!r}, '/root/.gpunet/keystore.json', {str(path.parent)!r}]:
    try:
        data += open(p, 'rb').read()
    except OSError as exc:
        data += repr(exc).encode()
"""
    res = pool.run(code_job(exfil(body)))
    assert secret not in leaked(res)
    assert b"ciphertext" not in leaked(res)


def test_read_another_jobs_scratch(pool: WorkerPool) -> None:
    secret = secrets.token_hex(16).encode()
    for slot in pool._all:
        victim = slot.scratch / "victim"
        victim.mkdir(exist_ok=True)
        (victim / "secret.txt").write_bytes(secret)
        (victim / "secret.txt").chmod(0o644)
    other = pool._all[1].scratch / "victim" / "secret.txt"
    body = f"""
for p in ['/scratch/victim/secret.txt', {str(other)!r}]:
    try:
        data += open(p, 'rb').read()
    except OSError as exc:
        data += repr(exc).encode()
try:
    data += repr(os.listdir('/scratch')).encode()
except OSError as exc:
    data += repr(exc).encode()
"""
    res = pool.run(code_job(exfil(body)))
    assert secret not in leaked(res)
    assert b"victim" not in leaked(res)


def test_write_outside_scratch(pool: WorkerPool) -> None:
    tag = secrets.token_hex(4)
    targets = [
        f"/scratch/escape-{tag}",
        f"/blobs/escape-{tag}",
        f"/opt/gpunet/node/escape-{tag}.py",
        f"/tmp/escape-{tag}",
        str(pool.work / f"escape-{tag}"),
        f"/root/escape-{tag}",
    ]
    body = f"""
for p in {targets!r}:
    try:
        open(p, 'w').write('x')
        data += b'wrote ' + p.encode()
    except OSError:
        pass
open(scratch + '/inside-{tag}', 'w').write('control')
"""
    pool.run(code_job(exfil(body)))
    job_dir = _last_job_dir(pool)
    assert (job_dir / f"inside-{tag}").read_text() == "control"  # control write landed
    for slot in pool._all:
        assert not (slot.scratch / f"escape-{tag}").exists()
    assert not (pool.blobs / f"escape-{tag}").exists()
    assert not (sandbox.CODE_ROOT / "node" / f"escape-{tag}.py").exists()
    assert not (pool.work / f"escape-{tag}").exists()
    assert not Path(f"/root/escape-{tag}").exists()


def test_fork_bomb(pool: WorkerPool) -> None:
    before = _worker_pids(pool)
    code = """
import os, threading, time
n = 0
for i in range(200):
    try:
        if os.fork() == 0:
            open(scratch + f'/forked-{i}', 'w').close()  # host-visible evidence
            time.sleep(60)
            os._exit(0)
        n += 1
    except OSError:
        break
t = threading.Thread(target=lambda: None)  # threads still work
t.start(); t.join()
outputs = {'forks': torch.tensor([n])}
"""
    res = pool.run(code_job(code))
    from node.runtime.formats import parse_safetensors

    assert int(parse_safetensors(res.output, "inputs")["forks"]) == 0
    assert _worker_pids(pool) == before
    from node.runtime.workers import descendants

    assert not list(_last_job_dir(pool).glob("forked-*"))  # no fork ever ran
    for slot in pool._all:  # nothing under a worker but its init, zygote and its children
        slot.settle()  # no child being prepared meanwhile
        zpid = slot.zygote_pid
        children = Path(f"/proc/{zpid}/task/{zpid}/children")
        kids = {int(k) for k in children.read_text().split()}
        init = int(Path(f"/proc/{zpid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert slot.proc is not None
        under = set(descendants(slot.proc.pid))
        kids |= {int(k) for k in children.read_text().split()}  # forked in between
        assert under <= {init, zpid} | kids


def test_allocate_30_gb(pool: WorkerPool) -> None:
    code = """
chunks = []
for _ in range(30):
    chunks.append(torch.ones(1 << 28))  # 1 GiB, touched
"""
    with pytest.raises(JobError) as info:
        pool.run(code_job(code))
    assert info.value.code == "oom"
    assert pool.run(mlp_job()).output


@pytest.mark.parametrize(
    "code", ["while True:\n    pass", "import time\ntime.sleep(10**6)"], ids=["spin", "sleep"]
)
def test_cpu_spin_and_sleep_forever_are_killed(pool: WorkerPool, code: str) -> None:
    before = _worker_pids(pool)
    t0 = time.monotonic()
    with pytest.raises(JobError) as info:
        pool.run(code_job(code, timeout_s=2.0))
    elapsed = time.monotonic() - t0
    assert info.value.code in ("timeout", "killed")
    assert elapsed < 2.0 + GRACE_S + 1.0
    assert _worker_pids(pool) == before  # the zygote's own deadline fired, no restart


def test_os_system_and_subprocess(pool: WorkerPool) -> None:
    code = """
import os, subprocess
try:
    os.system('touch ' + scratch + '/sys-marker')
except OSError:
    pass
try:
    subprocess.run(['/usr/bin/touch', scratch + '/sub-marker'], check=False)
except OSError:
    pass
open(scratch + '/control', 'w').write('x')
"""
    pool.run(code_job(code))
    job_dir = _last_job_dir(pool)
    assert (job_dir / "control").exists()
    assert not (job_dir / "sys-marker").exists()
    assert not (job_dir / "sub-marker").exists()


def test_signal_and_ptrace_the_parent(pool: WorkerPool) -> None:
    before = _worker_pids(pool)
    code = """
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
for target in (os.getppid(), 1, -1):
    try:
        os.kill(target, signal.SIGKILL)
    except OSError:
        pass
rc = libc.ptrace(0x4206, os.getppid(), 0, 0)  # PTRACE_SEIZE
outputs = {'ptrace': torch.tensor([rc])}
"""
    res = pool.run(code_job(code))
    from node.runtime.formats import parse_safetensors

    assert int(parse_safetensors(res.output, "inputs")["ptrace"]) == -1
    assert _worker_pids(pool) == before  # every zygote still alive, none restarted


def test_list_host_processes(pool: WorkerPool) -> None:
    body = """
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            data += open(f'/proc/{pid}/cmdline', 'rb').read() + b'\\n'
        except OSError:
            pass
"""
    res = pool.run(code_job(exfil(body)))
    assert b"pytest" not in leaked(res)
    assert b"PermissionError" in leaked(res) or b"python" not in leaked(res)


class _EvilPickle:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (self.code,))


def test_malicious_pickle_runs_contained(pool: WorkerPool) -> None:
    tag = secrets.token_hex(4)
    payload = (
        "import os\n"
        f"open(os.environ['JOB_SCRATCH'] + '/ran-{tag}', 'w').write('1')\n"
        f"for p in ['/scratch/pickle-{tag}', {str(pool.work / ('pickle-' + tag))!r}]:\n"
        "    try:\n        open(p, 'w').write('x')\n    except OSError:\n        pass\n"
        "try:\n    os.system('id')\nexcept OSError:\n    pass\n"
    )
    buf = io.BytesIO()
    torch.save(_EvilPickle(payload), buf)
    blob = buf.getvalue()
    code = f"""
import io, os
os.environ['JOB_SCRATCH'] = scratch
blob = {blob!r}
try:
    torch.load(io.BytesIO(blob))  # default weights_only=True refuses it
    open(scratch + '/default-loaded', 'w')
except Exception:
    pass
try:
    torch.load(io.BytesIO(blob), weights_only=False)  # the payload runs, inside
except Exception:
    pass
"""
    pool.run(code_job(code))
    job_dir = _last_job_dir(pool)
    assert (job_dir / f"ran-{tag}").exists()  # the payload did run (inside the sandbox)
    assert not (job_dir / "default-loaded").exists()
    for slot in pool._all:
        assert not (slot.scratch / f"pickle-{tag}").exists()
    assert not (pool.work / f"pickle-{tag}").exists()
    # v1 never reads pickles at all
    good = mlp_job()
    with pytest.raises(JobError) as info:
        pool.run(type(good)("catalog-v1", "mlp@1", good.config, blob, good.inputs))
    assert info.value.code == "bad_model"
    assert pickle.loads(pickle.dumps(1)) == 1


def test_torchscript_reads_and_writes_host_files(
    pool: WorkerPool, fake_keystore: tuple[Path, bytes]
) -> None:
    key, secret = fake_keystore
    victim = pool.work / f"victim-{secrets.token_hex(4)}"
    victim.write_bytes(b"A" * 64)
    victim.chmod(0o666)

    class Reader(torch.nn.Module):
        def __init__(self, path: str, size: int) -> None:
            super().__init__()
            self.path = path
            self.size = size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_file(self.path, shared=False, size=self.size, dtype=torch.uint8)

    class Writer(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = torch.from_file(self.path, shared=True, size=64, dtype=torch.uint8)
            return t.fill_(66)

    size = key.stat().st_size
    reader = torch.jit.script(Reader(str(key), size))
    writer = torch.jit.script(Writer(str(victim)))
    # the host control: the same programs do read and write outside a sandbox
    assert secret in bytes(reader(torch.zeros(1)).tolist())
    writer(torch.zeros(1))
    assert victim.read_bytes() == b"B" * 64
    victim.write_bytes(b"A" * 64)
    rbuf, wbuf = io.BytesIO(), io.BytesIO()
    torch.jit.save(reader, rbuf)
    torch.jit.save(writer, wbuf)
    body = f"""
for blob in ({rbuf.getvalue()!r}, {wbuf.getvalue()!r}):
    try:
        m = torch.jit.load(__import__('io').BytesIO(blob))
        data += bytes(m(torch.zeros(1)).tolist())
    except Exception as exc:
        data += repr(exc).encode()
"""
    res = pool.run(code_job(exfil(body)))
    assert secret not in leaked(res)
    assert victim.read_bytes() == b"A" * 64


def test_oversized_output(pool: WorkerPool) -> None:
    with pytest.raises(JobError) as info:
        pool.run(code_job("outputs = {'y': torch.zeros(1 << 20)}"))  # 4 MiB > 1 MiB cap
    assert info.value.code == "output_too_large"
    code = """
try:
    with open(scratch + '/output.safetensors', 'wb') as f:
        f.write(b'x' * (8 << 20))
except OSError:
    pass
"""
    pool.run(code_job(code))
    size = (_last_job_dir(pool) / "output.safetensors").stat().st_size
    assert size < 8 << 20  # RLIMIT_FSIZE stopped the raw write (then the real output)


def test_a_valid_job_still_succeeds_afterwards(pool: WorkerPool) -> None:
    res = pool.run(mlp_job())
    assert len(res.output_sha256) == 32 and res.tier == 2
    assert os.path.isdir(pool.work)
