"""stview.tensors_from_buffer: round trips, views, the copy path, errors, and a
differential test against ``safetensors.torch.load`` on generated and mutated blobs."""

from __future__ import annotations

import json
import pickle
import random
import struct
from collections import Counter
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from node.runtime.errors import JobError
from node.runtime.formats import _ST_DTYPES, MAX_HEADER
from node.runtime.stview import tensors_from_buffer

NAMES = {name: dtype for dtype, name in _ST_DTYPES.items()}
SHAPES = [[], [0], [5], [2, 3], [3, 0, 2], [1, 1, 7]]


def _in_buffer(blob: bytes, *, offset: int = 0, garbage: int = 37) -> torch.Tensor:
    """A 1-D uint8 tensor holding ``blob`` at ``offset`` of its storage (the tensor
    starts there), followed by ``garbage`` bytes of 0xAB."""
    raw = bytearray(b"\xcd" * offset + blob + b"\xab" * garbage)
    return torch.frombuffer(raw, dtype=torch.uint8)[offset:]


def _sample(dtype: torch.dtype, shape: list[int], gen: torch.Generator) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(dtype)
    low = 0 if dtype == torch.uint8 else -100
    return torch.randint(low, 100, shape, generator=gen).to(dtype)


def _raw(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes (NaN payloads compare equal, unlike ``torch.equal``)."""
    return t.contiguous().reshape(-1).view(torch.uint8)


def _same(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> bool:
    return ours.keys() == theirs.keys() and all(
        ours[k].dtype == theirs[k].dtype
        and ours[k].shape == theirs[k].shape
        and torch.equal(_raw(ours[k]), _raw(theirs[k]))
        for k in ours
    )


def _shares(t: torch.Tensor, buf: torch.Tensor) -> bool:
    return t.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()


def _header_len(blob: bytes) -> int:
    return int.from_bytes(blob[:8], "little")


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NAMES))
def test_round_trip_every_dtype_and_shape(name: str) -> None:
    dtype, gen = NAMES[name], torch.Generator().manual_seed(len(name))
    tensors = {f"t{i}": _sample(dtype, shape, gen) for i, shape in enumerate(SHAPES)}
    blob = st_save(tensors, metadata={"format": "pt", "note": "ü"})
    buf = _in_buffer(blob)
    ours = tensors_from_buffer(buf, len(blob), "inputs")
    assert _same(ours, st_load(blob))
    assert _same(ours, tensors)
    header = json.loads(blob[8 : 8 + _header_len(blob)])
    base = buf.data_ptr() + 8 + _header_len(blob)
    for key, t in ours.items():
        if t.numel():  # aligned (safetensors pads its header to 8): a view, no copy
            assert _shares(t, buf), key
            assert t.data_ptr() == base + header[key]["data_offsets"][0]
    # the garbage after `size` is not part of the blob
    with pytest.raises(JobError, match="cover the data section"):
        tensors_from_buffer(buf, buf.numel(), "inputs")


def test_round_trip_mixed_dtypes_are_views_of_the_buffer() -> None:
    gen = torch.Generator().manual_seed(1)
    tensors = {f"{n}.{i}": _sample(d, [3, i + 1], gen) for i, (n, d) in enumerate(NAMES.items())}
    blob = st_save(tensors)
    buf = _in_buffer(blob, garbage=4096)
    ours = tensors_from_buffer(buf, len(blob), "weights")
    assert _same(ours, st_load(blob))
    assert all(_shares(t, buf) for t in ours.values())
    # a view: a write to the buffer shows in the tensor
    t = ours["U8.8"]
    offset = t.data_ptr() - buf.data_ptr()
    buf[offset] = 201
    assert int(t.reshape(-1)[0]) == 201


def test_empty_blob_and_zero_element_tensors() -> None:
    blob = st_save({})
    assert tensors_from_buffer(_in_buffer(blob), len(blob), "inputs") == {}
    blob = st_save({"a": torch.zeros(0, 4), "b": torch.zeros(2, 0, dtype=torch.int64)})
    ours = tensors_from_buffer(_in_buffer(blob), len(blob), "inputs")
    assert ours["a"].shape == (0, 4) and ours["b"].dtype == torch.int64
    assert _same(ours, st_load(blob))


# -- the copy path -------------------------------------------------------------------------


def _blob(header: dict[str, object], data: bytes, pad_to: int = 8) -> bytes:
    head = json.dumps(header).encode()
    head += b" " * (-(8 + len(head)) % pad_to)
    return struct.pack("<Q", len(head)) + head + data


def test_unaligned_offsets_are_copied_with_correct_values() -> None:
    f32, f64, bf16 = [1.5, -2.25], [3.125], [1.0, -0.5, 2.0, 4.0]
    data = (
        b"\x07\x08\x09"
        + struct.pack("<2f", *f32)
        + struct.pack("<d", *f64)
        + torch.tensor(bf16, dtype=torch.bfloat16).view(torch.uint8).numpy().tobytes()
    )
    header = {
        "p": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
        "f": {"dtype": "F32", "shape": [2], "data_offsets": [3, 11]},
        "d": {"dtype": "F64", "shape": [], "data_offsets": [11, 19]},
        "h": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [19, 27]},
    }
    blob = _blob(header, data)
    buf = _in_buffer(blob)
    ours = tensors_from_buffer(buf, len(blob), "inputs")
    assert ours["p"].tolist() == [7, 8, 9] and _shares(ours["p"], buf)
    assert ours["f"].tolist() == f32 and not _shares(ours["f"], buf)
    assert ours["d"].item() == f64[0] and ours["d"].shape == () and not _shares(ours["d"], buf)
    assert ours["h"].reshape(-1).tolist() == bf16 and not _shares(ours["h"], buf)
    assert all(t.data_ptr() % t.element_size() == 0 for t in ours.values())
    assert _same(ours, st_load(blob))


def test_a_buffer_at_an_odd_address_gives_copies() -> None:
    gen = torch.Generator().manual_seed(2)
    tensors = {"x": torch.randn(4, 5, generator=gen), "i": torch.arange(6, dtype=torch.int16)}
    blob = st_save(tensors)
    buf = _in_buffer(blob, offset=3)
    assert buf.data_ptr() % 2 == 1
    ours = tensors_from_buffer(buf, len(blob), "inputs")
    assert _same(ours, tensors)
    assert not any(_shares(t, buf) for t in ours.values())


# -- errors ---------------------------------------------------------------------------------


def _raw_blob(head: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(head)) + head + data


U8_ENTRY = '{"a":{"dtype":"U8","shape":[%s],"data_offsets":[0,0]}}'
GOOD = st_save({"a": torch.ones(2, 2)})
BAD_BLOBS = {
    "pickle": pickle.dumps({"a": 1}),
    "short": GOOD[:7],
    "header past the end": struct.pack("<Q", len(GOOD)) + GOOD[8:],
    "header too large": struct.pack("<Q", MAX_HEADER + 1) + b"{" + b" " * (MAX_HEADER + 8),
    "truncated data": GOOD[:-1],
    "trailing byte": GOOD + b"\0",
    "deep nesting": _raw_blob(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "not utf-8": _raw_blob(b'{"\xff":1}'),
    "huge int": _raw_blob((U8_ENTRY % ("1" * 5000)).encode()),
    "float size": _raw_blob((U8_ENTRY % "1e300").encode()),
    "negative zero": _raw_blob((U8_ENTRY % "-0").encode()),
    "lone surrogate": _raw_blob(b'{"\\udc00":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'),
}


@pytest.mark.parametrize("case", sorted(BAD_BLOBS))
@pytest.mark.parametrize(("what", "code"), [("weights", "bad_model"), ("inputs", "bad_inputs")])
def test_bad_blobs_are_job_errors(case: str, what: str, code: str) -> None:
    blob = BAD_BLOBS[case]
    with pytest.raises(JobError) as info:
        tensors_from_buffer(_in_buffer(blob), len(blob), what)
    assert info.value.code == code
    assert info.value.message.startswith(f"{what}: invalid safetensors")
    assert len(info.value.message) < 200


@pytest.mark.parametrize("size", [-1, len(GOOD) + 38, 2**70])
def test_size_outside_the_buffer(size: int) -> None:
    with pytest.raises(JobError, match="size out of range"):
        tensors_from_buffer(_in_buffer(GOOD), size, "inputs")


def test_buffer_must_be_contiguous_uint8() -> None:
    with pytest.raises(TypeError):
        tensors_from_buffer(torch.zeros(64), 8, "inputs")
    with pytest.raises(TypeError):
        tensors_from_buffer(torch.zeros(128, dtype=torch.uint8)[::2], 8, "inputs")


# -- differential against safetensors --------------------------------------------------------


class _Lit(str):
    """A JSON literal written as is (``-0``, ``1.0``, ``NaN``...)."""


class _Obj(list[tuple[str, object]]):
    """A JSON object as ordered pairs, so that a key can repeat."""


def _dump(v: object) -> str:
    if isinstance(v, _Lit):
        return str(v)
    if isinstance(v, _Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(x)}" for k, x in v) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_dump(x) for x in v) + "]"
    return json.dumps(v)


FOREIGN = {1: ["F8_E4M3", "F8_E5M2"], 2: ["U16"], 4: ["U32"], 8: ["U64", "C64"]}
# safetensors 0.8's other dtypes: it accepts them, we refuse them
OTHER_DTYPES = {"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", *(n for v in FOREIGN.values() for n in v)}
KEYS = ["a", "b", "w.0", "layer.1.bias", "ü", "", "__x__"]
HUGE = [2**31, 2**32, 2**61, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


class _Case:
    """One generated blob: tensors (name, dtype, shape, bytes) in data order, then the
    header pairs, data and length field, each open to mutation before the next step."""

    def __init__(self, rng: random.Random, least: int) -> None:
        self.rng = rng
        self.specs: list[list[object]] = []
        for name in rng.sample(KEYS, rng.randint(least, 4)):
            dtype = rng.choice(sorted(NAMES))
            shape = [rng.randint(0, 3) for _ in range(rng.randint(0, 3))]
            n = NAMES[dtype].itemsize
            for d in shape:
                n *= d
            self.specs.append([name, dtype, shape, rng.randbytes(n)])
        self.meta: object = None
        if rng.random() < 0.3:
            self.meta = _Obj([("format", "pt"), ("k", rng.choice(["v", "ü", ""]))])

    def layout(self) -> None:
        self.entries: list[tuple[str, _Obj]] = []
        offset, chunks = 0, []
        for name, dtype, shape, data in self.specs:
            assert isinstance(data, bytes)
            end = offset + len(data)
            entry = _Obj([("dtype", dtype), ("shape", shape), ("data_offsets", [offset, end])])
            self.entries.append((str(name), entry))
            chunks.append(data)
            offset = end
        self.data = b"".join(chunks)
        self.pairs: list[tuple[str, object]] = list(self.entries)
        self.rng.shuffle(self.pairs)
        if self.meta is not None:
            self.pairs.insert(self.rng.randint(0, len(self.pairs)), ("__metadata__", self.meta))

    def bytes(self) -> bytes:
        head = _dump(_Obj(self.pairs)).encode()
        head += b" " * self.rng.choice([0, 1, -(8 + len(head)) % 8])
        return struct.pack("<Q", len(head)) + head + self.data


def _pick_entry(c: _Case) -> _Obj | None:
    return c.rng.choice(c.entries)[1] if c.entries else None


def _set(entry: _Obj, key: str, value: object) -> None:
    entry[:] = [(k, value if k == key else v) for k, v in entry]


def _get(entry: _Obj, key: str) -> object:
    return dict(entry)[key]


def _m_offset(c: _Case) -> None:
    if e := _pick_entry(c):
        off = list(_get(e, "data_offsets"))
        off[c.rng.randint(0, 1)] += c.rng.choice([-8, -2, -1, 1, 2, 4, 8])
        _set(e, "data_offsets", off)


def _m_swap_offsets(c: _Case) -> None:
    if e := _pick_entry(c):
        _set(e, "data_offsets", list(reversed(_get(e, "data_offsets"))))


def _m_shape(c: _Case) -> None:
    if (e := _pick_entry(c)) is None:
        return
    shape = list(_get(e, "shape"))
    r, i = c.rng.random(), c.rng.randint(0, max(len(shape) - 1, 0))
    if r < 0.2:
        shape.append(c.rng.choice([1, 1, 2]))
    elif r < 0.3 and shape:
        shape.pop(i)
    elif shape:
        shape[i] = c.rng.choice(
            [0, 1, shape[i] + 1, -1, _Lit("-0"), True, False, _Lit("2.0"), _Lit("1e0"), "2", None]
        )
    else:
        shape = c.rng.choice([[1], [True], ["x"], [[1]]])
    _set(e, "shape", shape)


def _m_shape_not_list(c: _Case) -> None:
    if e := _pick_entry(c):
        _set(e, "shape", c.rng.choice([1, "1", None, _Obj([("0", 1)])]))


def _m_offsets_form(c: _Case) -> None:
    if e := _pick_entry(c):
        off = _get(e, "data_offsets")
        assert isinstance(off, list)
        bad = [off[:1], [*off, off[1]], [off[0], _Lit(f"{off[1]}.0")], [off[0], -1], [True, 1]]
        _set(e, "data_offsets", c.rng.choice([*bad, _Lit("null")]))


def _m_dtype(c: _Case) -> None:
    if e := _pick_entry(c):
        _set(e, "dtype", c.rng.choice([*NAMES, "f32", "X", "", 32, None]))


def _m_foreign_dtype(c: _Case) -> None:  # pre-layout: same item size, other dtype
    if c.specs:
        spec = c.rng.choice(c.specs)
        spec[1] = c.rng.choice(FOREIGN[NAMES[str(spec[1])].itemsize])


def _m_huge_zero_shape(c: _Case) -> None:  # pre-layout: a zero-element tensor, huge dims
    if c.specs:
        spec = c.rng.choice(c.specs)
        dims = [c.rng.choice([*HUGE, 2, 0]) for _ in range(c.rng.randint(1, 3))]
        dims.insert(c.rng.randint(0, len(dims)), 0)
        spec[2], spec[3] = dims, b""


def _m_unaligned(c: _Case) -> None:  # pre-layout: an odd-length U8 tensor first
    n = c.rng.choice([1, 3, 5])
    c.specs.insert(0, ["pad", "U8", [n], c.rng.randbytes(n)])


def _m_gap(c: _Case) -> None:  # post-layout: shift the later tensors, add bytes
    if not c.entries:
        return
    k, cut = c.rng.choice([1, 2, 8]), c.rng.randint(0, len(c.entries) - 1)
    at = _get(c.entries[cut][1], "data_offsets")[0]
    for _, e in c.entries[cut:]:
        _set(e, "data_offsets", [o + k for o in _get(e, "data_offsets")])
    c.data = c.data[:at] + b"\0" * k + c.data[at:]


def _m_overlap(c: _Case) -> None:
    if len(c.entries) >= 2:
        _, e = c.rng.choice(c.entries[1:])
        _set(e, "data_offsets", [o - 1 for o in _get(e, "data_offsets")])


def _m_drop_key(c: _Case) -> None:
    if e := _pick_entry(c):
        e.pop(c.rng.randrange(len(e)))


def _m_extra_key(c: _Case) -> None:  # deliberate: safetensors ignores unknown fields
    if e := _pick_entry(c):
        e.insert(c.rng.randint(0, len(e)), (c.rng.choice(["x", "offsets", "dtypes"]), 1))


def _m_dup_top(c: _Case) -> None:  # deliberate: safetensors keeps the last one
    if c.pairs:
        c.pairs.append(c.rng.choice(c.pairs))


def _m_dup_field(c: _Case) -> None:
    if e := _pick_entry(c):
        e.append(c.rng.choice(list(e)))


def _m_meta(c: _Case) -> None:
    meta = c.rng.choice(
        [_Lit("null"), 1, "x", ["a"], _Obj([("k", 1)]), _Obj([("k", "a"), ("k", "b")])]
    )
    c.pairs = [(k, v) for k, v in c.pairs if k != "__metadata__"] + [("__metadata__", meta)]


def _m_entry_form(c: _Case) -> None:  # deliberate: array entries, {"F32": null} dtypes
    if e := _pick_entry(c):
        if c.rng.random() < 0.5:
            i = next(i for i, (k, _) in enumerate(c.pairs) if c.pairs[i][1] is e)
            c.pairs[i] = (c.pairs[i][0], [v for _, v in e])
        else:
            _set(e, "dtype", _Obj([(str(_get(e, "dtype")), _Lit("null"))]))


def _m_escape(c: _Case) -> None:  # \u escapes in a name: pairs, lone surrogates
    name = c.rng.choice(["\ud83d\ude00", "\ud800", "x\udc00", "\x00", "\u00fc"])
    if c.rng.random() < 0.7:
        i = c.rng.randrange(len(c.pairs))
        c.pairs[i] = (name, c.pairs[i][1])
    else:
        c.pairs.append(("__metadata__", _Obj([("k", name)])))


def _m_top(c: _Case) -> None:
    c.pairs = c.rng.choice([[("a", 1)], [("a", "x")], [("a", [])], [("a", _Lit("null"))]])


PRE: dict[str, Callable[[_Case], None]] = {
    "foreign_dtype": _m_foreign_dtype,
    "huge_zero_shape": _m_huge_zero_shape,
    "unaligned": _m_unaligned,
}
POST: dict[str, Callable[[_Case], None]] = {
    "offset": _m_offset,
    "swap_offsets": _m_swap_offsets,
    "shape": _m_shape,
    "shape_not_list": _m_shape_not_list,
    "offsets_form": _m_offsets_form,
    "dtype": _m_dtype,
    "gap": _m_gap,
    "overlap": _m_overlap,
    "drop_key": _m_drop_key,
    "extra_key": _m_extra_key,
    "dup_top": _m_dup_top,
    "dup_field": _m_dup_field,
    "meta": _m_meta,
    "entry_form": _m_entry_form,
    "top": _m_top,
    "escape": _m_escape,
}


def _m_bytes(rng: random.Random, blob: bytes) -> tuple[str, bytes]:
    n = _header_len(blob)
    kind = rng.choice(
        ["flip", "insert", "delete", "length", "truncate", "append", "leading_ws", "long"]
    )
    i = rng.randrange(8, 8 + n) if n else 8
    if kind == "flip":
        return kind, blob[:i] + bytes([rng.randrange(256)]) + blob[i + 1 :]
    if kind == "insert":
        ch = rng.choice([b" ", b"\t", b"\n", b"\0", b"{", b'"', b"x", b"\xc3\xbc", b"\xff"])
        out = blob[:i] + ch + blob[i:]
        return kind, struct.pack("<Q", n + len(ch)) + out[8:] if rng.random() < 0.7 else out
    if kind == "delete":
        out = blob[:i] + blob[i + 1 :]
        return kind, struct.pack("<Q", n - 1) + out[8:] if rng.random() < 0.7 else out
    if kind == "length":
        m = rng.choice([n - 1, n + 1, n - 8, n + 8, 0, len(blob), 2**64 - 1, MAX_HEADER + 1])
        return kind, struct.pack("<Q", max(m, 0)) + blob[8:]
    if kind == "truncate":
        return kind, blob[: rng.randrange(len(blob))]
    if kind == "append":
        return kind, blob + bytes([rng.randrange(256)])
    if kind == "leading_ws":  # deliberate: safetensors skips whitespace before "{"
        return kind, struct.pack("<Q", n + 1) + b" " + blob[8:]
    big = struct.pack("<Q", n + 1000) + blob[8 : 8 + n] + b" " * 1000 + blob[8 + n :]
    return kind, big


def _generate(rng: random.Random) -> tuple[str, bytes]:
    r = rng.random()
    c = _Case(rng, 2 if 0.15 <= r < 0.7 else 0)  # mutations of the header need tensors
    kind = "valid"
    if r < 0.15:
        kind = rng.choice(sorted(PRE))
        PRE[kind](c)
    c.layout()
    if 0.15 <= r < 0.7:
        kind = rng.choice(sorted(POST))
        POST[kind](c)
    blob = c.bytes()
    if r >= 0.85:
        kind, blob = _m_bytes(rng, blob)
    return kind, blob


def _deliberate(blob: bytes) -> str | None:
    """Which of our deliberate refusals (module docstring of stview) applies to a blob
    that safetensors may accept; None where we must agree with safetensors."""
    n = _header_len(blob)
    text = blob[8 : 8 + n].decode("utf-8", "replace")
    found: list[str] = []

    def pairs(kv: list[tuple[str, object]]) -> dict[str, object]:
        if len({k for k, _ in kv}) != len(kv):
            found.append("duplicate key")
        return dict(kv)

    try:
        top = json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None
    if not isinstance(top, dict):
        return None
    if text[:1] != "{":
        found.append("whitespace before {")
    for key, v in top.items():
        if key == "__metadata__":
            found += ["metadata null"] if v is None else []
        elif isinstance(v, list):
            found.append("array entry")
        elif isinstance(v, dict):
            if v.keys() - {"dtype", "shape", "data_offsets"}:
                found.append("unknown field")
            dtype = v.get("dtype")
            if isinstance(dtype, dict) or (isinstance(dtype, str) and dtype in OTHER_DTYPES):
                found.append("dtype outside our set")
    return found[0] if found else None


def test_differential_against_safetensors() -> None:
    rng = random.Random(20260517)
    kinds: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    deliberate: Counter[str] = Counter()
    for i in range(4000):
        kind, blob = _generate(rng)
        kinds[kind] += 1
        what = "weights" if i % 2 else "inputs"
        buf = _in_buffer(blob, offset=rng.choice([0, 0, 0, 1, 2, 4]))
        try:
            ours: dict[str, torch.Tensor] | None = tensors_from_buffer(buf, len(blob), what)
        except JobError as exc:
            assert exc.code == ("bad_model" if what == "weights" else "bad_inputs")
            ours = None
        try:
            theirs: dict[str, torch.Tensor] | None = st_load(blob)
        except Exception:  # noqa: BLE001 - any refusal of theirs
            theirs = None
        point = _deliberate(blob)
        if point is not None:
            deliberate[point] += 1
            assert ours is None, (kind, point, blob[:300])
            continue
        assert (ours is None) == (theirs is None), (kind, blob[:300], theirs)
        if ours is not None and theirs is not None:
            assert _same(ours, theirs), (kind, blob[:300])
        outcomes["accept" if ours is not None else "reject"] += 1
    # the generator is not vacuous: every mutation ran, both outcomes are common,
    # and every deliberate difference was exercised
    assert set(kinds) >= {"valid", *PRE, *POST, "flip", "length", "truncate", "leading_ws"}
    assert outcomes["accept"] > 800 and outcomes["reject"] > 800, outcomes
    assert set(deliberate) == {
        "duplicate key",
        "whitespace before {",
        "metadata null",
        "array entry",
        "unknown field",
        "dtype outside our set",
    }, deliberate
