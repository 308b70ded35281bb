"""The runtime descriptor: the string an attestation hashes into ``runtimeId``.

Format (ASCII, one space between fields, fixed order, at most 200 characters)::

    gpunet-rt/1 torch=<version> device=<device class> catalog=<catalog version>
    det=<exact|gpu-deterministic|tolerance> threads=<intra-op threads> fmt=<format>

for example ``gpunet-rt/1 torch=2.13.0+cpu device=cpu-avx512 catalog=v1-0123456789abcdef
det=exact threads=2 fmt=catalog-v1``. Two results with equal descriptors were produced
by the same program on the same class of device under the same numerical settings, so
for ``exact`` and ``gpu-deterministic`` a verifier compares them bit for bit. The sandbox
tier is deliberately *not* part of it (it changes isolation, not numerics).
"""

from __future__ import annotations

import re
from typing import Final

VERSION: Final = "gpunet-rt/1"
DETERMINISM_NAMES: Final = ("exact", "gpu-deterministic", "tolerance")
_FIELD: Final = re.compile(r"^[A-Za-z0-9._+:-]{1,64}$")


def describe(
    *, torch_version: str, device_class: str, catalog: str, determinism: int, threads: int, fmt: str
) -> str:
    """Build the descriptor; every field must match ``[A-Za-z0-9._+:-]{1,64}``."""
    det = DETERMINISM_NAMES[determinism]
    fields = {
        "torch": torch_version,
        "device": device_class,
        "catalog": catalog,
        "det": det,
        "threads": str(threads),
        "fmt": fmt,
    }
    for key, value in fields.items():
        if not _FIELD.match(value):
            raise ValueError(f"descriptor field {key}={value!r} is not allowed")
    text = " ".join([VERSION, *(f"{k}={v}" for k, v in fields.items())])
    if len(text) > 200:
        raise ValueError("descriptor longer than 200 characters")
    return text


def parse(text: str) -> dict[str, str]:
    """Inverse of :func:`describe` (raises ``ValueError`` on anything else)."""
    head, *rest = text.split(" ")
    if head != VERSION:
        raise ValueError("not a gpunet runtime descriptor")
    out = dict(item.split("=", 1) for item in rest)
    if list(out) != ["torch", "device", "catalog", "det", "threads", "fmt"]:
        raise ValueError("descriptor fields out of order")
    return out
