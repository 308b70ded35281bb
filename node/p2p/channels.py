"""Kept-open streams: one per (peer, protocol), reused exchange after exchange.

Opening a py-libp2p stream first negotiates its protocol (multistream-select, a
round trip): on this machine that was 2.3 ms of a 3.7 ms request/answer
exchange, against 1.1 ms for the same exchange on a stream already open
(``docs/benchmarks.md``). A job costs three exchanges (request, notice,
result), so the job protocols keep their streams open between exchanges.

Rules, for protocols whose server answers frames in order and ends a stream
after :data:`node.p2p.jobs.MAX_EXCHANGES_PER_STREAM` frames or after
``read_timeout`` of silence (``node/p2p/jobs.py``):

* one batch of frames at a time per channel (a lock); its answers are read
  before the next batch is written;
* a stream carries at most ``max_frames`` frames, and one idle for longer than
  ``max_idle_s`` (below the server's read timeout) is closed and replaced
  before use, so the server never ends a stream the client is about to use;
* if a reused stream fails before any answer was read, the batch is sent once
  more on a fresh stream (every message on these protocols is safe to
  repeat: a repeated request is a second accept that expires unused, a
  repeated notice or result is recognised);
* a stream that failed, timed out or was cancelled mid-exchange is reset and
  dropped (its answers would arrive out of step).
"""

from __future__ import annotations

import logging
import time

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID

from node.p2p.framing import FrameError, FrameReader, StreamBroken, write_frames

__all__ = ["ChannelError", "StreamChannels", "close_quietly", "reset_quietly"]

log = logging.getLogger(__name__)


class ChannelError(Exception):
    """No stream could be opened, or one failed mid-exchange; ``answers`` holds the
    answers read before the failure (in order)."""

    def __init__(self, message: str, answers: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.answers = answers or []


class _Channel:
    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.stream: INetStream | None = None
        self.reader: FrameReader | None = None
        self.frames = 0  # sent on the current stream
        self.last_used = 0.0


class StreamChannels:
    """The kept-open streams of one host (see the module docstring)."""

    def __init__(
        self, host: IHost, *, max_frames: int, max_idle_s: float, max_channels: int = 1024
    ) -> None:
        self.host = host
        self.max_frames = max_frames
        self.max_idle_s = max_idle_s
        self.max_channels = max_channels
        self._channels: dict[tuple[str, str], _Channel] = {}
        self.opened = 0  # streams opened so far (for tests and metrics)

    async def exchange(
        self,
        peer: str,
        protocol: TProtocol,
        payloads: list[bytes],
        *,
        answers: bool,
        max_bytes: int,
        time_limit: float,
    ) -> list[bytes]:
        """Write ``payloads`` as frames on the channel's stream; with ``answers``, read
        one answer frame per payload and return them in order. Raises
        :class:`ChannelError` (with the answers read so far) or ``trio.TooSlowError``."""
        if not 0 < len(payloads) <= self.max_frames:
            raise ValueError(f"1 to {self.max_frames} frames per exchange")
        channel = self._channel(peer, protocol)
        async with channel.lock:
            reused = await self._ready(channel, peer, protocol, len(payloads))
            try:
                return await self._once(channel, payloads, answers, max_bytes, time_limit)
            except ChannelError as exc:
                if not (reused and not exc.answers):
                    raise
                log.debug("kept-open stream to %s failed (%s); once more on a fresh one", peer, exc)
            await self._ready(channel, peer, protocol, len(payloads), fresh=True)
            return await self._once(channel, payloads, answers, max_bytes, time_limit)

    async def close_all(self) -> None:
        """Close every kept-open stream (the next exchange opens a fresh one)."""
        for channel in list(self._channels.values()):
            async with channel.lock:
                if channel.stream is not None:
                    stream = channel.stream
                    _drop(channel)
                    await close_quietly(stream)

    def _channel(self, peer: str, protocol: TProtocol) -> _Channel:
        key = (peer, str(protocol))
        channel = self._channels.get(key)
        if channel is None:
            if len(self._channels) >= self.max_channels:  # forget the idle ones
                for k in [k for k, c in self._channels.items() if not c.lock.locked()]:
                    stale = self._channels.pop(k)
                    if stale.stream is not None:
                        _drop(stale)
            channel = self._channels[key] = _Channel()
        return channel

    async def _ready(
        self, channel: _Channel, peer: str, protocol: TProtocol, n: int, *, fresh: bool = False
    ) -> bool:
        """Make sure the channel has a usable stream; True if it is one used before."""
        now = time.monotonic()
        if channel.stream is not None and (
            fresh
            or channel.frames + n > self.max_frames
            or now - channel.last_used > self.max_idle_s
        ):
            stream = channel.stream
            _drop(channel)
            await close_quietly(stream)
        if channel.stream is not None:
            return True
        try:
            stream = await self.host.new_stream(ID.from_base58(peer), [protocol])
        except (BaseLibp2pError, OSError) as exc:
            raise ChannelError(f"cannot open a stream to {peer}: {exc!r}") from None
        self.opened += 1
        channel.stream, channel.reader, channel.frames = stream, FrameReader(stream), 0
        channel.last_used = now
        return False

    async def _once(
        self,
        channel: _Channel,
        payloads: list[bytes],
        answers: bool,
        max_bytes: int,
        time_limit: float,
    ) -> list[bytes]:
        assert channel.stream is not None and channel.reader is not None
        stream, reader = channel.stream, channel.reader
        got: list[bytes] = []
        done = False
        try:
            await write_frames(stream, payloads, time_limit=time_limit)
            channel.frames += len(payloads)
            if answers:
                for _ in payloads:
                    data = await reader.next(max_bytes=max_bytes, time_limit=time_limit)
                    if data is None:  # not with eof_ok=False; kept for the type checker
                        raise StreamBroken("stream ended")
                    got.append(data)
            done = True
        except FrameError as exc:
            raise ChannelError(str(exc), got) from None
        finally:
            if done:
                channel.last_used = time.monotonic()
            else:  # failed, timed out or cancelled mid-exchange: never reuse it
                _drop(channel)
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await reset_quietly(stream)
        return got


def _drop(channel: _Channel) -> None:
    channel.stream, channel.reader, channel.frames = None, None, 0


async def close_quietly(stream: INetStream) -> None:
    """Close ``stream``, ignoring a stream that is already gone."""
    try:
        await stream.close()
    except (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("close of an already broken stream")


async def reset_quietly(stream: INetStream) -> None:
    """Reset ``stream``, ignoring a stream that is already gone."""
    try:
        await stream.reset()
    except (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("reset of an already broken stream")
