"""Format v2: the validator refuses every code path before loading; good archives run
in the sandbox; the raw loader's code paths, exercised inside the sandbox, stay contained."""

from __future__ import annotations

import io
import secrets
import zipfile
from pathlib import Path

import pt2_files
import pytest
import torch
from conftest import code_job

from node.runtime import formats, pt2
from node.runtime.errors import JobError
from node.runtime.pool import RunRequest, WorkerPool


@pytest.fixture(scope="module")
def good() -> bytes:
    return pt2_files.good()


def test_validator_accepts_a_plain_export(good: bytes) -> None:
    ops = pt2.validate(good, torch_version=torch.__version__)
    assert "torch.ops.aten.linear.default" in ops


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda d: pt2_files.use_pickle(d, "pass"), "pickled"),
        (lambda d: pt2_files.guards_code(d, "True"), "guards_code"),
        (pt2_files.bad_op, "from_file"),
        (pt2_files.extra_member, "unexpected member"),
        (lambda d: b"not a zip", "not a zip"),
    ],
    ids=["use_pickle", "guards_code", "file_op", "so_member", "junk"],
)
def test_validator_refuses(good: bytes, make: object, why: str) -> None:
    with pytest.raises(JobError, match=why) as info:
        pt2.validate(make(good))  # type: ignore[operator]
    assert info.value.code == "refused"


def test_validator_refuses_torchscript_torch_save_and_other_versions(good: bytes) -> None:
    ts, saved = io.BytesIO(), io.BytesIO()
    torch.jit.save(torch.jit.script(pt2_files.Small()), ts)
    torch.save({"w": torch.zeros(1)}, saved)
    for blob in (ts.getvalue(), saved.getvalue()):
        with pytest.raises(JobError) as info:
            pt2.validate(blob)
        assert info.value.code == "refused"
    with pytest.raises(JobError, match="exported with torch"):
        pt2.validate(good, torch_version="0.0.1")


def test_validator_refuses_a_zip_bomb() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/archive_format", b"pt2")
        z.writestr("archive/models/model.json", b" " * (8 << 20))
    with pytest.raises(JobError, match="compression"):
        pt2.validate(out.getvalue())


def test_a_good_v2_job_runs_in_the_sandbox(pool: WorkerPool, good: bytes) -> None:
    x = torch.randn(2, 4)
    res = pool.run(RunRequest("export-v2", "export", {}, good, formats.save_safetensors({"x": x})))
    out = formats.parse_safetensors(res.output, "inputs")
    torch.manual_seed(0)
    ref = pt2_files.Small().eval()
    with torch.inference_mode():
        assert torch.allclose(out["y"], ref(x)["y"])
    assert "fmt=export-v2" in res.runtime


def test_malicious_archives_never_reach_a_worker(pool: WorkerPool, good: bytes) -> None:
    x = formats.save_safetensors({"x": torch.zeros(1, 4)})
    for evil in (pt2_files.use_pickle(good, "pass"), pt2_files.guards_code(good, "True")):
        with pytest.raises(JobError) as info:
            pool.run(RunRequest("export-v2", "export", {}, evil, x))
        assert info.value.code == "refused"


def _payload(tag: str, pool: WorkerPool, key: Path) -> str:
    return (
        "import os\n"
        f"open(os.environ['JOB_SCRATCH'] + '/ran-{tag}', 'w').write('1')\n"
        f"for p in ['/scratch/escape-{tag}', {str(pool.work / ('escape-' + tag))!r}]:\n"
        "    try:\n        open(p, 'w').write('x')\n    except OSError:\n        pass\n"
        f"try:\n    open({str(key)!r}).read()\n    open(os.environ['JOB_SCRATCH'] + '/key', 'w')\n"
        "except OSError:\n    pass\n"
    )


@pytest.mark.parametrize("path", ["use_pickle", "guards_code", "sample_inputs"])
def test_raw_loader_code_paths_are_contained(
    pool: WorkerPool, good: bytes, fake_keystore: tuple[Path, bytes], path: str
) -> None:
    tag = secrets.token_hex(4)
    payload = _payload(tag, pool, fake_keystore[0])
    if path == "use_pickle":
        evil = pt2_files.use_pickle(good, payload)
    elif path == "sample_inputs":
        evil = pt2_files.evil_sample_inputs(good, payload)
    else:
        hexed = payload.encode().hex()  # the guard text is pasted into generated source
        evil = pt2_files.guards_code(good, f"exec(bytes.fromhex('{hexed}').decode()) is None")
    code = f"""
import io, os
os.environ['JOB_SCRATCH'] = scratch
try:
    ep = torch.export.load(io.BytesIO({evil!r}))  # the raw loader, no validator
    ep.module()(torch.zeros(2, 4))  # guards run on the first call
except BaseException:
    pass
"""
    pool.run(code_job(code, timeout_s=30))
    job_dir = max(pool.work.glob("slot*/j*"), key=lambda p: int(p.name[1:]))
    assert (job_dir / f"ran-{tag}").exists()  # the attack really executed, inside
    assert not (job_dir / "key").exists()
    for slot in pool._all:
        assert not (slot.scratch / f"escape-{tag}").exists()
    assert not (pool.work / f"escape-{tag}").exists()
