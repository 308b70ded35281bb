"""The model catalog: our own versioned, hash-pinned architectures for job format v1.

An entry is named ``<family>@<version>``. Its code is pinned: :data:`PINS` holds
the sha256 of the entry's source files, checked at import; editing a model
without bumping its version (and its pin) makes the entry unusable, so a
runtime id can never name two different programs. Configs are small integers
with per-key bounds, and the parameter count of the resulting model is capped
(computed on the ``meta`` device, so a client cannot make us allocate a
100 GB model just to find out it is too big).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import JobError
from . import mlp, resnet, tolerances, transformers

__all__ = [
    "CATALOG",
    "CATALOG_VERSION",
    "MAX_PARAMS",
    "TINY",
    "Entry",
    "build",
    "catalog_hash",
    "get",
    "source_hash",
    "tolerance",
]

#: Hard upper bound on parameters of any catalog model (4 GiB of fp32 weights).
MAX_PARAMS: Final = 1 << 30
_HERE = Path(__file__).resolve().parent
MAX_BATCH: Final = 4096


@dataclasses.dataclass(frozen=True)
class Entry:
    """One catalog architecture."""

    name: str
    sources: tuple[str, ...]  # file names under catalog/, hashed into the pin
    bounds: Mapping[str, tuple[int, int, int]]  # key -> (min, max, default)
    factory: Callable[[Mapping[str, int]], nn.Module]
    check: Callable[[Mapping[str, int]], None]  # cross-field config rules
    inputs: Callable[[Mapping[str, int], Mapping[str, torch.Tensor], torch.dtype], None]

    def resolve(self, config: Mapping[str, int]) -> dict[str, int]:
        """Fill defaults and check bounds; raise ``JobError('bad_model'|'too_large')``."""
        unknown = set(config) - set(self.bounds)
        if unknown:
            raise JobError("bad_model", f"{self.name}: unknown config keys {sorted(unknown)}")
        out: dict[str, int] = {}
        for key, (lo, hi, default) in self.bounds.items():
            value = config.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int):
                raise JobError("bad_model", f"{self.name}: config {key} must be an int")
            if not lo <= value <= hi:
                raise JobError(
                    "too_large", f"{self.name}: config {key}={value} not in [{lo}, {hi}]"
                )
            out[key] = value
        self.check(out)
        return out


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise JobError("bad_model", message)


def _float_input(
    name: str, dims: Callable[[Mapping[str, int]], tuple[int | None, ...]]
) -> Callable[[Mapping[str, int], Mapping[str, torch.Tensor], torch.dtype], None]:
    def check(cfg: Mapping[str, int], tensors: Mapping[str, torch.Tensor], dt: torch.dtype) -> None:
        _only(tensors, {name}, {name})
        _shape(name, tensors[name], dims(cfg))
        if tensors[name].dtype != dt:
            raise JobError("bad_inputs", f"{name} must have the weights' dtype {dt}")

    return check


def _ids_input(
    mask: bool,
) -> Callable[[Mapping[str, int], Mapping[str, torch.Tensor], torch.dtype], None]:
    def check(cfg: Mapping[str, int], tensors: Mapping[str, torch.Tensor], dt: torch.dtype) -> None:
        allowed = {"input_ids", "attention_mask"} if mask else {"input_ids"}
        _only(tensors, allowed, {"input_ids"})
        ids = tensors["input_ids"]
        _shape("input_ids", ids, (None, None))
        if ids.dtype != torch.int64:
            raise JobError("bad_inputs", "input_ids must be int64")
        if not 1 <= ids.shape[1] <= cfg["positions"]:
            raise JobError("bad_inputs", f"sequence length must be in [1, {cfg['positions']}]")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= cfg["vocab"]):
            raise JobError("bad_inputs", "input_ids out of vocabulary range")
        if "attention_mask" in tensors:
            m = tensors["attention_mask"]
            if m.shape != ids.shape or m.dtype not in (torch.int64, torch.bool):
                raise JobError("bad_inputs", "attention_mask must be int64/bool shaped like ids")

    return check


def _only(tensors: Mapping[str, torch.Tensor], allowed: set[str], required: set[str]) -> None:
    extra, missing = set(tensors) - allowed, required - set(tensors)
    if extra or missing:
        raise JobError(
            "bad_inputs", f"inputs: unexpected {sorted(extra)}, missing {sorted(missing)}"
        )


def _shape(name: str, t: torch.Tensor, dims: tuple[int | None, ...]) -> None:
    ok = t.dim() == len(dims) and all(
        d is None or s == d for s, d in zip(t.shape, dims, strict=True)
    )
    if not ok:
        raise JobError("bad_inputs", f"{name}: shape {tuple(t.shape)} does not match {dims}")
    if not 1 <= t.shape[0] <= MAX_BATCH:
        raise JobError("too_large", f"{name}: batch must be in [1, {MAX_BATCH}]")


def _image_dims(cfg: Mapping[str, int]) -> tuple[int | None, ...]:
    return (None, 3, cfg["image"], cfg["image"])


def _check_resnet(cfg: Mapping[str, int]) -> None:
    _require(cfg["image"] % 32 == 0, "resnet: image must be a multiple of 32")


def _check_vit(cfg: Mapping[str, int]) -> None:
    _require(cfg["image"] % cfg["patch"] == 0, "vit: image must be a multiple of patch")
    _require(cfg["dim"] % cfg["heads"] == 0, "vit: dim must be a multiple of heads")


def _check_text(cfg: Mapping[str, int]) -> None:
    _require(cfg["dim"] % cfg["heads"] == 0, "dim must be a multiple of heads")


_WIDE: Final = (1, 65536)
_RESNET_BOUNDS: Final = {
    "width": (4, 256, 64),
    "classes": (1, 100_000, 1000),
    "image": (32, 1024, 224),
}
_TEXT_BOUNDS: Final = {
    "vocab": (2, 262_144, 50257),
    "positions": (1, 8192, 1024),
    "dim": (8, 8192, 768),
    "depth": (1, 96, 12),
    "heads": (1, 128, 12),
    "mlp": (8, 32768, 3072),
}

_ENTRIES: Final = (
    Entry(
        "mlp@1",
        ("mlp.py",),
        {"in": (*_WIDE, 784), "hidden": (*_WIDE, 512), "depth": (0, 64, 2), "out": (*_WIDE, 10)},
        lambda c: mlp.MLP(c["in"], c["hidden"], c["depth"], c["out"]),
        lambda c: None,
        _float_input("x", lambda c: (None, c["in"])),
    ),
    Entry(
        "resnet18@1",
        ("resnet.py",),
        _RESNET_BOUNDS,
        lambda c: resnet.resnet18(c["width"], c["classes"]),
        _check_resnet,
        _float_input("x", _image_dims),
    ),
    Entry(
        "resnet50@1",
        ("resnet.py",),
        _RESNET_BOUNDS,
        lambda c: resnet.resnet50(c["width"], c["classes"]),
        _check_resnet,
        _float_input("x", _image_dims),
    ),
    Entry(
        "vit@1",
        ("transformers.py", "layers.py"),
        {
            "image": (8, 1024, 224),
            "patch": (2, 64, 16),
            "dim": (8, 8192, 768),
            "depth": (1, 96, 12),
            "heads": (1, 128, 12),
            "mlp": (8, 32768, 3072),
            "classes": (1, 100_000, 1000),
        },
        lambda c: transformers.ViT(**c),
        _check_vit,
        _float_input("x", _image_dims),
    ),
    Entry(
        "bert@1",
        ("transformers.py", "layers.py"),
        {**_TEXT_BOUNDS, "vocab": (2, 262_144, 30522), "positions": (1, 8192, 512)},
        lambda c: transformers.BertEncoder(**c),
        _check_text,
        _ids_input(mask=True),
    ),
    Entry(
        "gpt2@1",
        ("transformers.py", "layers.py"),
        _TEXT_BOUNDS,
        lambda c: transformers.GPT2(**c),
        _check_text,
        _ids_input(mask=False),
    ),
)

#: sha256 of each entry's source files (name-sorted, ``name\0bytes`` each). A test and
#: :func:`get` check these; change a model only together with a new ``@version``.
PINS: Final[Mapping[str, str]] = {
    "mlp@1": "c369ded071ff1fdbd0c55d4b3ba14035130f7ff0ed507b216cb3be113343c06c",
    "resnet18@1": "1f22d0afc914fee6becba45238eb040bd9a53ec864469064f4960755b0efb626",
    "resnet50@1": "1f22d0afc914fee6becba45238eb040bd9a53ec864469064f4960755b0efb626",
    "vit@1": "2211f54e34edb5389e412fc7f8f9e04acf2314de478a2d4764bfb877a61f3646",
    "bert@1": "2211f54e34edb5389e412fc7f8f9e04acf2314de478a2d4764bfb877a61f3646",
    "gpt2@1": "2211f54e34edb5389e412fc7f8f9e04acf2314de478a2d4764bfb877a61f3646",
}

CATALOG: Final[Mapping[str, Entry]] = {e.name: e for e in _ENTRIES}


def source_hash(entry: Entry) -> str:
    """sha256 (hex) of the entry's source files; compared against :data:`PINS`."""
    h = hashlib.sha256()
    for name in sorted(entry.sources):
        h.update(name.encode() + b"\0" + (_HERE / name).read_bytes())
    return h.hexdigest()


