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
    "read_next_frame",
    "write_frame",
    "write_frames",
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
    frame = await _read(stream, max_bytes, time_limit, eof_ok=False)
    assert frame is not None
    return frame


async def read_next_frame(stream: INetStream, *, max_bytes: int, time_limit: float) -> bytes | None:
    """Like :func:`read_frame`, but ``None`` when the stream ends cleanly before a frame
    starts (the other side is done sending; a stream may carry several frames)."""
    return await _read(stream, max_bytes, time_limit, eof_ok=True)


async def _read(
    stream: INetStream, max_bytes: int, time_limit: float, *, eof_ok: bool
) -> bytes | None:
    with trio.move_on_after(time_limit) as scope:
        length = 0
        for i in range(_MAX_VARINT_BYTES):
            if i == 0 and eof_ok:
                try:
                    first = await stream.read(1)
                except (BaseLibp2pError, EOFError):
                    return None
                if not first:
                    return None
                byte = first[0]
            else:
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
    await write_frames(stream, [payload], time_limit=time_limit)


async def write_frames(stream: INetStream, payloads: list[bytes], *, time_limit: float) -> None:
    """Write several frames in one stream write (one muxer frame, one encryption)."""
    data = b"".join(encode_uvarint(len(p)) + p for p in payloads)
    with trio.move_on_after(time_limit) as scope:
        try:
            await stream.write(data)
        except (BaseLibp2pError, EOFError) as exc:
            raise StreamBroken(f"write failed: {exc!r}") from None
        return
    assert scope.cancelled_caught
    raise FrameTimeout(f"could not write {len(payloads)} frame(s) within {time_limit} s")
