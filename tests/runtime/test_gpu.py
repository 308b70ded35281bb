"""The GPU worker path on a real CUDA device (skipped where torch sees none, as in CI).

A lease worker on ``cuda:0`` with every layer the host gives: CUDA context first, then
seccomp on every thread (docs/runtime.md §5). Checked here: every catalog model through
the sandbox is bitwise equal to a bare in-process run with the same deterministic flags
(the verifier's replay assumption for ``gpu-deterministic``); metering and the runtime
descriptor; the attacks of the adversarial suite that apply to a lease worker, each
checked from the host; the wall clock kills and replaces the worker.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import code_job

from node.runtime import catalog, detect, formats
from node.runtime.errors import JobError
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool

#: ``GPUNET_GPU_TEST_DEVICE=cpu`` dry-runs this file's lease path on the CPU (exact tier).
DEVICE = os.environ.get("GPUNET_GPU_TEST_DEVICE", "cuda:0")
GPU = DEVICE.startswith("cuda")
DET = 1 if GPU else 0
pytestmark = pytest.mark.skipif(GPU and not torch.cuda.is_available(), reason="no CUDA device")
SMALL = {
    "mlp@1": {},
    "resnet18@1": {"image": 64},
    "resnet50@1": {"image": 64},
    "vit@1": {"image": 64, "depth": 4},
    "bert@1": {"depth": 4},
    "gpt2@1": {"depth": 4, "vocab": 4096},
}


@pytest.fixture(scope="module")
def gpu_pool(fake_keystore: tuple[Path, bytes]) -> Iterator[WorkerPool]:
    report = detect.check(device=DEVICE)
    cfg = PoolConfig(
        device=DEVICE,
        mode="lease",
        timeout_s=60.0,
        memory_bytes=8 << 30,
        max_output_bytes=8 << 20,
        allow_test_code=True,
        keep_scratch=True,
        insecure=report.tier < 2,  # the figures still come; the tier is asserted below
        keystores=(str(fake_keystore[0]),),
        debug=True,
    )
    with WorkerPool(cfg) as p:
        yield p


def _inputs(arch: str, cfg: dict[str, int], batch: int) -> bytes:
    g = torch.Generator().manual_seed(7)
    if arch in ("bert@1", "gpt2@1"):
        return formats.save_safetensors(
            {"input_ids": torch.randint(0, cfg["vocab"], (batch, 32), generator=g)}
        )
    if arch == "mlp@1":
        return formats.save_safetensors({"x": torch.randn(batch, cfg["in"], generator=g)})
    return formats.save_safetensors(
        {"x": torch.randn(batch, 3, cfg["image"], cfg["image"], generator=g)}
    )


def test_host_gives_tier_2_on_the_gpu(gpu_pool: WorkerPool) -> None:
    missing = {k: v.detail for k, v in gpu_pool.report.layers.items() if not v.ok}
    print(gpu_pool.report.to_text())
    assert gpu_pool.tier == 2, f"missing layers: {missing}"
    for layer in ("seccomp", "landlock"):
        assert layer in gpu_pool.run(_job("mlp@1", 2)).layers


def _job(arch: str, batch: int) -> RunRequest:
    cfg = catalog.get(arch).resolve(SMALL[arch])
    weights = formats.random_weights(arch, SMALL[arch], seed=3)
    return RunRequest(
        "catalog-v1", arch, SMALL[arch], weights, _inputs(arch, cfg, batch), determinism=DET
    )


@pytest.mark.parametrize("arch", list(SMALL))
def test_catalog_model_in_the_sandbox_equals_a_bare_run(gpu_pool: WorkerPool, arch: str) -> None:
    req = _job(arch, 8)
    res = gpu_pool.run(req)
    again = gpu_pool.run(req)
    assert again.output_sha256 == res.output_sha256
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    if not GPU:
        torch.set_num_threads(1)
    model = formats.load_model(arch, req.config, req.weights, device=DEVICE)
    out = formats.run(arch, req.config, model, req.inputs, device=DEVICE)
    bare, digest = formats.encode_outputs(out)
    assert digest == hashlib.sha256(bare).digest() == res.output_sha256
    assert res.metered_millis >= 0
    # the inputs came through the worker's inbox, page-locked on a GPU (node/runtime/inbox.py)
    assert res.inputs_via == ("pinned" if GPU else "inbox")
    if GPU:  # (the CPU lease path reads no per-job peak)
        assert res.peak_memory_bytes > 0
        assert "det=gpu-deterministic" in res.runtime and "device=nvidia-" in res.runtime


def test_a_batch_on_the_lease_worker_equals_single_runs(gpu_pool: WorkerPool) -> None:
    reqs = [_job("resnet18@1", b) for b in (1, 4, 8)]
    batch = gpu_pool.run_batch(reqs)
    for got, req in zip(batch, reqs, strict=True):
        assert not isinstance(got, JobError), got
        assert got.output_sha256 == gpu_pool.run(req).output_sha256
        assert got.metered_millis >= 0 and got.runtime.startswith("gpunet-rt/1")


def _exfil(body: str) -> str:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return (
        "import os\ndata = b''\ntry:\n"
        + lines
        + "\nexcept BaseException as exc:\n    data = repr(exc).encode()\n"
        + "outputs = {'y': torch.tensor(list(data[:200000]) or [0], dtype=torch.uint8)}\n"
    )


def test_attacks_on_a_lease_worker_are_contained(
    gpu_pool: WorkerPool, fake_keystore: tuple[Path, bytes]
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    path, secret = fake_keystore
    tag = secrets.token_hex(4)
    outside = [f"/root/escape-{tag}", str(gpu_pool.work / f"escape-{tag}"), f"/opt/e-{tag}"]
    body = f"""
