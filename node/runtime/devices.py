"""Device inventory (torch, plus NVML through ctypes when the driver library exists).

``device_class`` names what a verifier must match for the ``exact`` and
``gpu-deterministic`` tiers: ``cpu-<isa>`` on CPUs (the SIMD level torch dispatches
to changes float results), ``nvidia-<model>`` on GPUs (e.g. ``nvidia-h200``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
from typing import Any


@dataclasses.dataclass(frozen=True)
class Device:
    """One compute device."""

    kind: str  # "cpu" | "cuda"
    index: int
    name: str
    memory_bytes: int
    compute_capability: str = ""  # "9.0" on an H200
    cores: int = 0

    @property
    def device_class(self) -> str:
        """Stable class name for runtime ids (see module docstring)."""
        if self.kind == "cpu":
            return "cpu-" + cpu_isa()
        base = re.sub(r"[^a-z0-9.]+", "-", self.name.lower()).strip("-")
        base = base.removeprefix("nvidia-")
        return "nvidia-" + re.sub(r"-?(nvl|sxm\d*|pcie|\d+gb)(-|$)", r"\2", base).strip("-")


@dataclasses.dataclass(frozen=True)
class Inventory:
    """What this host offers."""

    devices: tuple[Device, ...]
    driver: str = ""
    cuda: str = ""
    torch: str = ""

    @property
    def gpus(self) -> tuple[Device, ...]:
        """The CUDA devices."""
        return tuple(d for d in self.devices if d.kind == "cuda")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "driver": self.driver,
            "cuda": self.cuda,
            "torch": self.torch,
            "devices": [
                {**dataclasses.asdict(d), "device_class": d.device_class} for d in self.devices
            ],
        }


def cpu_isa() -> str:
    """The SIMD level torch dispatches CPU kernels to (``avx512``, ``avx2``, ``default``)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability()).lower()


def _cpu() -> Device:
    name = "cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Device("cpu", 0, name, mem, cores=len(os.sched_getaffinity(0)))


def nvml_driver() -> str:
    """The NVIDIA driver version via NVML (empty if there is no driver library)."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return ""
    if nvml.nvmlInit_v2() != 0:
        return ""
    buf = ctypes.create_string_buffer(96)
    try:
        ok = nvml.nvmlSystemGetDriverVersion(buf, ctypes.c_uint(96)) == 0
        return buf.value.decode() if ok else ""
    finally:
        nvml.nvmlShutdown()


def inventory() -> Inventory:
    """CPU plus every CUDA device torch sees (this initialises CUDA in the caller)."""
    import torch

    devices = [_cpu()]
    cuda = ""
    if torch.cuda.is_available():
        cuda = str(torch.version.cuda or "")
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devices.append(
                Device("cuda", i, p.name, int(p.total_memory), f"{p.major}.{p.minor}", 0)
            )
    return Inventory(tuple(devices), nvml_driver(), cuda, torch.__version__)
