"""Bounds of the ``tolerance`` tier per (model, dtype), derived from measured spreads.

A verifier re-running a ``tolerance`` job accepts the provider's output when
every tensor's relative error ``max|a - b| / max|ref|`` is within
:func:`bound`. The bound is never typed in by hand: each (model, dtype) row of
:data:`SPREADS` lists the spreads measured for it (the device and the command
in ``source``), and the bound is :data:`MARGIN` times the worst of them,
rounded up to 1, 2 or 5 × 10^k (:func:`derive_bound`).

Why 4×: a spread is one runtime's distance from a reference (float64 on the
CPU, or the same model at another batch size). Provider and verifier may each
sit that far from it on opposite sides (2×), and 2× more covers inputs and
weights other than the measured ones.

To update from a new measurement, run ``scripts/bench/determinism_gpu.py``
(``--device cpu`` or on a GPU) and add its ``Spread`` lines to the rows it
names; the bound follows. Every (model, dtype) the runtime accepts must have a
row (a test checks). Changing a row changes what verifiers accept, so it ships
with a release note in docs/verification.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Final

__all__ = ["BOUNDS", "DTYPES", "MARGIN", "SPREADS", "Spread", "bound", "derive_bound"]

#: Bound = MARGIN × the worst measured spread, rounded up (see the module docstring).
MARGIN: Final = 4.0
#: The weight dtypes the runtime accepts, by the names used in this table.
DTYPES: Final = ("fp32", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class Spread:
    """One measured relative spread and where it comes from."""

    value: float
    source: str  # device, what was compared, and the command or note that measured it


def derive_bound(spread: float) -> float:
    """``MARGIN × spread`` rounded up to 1, 2 or 5 × 10^k (1e-7 for a zero spread)."""
    x = MARGIN * spread
    if x <= 0:
        return 1e-7
    exp = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        candidate = float(f"{m}e{exp}")
        if candidate >= x * (1 - 1e-12):
            return candidate
    return float(f"1e{exp + 1}")


# Sources (commands in docs/verification.md, "Tolerance bounds"):
_H200 = "H200 (shared/notes/gpu-h200.md)"
_CPU = "CPU, determinism_gpu.py --device cpu"

#: Measured spreads per (model, dtype). ``proxy`` marks a figure measured on a sibling
#: model with the same numerics (named), used until the model itself is measured there.
SPREADS: Final[Mapping[tuple[str, str], tuple[Spread, ...]]] = {
    ("mlp@1", "fp32"): (
        Spread(1.4e-6, f"proxy gpt2 fp32 (matmuls only): {_H200} batch 1 vs 64"),
        Spread(4.9e-7, f"{_CPU} batch 1 vs 4"),
    ),
    ("mlp@1", "bf16"): (
        Spread(1.2e-2, f"proxy gpt2 bf16: {_H200} vs float64 CPU"),
        Spread(7.6e-3, f"{_CPU} vs float64"),
    ),
    ("mlp@1", "fp16"): (Spread(1.2e-2, "proxy: the bf16 row (fp16 not measured yet)"),),
    ("resnet18@1", "fp32"): (Spread(5.0e-4, f"proxy resnet50 fp32 (TF32 convs): {_H200}"),),
    ("resnet18@1", "bf16"): (Spread(5.2e-3, f"proxy resnet50 bf16: {_H200} vs float64 CPU"),),
    ("resnet18@1", "fp16"): (Spread(5.2e-3, "proxy: the bf16 row (fp16 not measured yet)"),),
    ("resnet50@1", "fp32"): (
        Spread(5.0e-4, f"{_H200} vs float64 CPU (TF32 convs)"),
        Spread(1.9e-4, f"{_H200} batch 1 vs 64, deterministic flags"),
    ),
    ("resnet50@1", "bf16"): (
        Spread(5.2e-3, f"{_H200} vs float64 CPU"),
        Spread(3.6e-3, f"{_H200} batch 1 vs 64"),
    ),
    ("resnet50@1", "fp16"): (Spread(5.2e-3, "proxy: the bf16 row (fp16 not measured yet)"),),
    ("vit@1", "fp32"): (Spread(5.0e-4, f"proxy resnet50 fp32 (TF32 patch conv): {_H200}"),),
    ("vit@1", "bf16"): (Spread(1.2e-2, f"proxy gpt2 bf16: {_H200} vs float64 CPU"),),
    ("vit@1", "fp16"): (Spread(1.2e-2, "proxy: the bf16 row (fp16 not measured yet)"),),
    ("bert@1", "fp32"): (Spread(1.4e-6, f"proxy gpt2 fp32: {_H200} batch 1 vs 64"),),
    ("bert@1", "bf16"): (Spread(1.2e-2, f"proxy gpt2 bf16: {_H200} vs float64 CPU"),),
    ("bert@1", "fp16"): (Spread(1.2e-2, "proxy: the bf16 row (fp16 not measured yet)"),),
    ("gpt2@1", "fp32"): (
        Spread(1.4e-6, f"{_H200} batch 1 vs 64"),
        Spread(1.3e-6, f"{_H200} vs float64 CPU"),
    ),
    ("gpt2@1", "bf16"): (
        Spread(1.2e-2, f"{_H200} vs float64 CPU"),
        Spread(1.1e-2, f"{_H200} batch 1 vs 64"),
    ),
    ("gpt2@1", "fp16"): (Spread(1.2e-2, "proxy: the bf16 row (fp16 not measured yet)"),),
}

#: The bound per (model, dtype), derived from :data:`SPREADS`.
BOUNDS: Final[Mapping[tuple[str, str], float]] = {
    key: derive_bound(max(s.value for s in spreads)) for key, spreads in SPREADS.items()
}


def bound(arch: str, dtype: str) -> float:
    """The bound for ``arch`` in ``dtype`` (``fp32``/``bf16``/``fp16``); KeyError if none."""
    return BOUNDS[(arch, dtype)]
