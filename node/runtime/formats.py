"""Job format v1: catalog architecture + safetensors weights and inputs -> safetensors outputs.

Loading is "parse bytes, ``load_state_dict(strict=True)``": the safetensors header is
JSON and the body raw tensor bytes, the architecture is our code, so there is no path
from a client's file to the interpreter. Pickle, TorchScript and torch.package are
never read here (the v2 ``.pt2`` path is :mod:`node.runtime.pt2`).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from typing import Final

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from torch import nn

from . import catalog
from .errors import JobError

__all__ = [
    "JobError",
    "encode_outputs",
    "load_model",
    "model_dtype",
    "parse_safetensors",
    "random_weights",
    "run",
    "save_safetensors",
]

_ST_DTYPES: Final = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
WEIGHT_DTYPES: Final = (torch.float32, torch.bfloat16, torch.float16)
MAX_HEADER: Final = 16 << 20


def save_safetensors(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Canonical safetensors bytes: keys sorted, compact JSON header, no metadata.

    Our own writer (the format is a length, a JSON header and raw little-endian bytes),
    so that an output's sha256 depends only on the tensors, not on a library version.
    """
    header: dict[str, object] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _ST_DTYPES:
            raise JobError("crashed", f"cannot serialise dtype {t.dtype}")
        n = t.numel() * t.element_size()
        header[name] = {
            "dtype": _ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        chunks.append(ctypes.string_at(t.data_ptr(), n) if n else b"")
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def _check_header(head: bytes, size: int, what: str) -> str:
    """The error code for ``what``, after checking the first 9 bytes of a ``size``-byte
    blob look like safetensors (header length in bounds, JSON object next)."""
    code = "bad_model" if what == "weights" else "bad_inputs"
    header_len = int.from_bytes(head[:8], "little")
    if len(head) < 9 or header_len > MAX_HEADER or header_len + 8 > size or head[8:9] != b"{":
        raise JobError(code, f"{what}: not a safetensors file")
    return code


def parse_safetensors(data: bytes, what: str) -> dict[str, torch.Tensor]:
    """Parse a safetensors blob; anything else (pickle, zip, junk) is ``bad_<what>``."""
    code = _check_header(data[:9], len(data), what)
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise JobError(code, f"{what}: invalid safetensors ({exc})") from None


def parse_safetensors_file(path: str, what: str, *, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Like :func:`parse_safetensors` for a file, mapped rather than read, with the tensors
    created on ``device`` directly (on a GPU: one host-to-device copy from the page cache)."""
    code = "bad_model" if what == "weights" else "bad_inputs"
    try:
        with open(path, "rb") as f:
            head, size = f.read(9), os.fstat(f.fileno()).st_size
        _check_header(head, size, what)
        with safe_open(path, framework="pt", device=device) as st:
            return {k: st.get_tensor(k) for k in st.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise JobError(code, f"{what}: invalid safetensors ({exc})") from None


def load_model(
    arch: str,
    config: Mapping[str, int],
    weights: bytes,
    *,
    max_params: int = catalog.MAX_PARAMS,
    device: str = "cpu",
) -> nn.Module:
    """Build ``arch`` and load ``weights`` with ``strict=True``; the model's dtype is theirs."""
    model = catalog.build(arch, config, max_params=max_params)
    state = parse_safetensors(weights, "weights")
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in WEIGHT_DTYPES:
        raise JobError("bad_model", f"weights: need one float dtype of {WEIGHT_DTYPES}")
    expected = model.state_dict()
    for key, t in state.items():
        ref = expected.get(key)
        if ref is not None and tuple(ref.shape) != tuple(t.shape):
            raise JobError("bad_model", f"weights: {key} has shape {tuple(t.shape)}")
        if ref is not None and ref.is_floating_point() != t.is_floating_point():
            raise JobError("bad_model", f"weights: {key} has dtype {t.dtype}")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise JobError("bad_model", f"weights do not match {arch}: {str(exc)[:300]}") from None
    return model.to(device).eval()


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters."""
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def run(
    arch: str,
    config: Mapping[str, int],
    model: nn.Module,
    inputs: bytes,
    *,
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """Check ``inputs`` against the entry's input spec and run one forward pass."""
    return forward(arch, config, model, parse_safetensors(inputs, "inputs"), device=device)


def forward(
    arch: str,
    config: Mapping[str, int],
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    *,
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """Check parsed ``tensors`` against the entry's input spec and run one forward pass."""
    entry = catalog.get(arch)
    cfg = entry.resolve(config)
    entry.inputs(cfg, tensors, model_dtype(model))
    moved = {k: v.to(device) for k, v in tensors.items()}
    with torch.inference_mode():
        out = model(**moved)
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def encode_outputs(outputs: Mapping[str, torch.Tensor]) -> tuple[bytes, bytes]:
    """Serialise outputs as safetensors (sorted keys, no metadata) and return (bytes, sha256)."""
    data = save_safetensors(outputs)
    return data, hashlib.sha256(data).digest()


def random_weights(arch: str, config: Mapping[str, int], seed: int = 0) -> bytes:
    """Deterministic random weights for ``arch`` (tests, benchmarks, demos)."""
    entry = catalog.get(arch)
    torch.manual_seed(seed)
    model = entry.factory(entry.resolve(config))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return save_safetensors(state)