def catalog_hash() -> str:
    """sha256 (hex) over every entry's name and pin: the catalog part of the runtime id."""
    h = hashlib.sha256()
    for name in sorted(PINS):
        h.update(f"{name}={PINS[name]};".encode())
    return h.hexdigest()


CATALOG_VERSION: Final = "v1-" + catalog_hash()[:16]


def get(arch: str) -> Entry:
    """The entry for ``arch``; ``JobError('bad_model')`` if unknown or its source drifted."""
    entry = CATALOG.get(arch)
    if entry is None:
        raise JobError("bad_model", f"unknown architecture {arch!r:.80}")
    if source_hash(entry) != PINS[arch]:
        raise JobError("bad_model", f"{arch}: source does not match its pin (bump the version)")
    return entry


_DTYPE_NAMES: Final = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def tolerance(arch: str, dtype: torch.dtype) -> float:
    """The relative error a verifier accepts for ``arch`` in ``dtype`` in the ``tolerance``
    tier: the per-(model, dtype) table of :mod:`.tolerances`, derived from measured spreads.
    ``JobError('bad_model')`` for an unknown model or a dtype the runtime does not run."""
    get(arch)
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        raise JobError("bad_model", f"no tolerance bound for dtype {dtype}")
    return tolerances.bound(arch, name)


