"""Length-prefixed JSON frames over pipes between the supervisor and its zygotes.

A frame is a 4-byte big-endian length and a UTF-8 JSON object. Frames are small
(control messages only; tensors travel as files in the job's scratch directory),
and a frame over :data:`MAX_FRAME` is a protocol error. Reads take a deadline.
"""

from __future__ import annotations

import json
import os
import select
import time
from typing import Any, Final

from protocol import boundedjson

MAX_FRAME: Final = 1 << 20


class WireError(EOFError):
    """The peer closed the pipe, sent garbage, or missed the deadline."""


def send(fd: int, obj: dict[str, Any]) -> None:
    """Write one frame (blocking)."""
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise WireError("frame too large")
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Reader:
    """Buffered frame reader with deadlines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()

    def _fill(self, n: int, deadline: float | None) -> None:
        while len(self._buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("deadline passed waiting for the worker")
                ready, _, _ = select.select([self.fd], [], [], left)
                if not ready:
                    continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise WireError("pipe closed")
            self._buf += chunk

    def pending(self) -> bool:
        """Whether bytes past the last frame read are buffered (the peer sent more)."""
        return bool(self._buf)

    def recv(self, deadline: float | None = None) -> dict[str, Any]:
        """Read one frame; ``TimeoutError`` past ``deadline`` (a ``time.monotonic()`` value)."""
        self._fill(4, deadline)
        size = int.from_bytes(self._buf[:4], "big")
        if size > MAX_FRAME:
            raise WireError("frame too large")
        self._fill(4 + size, deadline)
        data = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        try:
            obj = boundedjson.loads(data)
        except ValueError:
            raise WireError("bad frame") from None
        if not isinstance(obj, dict):
            raise WireError("bad frame")
        return obj
