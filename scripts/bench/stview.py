"""Parsing a job's inputs: ``safetensors.torch.load(bytes)`` against
``stview.tensors_from_buffer`` on a preallocated buffer that already holds the blob.

One bf16 tensor of shape 64x3x224x224 (19 MB, a ResNet batch of 64). The two are timed
interleaved in one process, ``--reps`` times each; prints the medians. Usage:

    .venv/bin/python scripts/bench/stview.py [--reps 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from node.runtime.stview import tensors_from_buffer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(64, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    blob = st_save({"x": x.to(torch.bfloat16)})
    buf = torch.empty(len(blob) + 4096, dtype=torch.uint8)  # the shared region's stand-in
    buf[: len(blob)].copy_(torch.frombuffer(bytearray(blob), dtype=torch.uint8))
    ref = st_load(blob)["x"]
    view = tensors_from_buffer(buf, len(blob), "inputs")["x"]
    assert torch.equal(ref.view(torch.int16), view.view(torch.int16))
    assert view.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()

    times: dict[str, list[float]] = {"safetensors.torch.load": [], "tensors_from_buffer": []}
    for _ in range(args.reps):
        t0 = time.perf_counter()
        st_load(blob)
        t1 = time.perf_counter()
        tensors_from_buffer(buf, len(blob), "inputs")
        t2 = time.perf_counter()
        times["safetensors.torch.load"].append(t1 - t0)
        times["tensors_from_buffer"].append(t2 - t1)
    print(f"blob {len(blob) / 1e6:.1f} MB, {args.reps} reps each, load {os.getloadavg()[0]:.2f}")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, med in medians.items():
        print(f"{name:24} median {med * 1e3:9.3f} ms")
    ratio = medians["safetensors.torch.load"] / medians["tensors_from_buffer"]
    print(f"ratio {ratio:.0f}x")


if __name__ == "__main__":
    main()