_VIT: Final = {"dim": 8, "depth": 1, "heads": 2, "mlp": 8}
_TEXT: Final = {**_VIT, "vocab": 8, "positions": 4}
#: One tiny config per family: (arch, config, input kind "x" | "ids", input shape). The
#: zygote runs them to pay lazy state before forking; ``selftest`` runs them sandboxed.
TINY: Final[tuple[tuple[str, dict[str, int], str, tuple[int, ...]], ...]] = (
    ("mlp@1", {"in": 4, "hidden": 4, "depth": 1, "out": 2}, "x", (1, 4)),
    ("resnet18@1", {"width": 4, "classes": 2, "image": 32}, "x", (1, 3, 32, 32)),
    ("resnet50@1", {"width": 4, "classes": 2, "image": 32}, "x", (1, 3, 32, 32)),
    ("vit@1", {**_VIT, "image": 8, "patch": 4, "classes": 2}, "x", (1, 3, 8, 8)),
    ("gpt2@1", _TEXT, "ids", (1, 4)),
    ("bert@1", _TEXT, "ids", (1, 4)),
)


class _NoMetaInit(TorchFunctionMode):
    """Initialisers on meta tensors return at once (``torch.nn.init.*`` and in-place
    ``normal_``/``uniform_``): the tensors hold no values, and
    a meta ``normal_`` (``nn.Embedding``'s init) runs a Python reference implementation
    whose first call imports ``torch._dynamo``: ~0.9 s the first time a process built a
    GPT-2 or BERT, on a job's path in the supervisor's admission and the worker's load."""

    _SKIP: Final = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_})

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: object,
        args: tuple[object, ...] = (),
        kwargs: Mapping[str, object] | None = None,
    ) -> object:
        kwargs = kwargs or {}
        init = func in self._SKIP or getattr(func, "__module__", None) == "torch.nn.init"
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes keywords
        if init and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def build(arch: str, config: Mapping[str, int], *, max_params: int = MAX_PARAMS) -> nn.Module:
    """Build ``arch`` on the ``meta`` device (no memory, no init) after checking its size."""
    entry = get(arch)
    cfg = entry.resolve(config)
    with torch.device("meta"), _NoMetaInit():
        model = entry.factory(cfg)
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    if n > max_params:
        raise JobError("too_large", f"{arch}: {n} parameters over the limit {max_params}")
    return model.eval()
