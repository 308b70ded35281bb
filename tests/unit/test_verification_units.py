"""Spec blobs (named by the spec hash) and the verifier's output comparison per tier."""

from __future__ import annotations

import hashlib

import pytest
import torch

from node.runtime import catalog, formats
from node.verifier import VerifierSettings, compare_outputs
from protocol.errors import DecodeError, MessageTooLarge, NonCanonicalEncoding
from protocol.messages import (
    MAX_SPEC_BYTES,
    Determinism,
    JobSpec,
    ModelRef,
    decode_spec,
    spec_bytes,
)

SPEC = JobSpec(
    model=ModelRef(arch="mlp@1", config={"in": 4}, weights=b"\x01" * 32, weights_size=10),
    inputs=b"\x02" * 32,
    inputs_size=20,
)


def test_spec_blob_round_trip_and_hash_is_the_spec_hash() -> None:
    raw = spec_bytes(SPEC)
    assert hashlib.sha256(raw).digest() == SPEC.spec_hash()
    assert decode_spec(raw, SPEC.spec_hash()) == SPEC


def test_spec_blob_rejects_bad_input() -> None:
    raw = spec_bytes(SPEC)
    with pytest.raises(DecodeError):
        decode_spec(raw, b"\x00" * 32)  # wrong hash
    with pytest.raises(MessageTooLarge):
        decode_spec(b"\x00" * (MAX_SPEC_BYTES + 1), b"\x00" * 32)
    garbage = b"\xc1\xc1"
    with pytest.raises(DecodeError):
        decode_spec(garbage, hashlib.sha256(garbage).digest())
    # same content, non-canonical (map keys reordered) encoding
    import msgspec

    as_map = msgspec.msgpack.decode(raw)
    reordered = msgspec.msgpack.encode(dict(reversed(list(as_map.items()))))
    if reordered != raw:
        with pytest.raises(NonCanonicalEncoding):
            decode_spec(reordered, hashlib.sha256(reordered).digest())


def _st(t: torch.Tensor) -> bytes:
    return formats.save_safetensors({"logits": t})


def test_exact_tiers_compare_bits() -> None:
    a = _st(torch.ones(2, 3))
    b = _st(torch.ones(2, 3) + 1e-7)
    for det in (Determinism.EXACT, Determinism.GPU_DETERMINISTIC):
        assert compare_outputs(det, a, a, arch="mlp@1") == (True, 0.0)
        assert compare_outputs(det, a, b, arch="mlp@1")[0] is False


def test_tolerance_uses_the_catalog_bound() -> None:
    bound = catalog.tolerance("resnet18@1", torch.float32)
    ref = torch.linspace(-1, 1, 64).reshape(8, 8)
    near = ref + bound / 4
    far = ref + bound * 4
    ok, err = compare_outputs(Determinism.TOLERANCE, _st(near), _st(ref), arch="resnet18@1")
    assert ok and err == pytest.approx(bound / 4, rel=1e-3)
    assert not compare_outputs(Determinism.TOLERANCE, _st(far), _st(ref), arch="resnet18@1")[0]
    nan = ref.clone()
    nan[0, 0] = float("nan")
    assert not compare_outputs(Determinism.TOLERANCE, _st(nan), _st(ref), arch="resnet18@1")[0]
    other_shape = _st(ref[:4])
    assert not compare_outputs(Determinism.TOLERANCE, other_shape, _st(ref), arch="resnet18@1")[0]
    assert not compare_outputs(Determinism.TOLERANCE, b"junk", _st(ref), arch="resnet18@1")[0]


def test_tolerance_bound_depends_on_the_dtype() -> None:
    """A 1e-2 relative error is bf16 noise for GPT-2 (H200: 1.2e-2) but a fault in fp32."""
    ref = torch.linspace(-1, 1, 64).reshape(8, 8)
    noisy = ref + 1e-2
    for dt, ok in ((torch.bfloat16, True), (torch.float16, True), (torch.float32, False)):
        got, want = _st(noisy.to(dt)), _st(ref.to(dt))
        agrees, err = compare_outputs(Determinism.TOLERANCE, got, want, arch="gpt2@1")
        assert agrees is ok, dt
        assert 0 < err < catalog.tolerance("gpt2@1", torch.bfloat16)
    # a dtype swap is a mismatch, whatever the values
    assert not compare_outputs(
        Determinism.TOLERANCE, _st(ref.to(torch.bfloat16)), _st(ref), arch="gpt2@1"
    )[0]
    # non-float outputs must be equal
    ints = torch.arange(6)
    assert compare_outputs(Determinism.TOLERANCE, _st(ints), _st(ints), arch="gpt2@1")[0]
    assert not compare_outputs(Determinism.TOLERANCE, _st(ints + 1), _st(ints), arch="gpt2@1")[0]


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        VerifierSettings(sample_rate=1.5)
    with pytest.raises(ValueError, match="workers"):
        VerifierSettings(workers=0)
