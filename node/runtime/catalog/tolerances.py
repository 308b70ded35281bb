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
_CPU = "CPU x86-64 AVX-512, torch 2.13.0+cpu"
_H200_RUN = "H200, torch 2.11.0+cu130, determinism_gpu.py --batch 64 (docs/benchmarks.md)"

#: Measured spreads per (model, dtype): every model in fp32 and bf16 on an H200 and on
#: the CPU. fp16 on a GPU is not measured: its rows borrow the model's bf16 H200 figure
#: (conservative: fp16 keeps 3 more mantissa bits than bf16 and measured 8-13x closer on
#: the CPU).
SPREADS: Final[Mapping[tuple[str, str], tuple[Spread, ...]]] = {
    ("mlp@1", "fp32"): (
        Spread(1.9e-07, f"{_H200_RUN}: vs float64 CPU"),
        Spread(4.9e-07, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(3.7e-07, f"{_CPU}: vs float64 CPU"),
        Spread(4.9e-07, f"{_CPU}: batch 1 vs 4"),
    ),
    ("mlp@1", "bf16"): (
        Spread(5.4e-03, f"{_H200_RUN}: vs float64 CPU"),
        Spread(8.0e-04, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(7.6e-03, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("mlp@1", "fp16"): (
        Spread(5.4e-03, "GPU fp16 unmeasured: this model's bf16 H200 figure"),
        Spread(5.8e-04, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("resnet18@1", "fp32"): (
        Spread(3.6e-04, f"{_H200_RUN}: vs float64 CPU"),
        Spread(1.7e-04, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(3.0e-07, f"{_CPU}: vs float64 CPU"),
        Spread(4.1e-07, f"{_CPU}: batch 1 vs 4"),
    ),
    ("resnet18@1", "bf16"): (
        Spread(4.5e-03, f"{_H200_RUN}: vs float64 CPU"),
        Spread(6.0e-03, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(4.3e-03, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("resnet18@1", "fp16"): (
        Spread(6.0e-03, "GPU fp16 unmeasured: this model's bf16 H200 figure"),
        Spread(5.1e-04, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("resnet50@1", "fp32"): (
        Spread(2.5e-04, f"{_H200_RUN}: vs float64 CPU"),
        Spread(1.4e-04, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(5.0e-04, f"{_H200} vs float64 CPU (TF32 convs)"),
        Spread(1.9e-04, f"{_H200} batch 1 vs 64, deterministic flags"),
        Spread(4.1e-07, f"{_CPU}: vs float64 CPU"),
        Spread(5.1e-07, f"{_CPU}: batch 1 vs 4"),
    ),
    ("resnet50@1", "bf16"): (
        Spread(5.2e-03, f"{_H200_RUN}: vs float64 CPU"),
        Spread(4.2e-03, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(5.2e-03, f"{_H200} vs float64 CPU"),
        Spread(3.6e-03, f"{_H200} batch 1 vs 64"),
        Spread(4.1e-03, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("resnet50@1", "fp16"): (
        Spread(5.2e-03, "GPU fp16 unmeasured: this model's bf16 H200 figure"),
        Spread(4.5e-04, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("vit@1", "fp32"): (
        Spread(1.9e-06, f"{_H200_RUN}: vs float64 CPU"),
        Spread(1.3e-04, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(6.3e-07, f"{_CPU}: vs float64 CPU"),
        Spread(3.5e-07, f"{_CPU}: batch 1 vs 4"),
    ),
    ("vit@1", "bf16"): (
        Spread(1.1e-02, f"{_H200_RUN}: vs float64 CPU"),
        Spread(7.4e-03, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(9.5e-03, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("vit@1", "fp16"): (
        Spread(1.1e-02, "GPU fp16 unmeasured: this model's bf16 H200 figure"),
        Spread(1.1e-03, f"{_CPU}: vs float64 CPU"),
        Spread(1.0e-03, f"{_CPU}: batch 1 vs 4"),
    ),
    ("bert@1", "fp32"): (
        Spread(6.0e-07, f"{_H200_RUN}: vs float64 CPU"),
        Spread(5.6e-07, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(2.6e-07, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("bert@1", "bf16"): (
        Spread(2.3e-02, f"{_H200_RUN}: vs float64 CPU"),
        Spread(1.2e-02, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(2.3e-02, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("bert@1", "fp16"): (
        Spread(2.3e-02, "GPU fp16 unmeasured: this model's bf16 H200 figure"),
        Spread(2.0e-03, f"{_CPU}: vs float64 CPU"),
        Spread(1.1e-03, f"{_CPU}: batch 1 vs 4"),
    ),
    ("gpt2@1", "fp32"): (
        Spread(1.4e-06, f"{_H200_RUN}: vs float64 CPU"),
        Spread(1.3e-06, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(1.4e-06, f"{_H200} batch 1 vs 64"),
        Spread(1.3e-06, f"{_H200} vs float64 CPU"),
        Spread(4.6e-07, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("gpt2@1", "bf16"): (
        Spread(9.6e-03, f"{_H200_RUN}: vs float64 CPU"),
        Spread(7.7e-03, f"{_H200_RUN}: batch 1 vs 64"),
        Spread(1.2e-02, f"{_H200} vs float64 CPU"),
        Spread(1.1e-02, f"{_H200} batch 1 vs 64"),
        Spread(9.4e-03, f"{_CPU}: vs float64 CPU"),
        Spread(0.0e00, f"{_CPU}: batch 1 vs 4"),
    ),
    ("gpt2@1", "fp16"): (
        Spread(9.6e-03, "GPU fp16 unmeasured: this model's bf16 H200 figure"),
        Spread(1.2e-03, f"{_CPU}: vs float64 CPU"),
        Spread(8.1e-04, f"{_CPU}: batch 1 vs 4"),
    ),
}

#: The bound per (model, dtype), derived from :data:`SPREADS`.
BOUNDS: Final[Mapping[tuple[str, str], float]] = {
    key: derive_bound(max(s.value for s in spreads)) for key, spreads in SPREADS.items()
}


def bound(arch: str, dtype: str) -> float:
    """The bound for ``arch`` in ``dtype`` (``fp32``/``bf16``/``fp16``); KeyError if none."""
    return BOUNDS[(arch, dtype)]
