"""Strict safetensors parsing from a host buffer, with tensors that are views of it.

The GPU lease worker receives a job's inputs in a shared-memory region (a memfd mapped
into the worker, possibly pinned). To copy them to the GPU straight from that region it
needs tensors that *are* the region, which ``safetensors`` cannot give (``load`` takes
bytes and copies; ``safe_open`` needs a file exactly the blob's size). This module
parses the blob itself: the header is read and checked like the Rust library does
(8-byte little-endian length, UTF-8 JSON object, ``dtype``/``shape``/``data_offsets``
per tensor, offsets that tile the data section exactly, sizes that match the shapes,
overflow-checked), and each tensor is a view of the buffer when its address is aligned
for its dtype, an aligned copy otherwise. Zero-element tensors are fresh empty tensors,
as in ``safetensors.torch.load``.

Where ``safetensors`` 0.8 is more lenient, we refuse, on purpose (the differential test
in ``tests/runtime/test_stview.py`` checks each point):

* a duplicate key anywhere (safetensors keeps the last tensor or metadata entry);
* a key in a tensor entry other than the three (safetensors ignores unknown fields), an
  entry written as a JSON array, a ``dtype`` written as ``{"F32": null}``;
* ``"__metadata__": null`` (metadata must be an object of strings);
* whitespace before the opening ``{`` (as ``formats`` already refuses);
* a header over ``formats.MAX_HEADER`` (16 MiB; safetensors allows 100 MB);
* dtypes outside the ten the runtime serialises (F8, U16/U32/U64, C64, F4, F6, ...).

Every refusal is a :class:`JobError` (``bad_model`` for weights, ``bad_inputs``
otherwise) with a short message.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Final

import torch

from protocol import boundedjson

from .errors import JobError
from .formats import _ST_DTYPES, MAX_HEADER

__all__ = ["tensors_from_buffer"]

_DTYPES: Final = {name: dtype for dtype, name in _ST_DTYPES.items()}
_FIELDS: Final = frozenset({"dtype", "shape", "data_offsets"})
_U64_MAX: Final = (1 << 64) - 1
_I64_MAX: Final = (1 << 63) - 1


class _Bad(Exception):
    """An invalid blob; the message says why (turned into a JobError by the caller)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    numel: int
    begin: int
    end: int


def tensors_from_buffer(buf: torch.Tensor, size: int, what: str) -> dict[str, torch.Tensor]:
    """Tensors of the safetensors blob in ``buf[:size]``, as views of ``buf`` where the
    alignment allows, copies otherwise.

    ``buf`` must be a 1-D contiguous uint8 CPU tensor (else TypeError: a caller's bug).
    Anything in ``buf[:size]`` that is not a valid safetensors blob, and a ``size``
    outside ``0..buf.numel()``, raises ``JobError("bad_model")`` when ``what`` is
    ``"weights"``, ``JobError("bad_inputs")`` otherwise. The views share ``buf``'s
    memory: they are valid while it is, and see later writes to it.
    """
    if (
        buf.dtype != torch.uint8
        or buf.dim() != 1
        or buf.device.type != "cpu"
        or not buf.is_contiguous()
    ):
        raise TypeError("buf must be a 1-D contiguous uint8 CPU tensor")
    code = "bad_model" if what == "weights" else "bad_inputs"
    try:
        return _parse(buf, size)
    except _Bad as exc:
        raise JobError(code, f"{what}: invalid safetensors ({exc})") from None


def _parse(buf: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
    if type(size) is not int or not 0 <= size <= buf.numel():
        raise _Bad("size out of range")
    if size < 8:
        raise _Bad("shorter than the header length")
    ptr = buf.data_ptr()
    n = int.from_bytes(ctypes.string_at(ptr, 8), "little")
    if n > MAX_HEADER or 8 + n > size:
        raise _Bad(f"header length {n} out of range")
    header = _header(ctypes.string_at(ptr + 8, n))
    entries = [_entry(name, info) for name, info in header.items() if name != "__metadata__"]
    if "__metadata__" in header:
        _check_metadata(header["__metadata__"])
    pos = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != pos:
            raise _Bad(f"{e.name!r}: data_offsets leave a gap or overlap")
        pos = e.end
    if pos != size - 8 - n:
        raise _Bad("the tensors do not cover the data section exactly")
    return {e.name: _tensor(buf, 8 + n, e) for e in entries}


def _header(raw: bytes) -> dict[str, object]:
    """The header as a dict: a UTF-8 JSON object, no duplicate keys, no lone surrogates,
    integers only in 0..2^64-1 (the Rust library's ``usize``), no floats or NaN."""
    if raw[:1] != b"{":
        raise _Bad("header is not a JSON object")
    try:
        value = boundedjson.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_object,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_float,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Bad("header is not UTF-8 JSON") from None
    if not isinstance(value, dict):  # pragma: no cover - it starts with "{"
        raise _Bad("header is not a JSON object")
    return value


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Bad("duplicate key in header")
    for key in obj:
        _check_str(key)
    return obj


def _int(literal: str) -> int:
    # a sign or more digits than 2^64-1 has: never a valid size or offset
    if literal.startswith("-") or len(literal) > 20 or int(literal) > _U64_MAX:
        raise _Bad("integer out of range")
    return int(literal)


def _float(literal: str) -> float:
    raise _Bad(f"non-integer number {literal[:20]}")


def _check_str(s: str) -> None:
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad("lone surrogate escape in header") from None


def _check_metadata(meta: object) -> None:
    if not isinstance(meta, dict):
        raise _Bad("__metadata__ is not an object")
    for value in meta.values():
        if not isinstance(value, str):
            raise _Bad("__metadata__ values must be strings")
        _check_str(value)


def _entry(name: str, info: object) -> _Entry:
    if not isinstance(info, dict) or info.keys() != _FIELDS:
        raise _Bad(f"{name!r}: need exactly dtype, shape, data_offsets")
    dtype = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        raise _Bad(f"{name!r}: unsupported dtype")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or any(type(d) is not int or d < 0 for d in shape):
        raise _Bad(f"{name!r}: shape must be a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or any(type(o) is not int or o < 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _Bad(f"{name!r}: data_offsets must be [begin, end], begin <= end")
    numel = 1
    for d in shape:  # left to right, as the Rust library checks for overflow
        numel *= d
        if numel > _U64_MAX:
            raise _Bad(f"{name!r}: shape overflows")
    itemsize = dtype.itemsize
    if numel * itemsize * 8 > _U64_MAX:
        raise _Bad(f"{name!r}: shape overflows")
    if offsets[1] - offsets[0] != numel * itemsize:
        raise _Bad(f"{name!r}: data_offsets do not match shape and dtype")
    if numel == 0:  # torch's limits for an empty tensor: int64 sizes and strides
        stride = 1
        for d in shape[1:]:
            stride *= max(d, 1)
        if stride > _I64_MAX or any(d > _I64_MAX for d in shape):
            raise _Bad(f"{name!r}: shape too large")
    return _Entry(name, dtype, tuple(shape), numel, offsets[0], offsets[1])


def _tensor(buf: torch.Tensor, base: int, e: _Entry) -> torch.Tensor:
    if e.numel == 0:
        return torch.empty(e.shape, dtype=e.dtype)
    start = base + e.begin
    raw = buf[start : base + e.end]
    itemsize = e.dtype.itemsize
    if (buf.data_ptr() + start) % itemsize or (buf.storage_offset() + start) % itemsize:
        raw = raw.clone()  # unaligned for the dtype: an aligned copy
    return raw.view(e.dtype).view(e.shape)