import socket, subprocess
for name, fn in (
    ('tcp', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2)),
    ('fork', lambda: os.fork()),
    ('subprocess', lambda: subprocess.run(['/usr/bin/true'])),
    ('system', lambda: os.system('true') == 0 or 1 / 0),
):
    try:
        fn()
        data += b'escaped:' + name.encode() + b';'
    except (OSError, ZeroDivisionError):
        pass
for p in ['/etc/shadow', {str(path)!r}]:
    try:
        data += open(p, 'rb').read()
    except OSError:
        pass
for p in {outside!r}:
    try:
        open(p, 'w').write('x')
        data += b'wrote;'
    except OSError:
        pass
for pid in os.listdir('/proc'):
    if pid.isdigit() and pid != str(os.getpid()):
        try:
            data += open(f'/proc/{{pid}}/cmdline', 'rb').read()
        except OSError:
            pass
nv = sorted(n for n in os.listdir('/dev') if n.startswith('nvidia'))
data += b'devs=' + ','.join(nv).encode()
"""
    res = gpu_pool.run(code_job(_exfil(body), determinism=DET))
    out = formats.parse_safetensors(res.output, "out")["y"].numpy().tobytes()
    try:
        listener.accept()
        hit = True
    except TimeoutError:
        hit = False
    finally:
        listener.close()
    assert not hit
    assert b"escaped" not in out and b"wrote" not in out
    assert b"root:" not in out and secret not in out
    assert b"pytest" not in out
    for p in outside:
        assert not Path(p).exists()
    devs = out.split(b"devs=")[1].decode().split(",")
    assert "nvidia1" not in devs  # only the assigned GPU's node (cuda:0)
    assert gpu_pool.run(_job("mlp@1", 2)).output_sha256  # a valid job still runs


def test_wall_clock_kills_and_replaces_the_lease_worker(gpu_pool: WorkerPool) -> None:
    first = gpu_pool._all[0].proc
    assert first is not None
    good = gpu_pool.run(_job("mlp@1", 2))
    t0 = time.monotonic()
    with pytest.raises(JobError) as info:
        gpu_pool.run(code_job("import time\ntime.sleep(10**6)", timeout_s=3.0, determinism=DET))
    assert info.value.code == "timeout"
    assert time.monotonic() - t0 < 3.0 + 8.0
    assert first.poll() is not None
    assert gpu_pool.run(_job("mlp@1", 2)).output_sha256 == good.output_sha256
