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
    "FrameReader",
    "FrameTimeout",
    "FrameTooLarge",
    "StreamBroken",
    "encode_uvarint",
    "read_frame",
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


#: Bytes asked of the muxer per read by a :class:`FrameReader`.
_CHUNK = 1 << 16


class FrameReader:
    """Frames from one stream, read in chunks: one muxer read per arrival of data
    instead of one per varint byte and one per payload (each py-libp2p read takes
    two locks and may send a window update). Used where a stream carries several
    frames; owns the stream's reading side (never mix with :func:`read_frame`).
    The buffer holds at most one frame's cap plus one chunk: a length over the cap
    fails before its payload is awaited."""

    def __init__(self, stream: INetStream) -> None:
        self.stream = stream
        self._buf = bytearray()

    def _parse(self, max_bytes: int) -> bytes | None:
        length = 0
        for i, byte in enumerate(self._buf[:_MAX_VARINT_BYTES]):
            length |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if length > max_bytes:
                    raise FrameTooLarge(f"frame of {length} bytes exceeds the cap of {max_bytes}")
                if len(self._buf) < i + 1 + length:
                    return None
                frame = bytes(self._buf[i + 1 : i + 1 + length])
                del self._buf[: i + 1 + length]
                return frame
        if len(self._buf) >= _MAX_VARINT_BYTES:
            raise FrameTooLarge("length prefix is not a valid varint")
        return None

    def ready(self, max_bytes: int, limit: int) -> list[bytes]:
        """The whole frames already buffered (at most ``limit``), without reading."""
        out: list[bytes] = []
        while len(out) < limit:
            frame = self._parse(max_bytes)
            if frame is None:
                break
            out.append(frame)
        return out

    async def next(
        self, *, max_bytes: int, time_limit: float, eof_ok: bool = False, idle_ok: bool = False
    ) -> bytes | None:
        """The next frame; with ``eof_ok``, ``None`` when the stream ends cleanly
        between frames (:class:`StreamBroken` if it ends inside one); with
        ``idle_ok``, ``None`` too when nothing at all arrived within ``time_limit``."""
        with trio.move_on_after(time_limit) as scope:
            while True:
                frame = self._parse(max_bytes)
                if frame is not None:
                    return frame
                try:
                    chunk = await self.stream.read(_CHUNK)
                except (BaseLibp2pError, EOFError) as exc:
                    if eof_ok and not self._buf:
                        return None
                    raise StreamBroken(f"stream failed mid-frame: {exc!r}") from None
                if not chunk:
                    if eof_ok and not self._buf:
                        return None
                    raise StreamBroken(f"stream ended {len(self._buf)} bytes into a frame")
                self._buf += chunk
        assert scope.cancelled_caught
        if idle_ok and not self._buf:
            return None
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
