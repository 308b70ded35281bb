"""Jobs through the real sandbox: every catalog model, metering, descriptor, exact tier."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import code_job, mlp_job

from node.runtime import descriptor, detect, formats
from node.runtime.errors import JobError
from node.runtime.pool import PoolConfig, RunRequest, WorkerPool

SMALL = {
    "resnet18@1": ({"width": 4, "classes": 7, "image": 32}, {"x": torch.randn(2, 3, 32, 32)}),
    "resnet50@1": ({"width": 4, "classes": 7, "image": 32}, {"x": torch.randn(2, 3, 32, 32)}),
    "vit@1": (
        {"image": 16, "patch": 4, "dim": 16, "depth": 2, "heads": 2, "mlp": 32, "classes": 3},
        {"x": torch.randn(2, 3, 16, 16)},
    ),
    "bert@1": (
        {"vocab": 50, "positions": 16, "dim": 16, "depth": 2, "heads": 2, "mlp": 32},
        {"input_ids": torch.randint(0, 50, (2, 9)), "attention_mask": torch.ones(2, 9).long()},
    ),
    "gpt2@1": (
        {"vocab": 50, "positions": 16, "dim": 16, "depth": 2, "heads": 2, "mlp": 32},
        {"input_ids": torch.randint(0, 50, (2, 9))},
    ),
    "mlp@1": ({"in": 12, "hidden": 16, "depth": 2, "out": 5}, {"x": torch.randn(3, 12)}),
}


def _bare(arch: str, config: dict[str, int], weights: bytes, inputs: bytes) -> bytes:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        model = formats.load_model(arch, config, weights)
        return formats.encode_outputs(formats.run(arch, config, model, inputs))[1]
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_every_catalog_model_in_the_sandbox(pool: WorkerPool, arch: str) -> None:
    config, tensors = SMALL[arch]
    weights = formats.random_weights(arch, config, seed=3)
    inputs = formats.save_safetensors(tensors)
    res = pool.run(RunRequest("catalog-v1", arch, config, weights, inputs))
    assert res.output_sha256 == hashlib.sha256(res.output).digest()
    # bitwise equal to the same job run bare in this (different) process
    assert res.output_sha256 == _bare(arch, config, weights, inputs)
    assert res.metered_millis >= 1 and res.wall_millis >= 1
    assert res.peak_memory_bytes > 0
    assert res.tier == 2
    assert {"bwrap", "cgroup", "landlock", "seccomp", "uid", "rlimits"} <= set(res.layers)


def test_descriptor_is_stable_and_parseable(pool: WorkerPool) -> None:
    res = pool.run(mlp_job())
    fields = descriptor.parse(res.runtime)
    assert fields["torch"] == torch.__version__
    assert fields["device"].startswith("cpu-")
    assert fields["det"] == "exact" and fields["threads"] == "1" and fields["fmt"] == "catalog-v1"
    assert res.runtime == pool.run(mlp_job(seed=5)).runtime
    assert len(res.runtime) <= 200


def test_exact_tier_is_bitwise_reproducible_across_processes(pool: WorkerPool) -> None:
    config, tensors = SMALL["gpt2@1"]
    weights = formats.random_weights("gpt2@1", config, seed=9)
    inputs = formats.save_safetensors(tensors)
    req = RunRequest("catalog-v1", "gpt2@1", config, weights, inputs)
    with ThreadPoolExecutor(2) as ex:  # both slots: two zygotes, two forked children
        digests = {r.output_sha256 for r in ex.map(pool.run, [req, req, req, req])}
    assert len(digests) == 1
    # and a fresh interpreter that never saw the sandbox
    code = (
        "import sys, torch; from node.runtime import formats as f; "
        "torch.set_num_threads(1); torch.use_deterministic_algorithms(True); "
        "w = open(sys.argv[1], 'rb').read(); x = open(sys.argv[2], 'rb').read(); "
        f"c = {config!r}; m = f.load_model('gpt2@1', c, w); "
        "print(f.encode_outputs(f.run('gpt2@1', c, m, x))[1].hex())"
    )
    wpath, xpath = pool.work / "w.st", pool.work / "x.st"
    wpath.write_bytes(weights)
    xpath.write_bytes(inputs)
    out = subprocess.run(
        [sys.executable, "-c", code, str(wpath), str(xpath)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == digests.pop().hex()


def test_bad_jobs_fail_with_codes_and_the_pool_survives(pool: WorkerPool) -> None:
    good = mlp_job()
    cases = [
        (RunRequest("catalog-v1", "mlp@1", good.config, b"\x80\x04junk", good.inputs), "bad_model"),
        (RunRequest("catalog-v1", "nope@1", {}, good.weights, good.inputs), "bad_model"),
        (RunRequest("catalog-v1", "mlp@1", good.config, good.weights, b"junk"), "bad_inputs"),
        (RunRequest("torchscript", "mlp@1", good.config, good.weights, good.inputs), "refused"),
        (RunRequest("catalog-v1", "mlp@1", {"in": 0}, good.weights, good.inputs), "too_large"),
    ]
    for req, code in cases:
        with pytest.raises(JobError) as info:
            pool.run(req)
        assert info.value.code == code, info.value
    assert pool.run(good).output_sha256


def test_a_memory_limit_too_small_for_any_child_is_oom_not_a_crash(
    host_report: detect.SandboxReport,
) -> None:
    """Under a 1 MiB job limit the children die before they are ready: each job fails
    with ``oom`` (the operator's limit, stated), the worker is not replaced and the
    pool stays usable."""
    if host_report.tier < 2:
        pytest.skip(f"host gives sandbox tier {host_report.tier}")
    with WorkerPool(PoolConfig(slots=1, threads=1, timeout_s=10.0, memory_bytes=1 << 20)) as tiny:
        slot = tiny._all[0]
        zygote = slot.zygote_pid
        for arch in ("gpt2@1", "bert@1", "resnet50@1"):
            config, tensors = SMALL[arch]
            req = RunRequest(
                "catalog-v1",
                arch,
                config,
                formats.random_weights(arch, config, seed=1),
                formats.save_safetensors(tensors),
            )
            with pytest.raises(JobError) as info:
                tiny.run(req)
            assert info.value.code == "oom", info.value
            assert "1048576" in info.value.message or "memory limit" in info.value.message
        assert slot.zygote_pid == zygote and slot.proc is not None and slot.proc.poll() is None


def test_model_cache_is_keyed_by_content(pool: WorkerPool) -> None:
    a, b = mlp_job(seed=1), mlp_job(seed=2)
    ra, rb = pool.run(a), pool.run(b)
    assert ra.output_sha256 != rb.output_sha256
    assert pool.run(a).output_sha256 == ra.output_sha256


def test_from_job_spec_and_capabilities(pool: WorkerPool) -> None:
    from protocol.content import cid_of
    from protocol.messages import JobFormat, JobSpec, ModelRef

    job = mlp_job(seed=7)
    spec = JobSpec(
        model=ModelRef(
            arch="mlp@1",
            config=job.config,
            weights=cid_of(job.weights).digest,
            weights_size=len(job.weights),
        ),
        inputs=cid_of(job.inputs).digest,
        inputs_size=len(job.inputs),
        max_gpu_millis=5000,
    )
    res = pool.run(RunRequest.from_spec(spec, job.weights, job.inputs))
    assert res.output_sha256 == pool.run(job).output_sha256
    with pytest.raises(JobError) as info:
        RunRequest.from_spec(spec, job.weights, job.inputs + b" ")
    assert info.value.code == "bad_inputs"
    req = RunRequest.from_spec(spec, job.weights, job.inputs)
    assert req.weights_sha256 == spec.model.weights and req.timeout_s == 5.0
    forged = dataclasses.replace(req, weights_sha256=b"\x01" * 32)
    with pytest.raises(JobError) as info:
        pool.run(forged)
    assert info.value.code == "bad_model"  # a content id that does not match is caught
    with pytest.raises(JobError) as info:
        pool.run(dataclasses.replace(req, min_sandbox_tier=3))
    assert info.value.code == "refused"
    caps = pool.capabilities()
    assert caps.sandbox_tier == 2 and caps.device_class.startswith("cpu-")
    assert JobFormat.EXPORT_V2 in caps.formats and caps.max_concurrent_jobs == 2


def test_jobs_run_deterministic_without_importing_the_compiler(pool: WorkerPool) -> None:
    """The flag is set through torch._C: the public setter imports torch._inductor.config
    (~1 s of every worker's cold start) for a compiler the runtime never runs."""
    code = (
        "import sys\n"
        "outputs = {'y': torch.tensor([torch.are_deterministic_algorithms_enabled(),"
        " 'torch._inductor.config' in sys.modules])}"
    )
    res = pool.run(code_job(code))
    assert formats.parse_safetensors(res.output, "outputs")["y"].tolist() == [True, False]
