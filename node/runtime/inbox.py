"""A lease worker's inbox: one shared-memory region its jobs' inputs are written into.

In lease mode (the GPU path) the supervisor used to write each job's inputs into a
fresh file in the job's scratch dir, and the worker mapped it and copied it to the
device. For ResNet-50 batch 64 in bf16 (19 MB of inputs) that write, the mapped
copy's page faults and the file's deletion added ~6.8 ms to a ~15 ms job on an H200.

Instead the supervisor creates one ``memfd`` per lease worker, sized once and sealed
against shrinking and growing (so nothing the worker does can make a supervisor
write fault), maps it and copies each job's inputs to its start; the worker gets the
descriptor at spawn, maps it once, and builds the input tensors as views of the
mapping (:mod:`node.runtime.stview`). On a GPU the worker registers the used prefix
with ``cudaHostRegister`` (page-locked, so the copy to the device is one DMA);
where that is refused it copies from the mapping as pageable memory.

What the worker can do with the region: read and write it, and punch holes in it.
The supervisor never reads it, and lease jobs of one slot run one at a time (the
supervisor writes the next job's inputs only after the previous report), so a
worker can only ever corrupt its own job's inputs. Inputs over the capacity still
travel as a file. The region's pages stay resident up to the largest input it
carried, for the worker's life (at most ``PoolConfig.inbox_bytes``).
"""

from __future__ import annotations

import fcntl
import mmap
import os
from typing import Any, Final

#: Registration grows in steps of this many bytes (each step re-registers the prefix).
PIN_STEP: Final = 32 << 20


class Inbox:
    """The supervisor's side: a sealed memfd of ``capacity`` bytes, mapped writable."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("inbox capacity must be positive")
        self.capacity = capacity
        self.fd = os.memfd_create("gpunet-inbox", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, capacity)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, seals)
            self._map: mmap.mmap | None = mmap.mmap(self.fd, capacity)
        except BaseException:
            os.close(self.fd)
            raise

    def fits(self, size: int) -> bool:
        return size <= self.capacity

    def put(self, data: bytes) -> int:
        """Copy ``data`` to the start of the region; returns its length."""
        if self._map is None:
            raise ValueError("inbox closed")
        n = len(data)
        if n > self.capacity:
            raise ValueError(f"{n} bytes do not fit an inbox of {self.capacity}")
        self._map[:n] = data
        return n

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
            os.close(self.fd)


class InboxView:
    """The worker's side: the region mapped once, as a uint8 tensor.

    ``pin(n)`` page-locks (``cudaHostRegister``) a prefix of at least ``n`` bytes
    for copies to a CUDA device; it returns False (and stops trying) if the driver
    refuses, and the caller copies from pageable memory instead.
    """

    def __init__(self, fd: int, torch: Any) -> None:
        size = os.fstat(fd).st_size
        self._map = mmap.mmap(fd, size)
        os.close(fd)
        self.torch = torch
        self.buf = torch.frombuffer(self._map, dtype=torch.uint8)
        self.capacity = size
        self.pinned = 0  # bytes of the prefix registered
        self.pin_error: int | None = None  # the cudaError that made pinning stop

    def data(self, n: int) -> bytes:
        """A copy of the first ``n`` bytes (CPU jobs: the exact tier parses bytes)."""
        if not 0 <= n <= self.capacity:
            raise ValueError(f"inbox holds at most {self.capacity} bytes")
        return self._map[:n]

    def pin(self, n: int, device: str) -> bool:
        if n <= self.pinned:
            return True
        if self.pin_error is not None:
            return False
        cudart = self.torch.cuda.cudart()
        ptr = self.buf.data_ptr()
        want = min(self.capacity, -(-n // PIN_STEP) * PIN_STEP)
        err = 0
        if self.pinned:
            err = int(cudart.cudaHostUnregister(ptr))
            self.pinned = 0
        if err == 0:
            err = int(cudart.cudaHostRegister(ptr, want, 1))  # cudaHostRegisterPortable
        if err != 0:
            self.pin_error = err
            self._drain(device)
            return False
        self.pinned = want
        return True

    def _drain(self, device: str) -> None:
        """Consume the failed call's error: the CUDA runtime keeps it for the next
        ``cudaGetLastError``, which torch calls after every kernel launch (the job's
        first kernel would fail with it). A kernel launched here takes it instead."""
        for _ in range(2):
            try:
                self.torch.ones(1, device=device).add_(1)
                self.torch.cuda.synchronize(device)
                return
            except RuntimeError:
                continue
