"""Length-prefixed frames on libp2p streams: unsigned-varint length, capped, timed.

The standard libp2p framing (as in identify, kad and request/response
protocols): ``uvarint(len) || payload``. The length is checked against the cap
*before* the payload is read, and every read runs under a deadline.
"""

from __future__ import annotations

import trio
from libp2p.abc import INetStream
from libp2p.exceptions import BaseLibp2pError

__all__ = [
    "FrameError",
    "FrameTimeout",
    "FrameTooLarge",
    "StreamBroken",
    "encode_uvarint",
    "read_frame",
    "write_frame",
]

_MAX_VARINT_BYTES = 9


class FrameError(Exception):
    """A frame could not be read."""


class FrameTooLarge(FrameError):
    """The announced length exceeds the cap (the payload is never read)."""


class FrameTimeout(FrameError):
    """The peer did not send a whole frame in time."""


class StreamBroken(FrameError):
    """The stream ended, was reset, or failed mid-frame."""


def encode_uvarint(value: int) -> bytes:
    """Unsigned LEB128 varint."""
    if value < 0:
        raise ValueError("uvarint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = await stream.read(n - len(buf))
        except (BaseLibp2pError, EOFError) as exc:
            raise StreamBroken(f"stream failed after {len(buf)}/{n} bytes: {exc!r}") from None
        if not chunk:
            raise StreamBroken(f"stream ended after {len(buf)}/{n} bytes")
        buf += chunk
    return bytes(buf)


async def read_frame(stream: INetStream, *, max_bytes: int, time_limit: float) -> bytes:
    """Read one frame of at most ``max_bytes`` within ``time_limit`` seconds."""
    with trio.move_on_after(time_limit) as scope:
        length = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = (await _read_exactly(stream, 1))[0]
            length |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                break
        else:
            raise FrameTooLarge("length prefix is not a valid varint")
        if length > max_bytes:
            raise FrameTooLarge(f"frame of {length} bytes exceeds the cap of {max_bytes}")
        return await _read_exactly(stream, length)
    assert scope.cancelled_caught
    raise FrameTimeout(f"no complete frame within {time_limit} s")


async def write_frame(stream: INetStream, payload: bytes, *, time_limit: float) -> None:
    """Write one frame within ``time_limit`` seconds."""
    with trio.move_on_after(time_limit) as scope:
        try:
            await stream.write(encode_uvarint(len(payload)) + payload)
        except (BaseLibp2pError, EOFError) as exc:
            raise StreamBroken(f"write failed: {exc!r}") from None
        return
    assert scope.cancelled_caught
    raise FrameTimeout(f"could not write a frame within {time_limit} s")
