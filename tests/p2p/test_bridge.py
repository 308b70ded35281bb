"""The asyncio <-> trio bridge: results, errors, cancellation, crashes, shutdown."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import trio
import trio.lowlevel

from node.p2p.bridge import BridgeClosed, BridgeCrashed, TrioBridge

pytestmark = pytest.mark.timeout(30)


class Svc:
    """A trio service recording what happened on the trio side."""

    def __init__(self, crash_after: float | None = None) -> None:
        self.crash_after = crash_after
        self.cancelled: list[str] = []
        self.finished: list[str] = []

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(self)
        if self.crash_after is not None:
            await trio.sleep(self.crash_after)
            raise RuntimeError("boom inside trio")
        await trio.sleep_forever()

    async def add(self, a: int, b: int) -> int:
        await trio.lowlevel.checkpoint()
        assert trio.lowlevel.current_trio_token() is not None  # really on trio
        return a + b

    async def fail(self) -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError("trio says no")

    async def slow(self, name: str) -> str:
        try:
            await trio.sleep(60)
        except trio.Cancelled:
            self.cancelled.append(name)
            raise
        finally:
            self.finished.append(name)
        return name


def bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("test-bridge")]


async def started() -> tuple[TrioBridge[Svc], Svc]:
    bridge: TrioBridge[Svc] = TrioBridge(name="test-bridge")
    svc = Svc()
    got = await bridge.start(svc.run)
    assert got is svc
    return bridge, svc


def test_call_result_and_exception() -> None:
    async def main() -> None:
        bridge, svc = await started()
        assert await bridge.call(svc.add, 2, 3) == 5
        results = await asyncio.gather(*(bridge.call(svc.add, i, i) for i in range(100)))
        assert results == [2 * i for i in range(100)]
        with pytest.raises(ValueError, match="trio says no"):
            await bridge.call(svc.fail)
        assert bridge.running
        await bridge.stop()
        assert not bridge.running

    asyncio.run(main())
    assert bridge_threads() == []


def test_asyncio_cancellation_cancels_the_trio_task() -> None:
    async def main() -> None:
        bridge, svc = await started()
        task = asyncio.ensure_future(bridge.call(svc.slow, "a"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the trio task was cancelled *and finished* before the asyncio side returned
        assert svc.cancelled == ["a"] and svc.finished == ["a"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bridge.call(svc.slow, "b"), 0.1)
        assert "b" in svc.cancelled
        assert await bridge.call(svc.add, 1, 1) == 2  # still healthy
        await bridge.stop()

    asyncio.run(main())
    assert bridge_threads() == []


def test_stop_fails_pending_calls_and_later_calls() -> None:
    async def main() -> None:
        bridge, svc = await started()
        pending = asyncio.ensure_future(bridge.call(svc.slow, "p"))
        await asyncio.sleep(0.1)
        await bridge.stop()
        with pytest.raises(BridgeClosed):
            await pending
        assert svc.cancelled == ["p"]
        with pytest.raises(BridgeClosed):
            await bridge.call(svc.add, 1, 2)
        await bridge.stop()  # idempotent
        assert bridge.done.done() and bridge.done.exception() is None

    asyncio.run(main())
    assert bridge_threads() == []


def test_trio_crash_surfaces_as_an_error() -> None:
    async def main() -> None:
        bridge: TrioBridge[Svc] = TrioBridge(name="test-bridge")
        svc = Svc(crash_after=0.3)
        await bridge.start(svc.run)
        pending = asyncio.ensure_future(bridge.call(svc.slow, "x"))
        with pytest.raises(BaseException) as info:
            await asyncio.wait_for(asyncio.shield(bridge.done), 5)
        assert "boom inside trio" in repr(info.value)
        with pytest.raises(BridgeCrashed):
            await pending
        with pytest.raises(BridgeCrashed):
            await bridge.call(svc.add, 1, 2)
        await bridge.stop()

    asyncio.run(main())
    assert bridge_threads() == []


def test_service_failing_before_started() -> None:
    async def broken(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        raise OSError("cannot listen")

    async def main() -> None:
        bridge: TrioBridge[None] = TrioBridge(name="test-bridge")
        with pytest.raises(BridgeCrashed, match="cannot listen"):
            await bridge.start(broken)
        with pytest.raises(BridgeClosed):
            await bridge.call(broken)

    asyncio.run(main())
    assert bridge_threads() == []


def test_trio_calls_back_into_asyncio() -> None:
    async def main() -> None:
        bridge, _ = await started()
        loop = asyncio.get_running_loop()

        async def on_asyncio(x: int) -> tuple[int, bool]:
            await asyncio.sleep(0)
            return x * 10, asyncio.get_running_loop() is loop

        async def from_trio() -> tuple[int, bool]:
            return await bridge.call_asyncio(on_asyncio, 4)

        assert await bridge.call(from_trio) == (40, True)

        async def failing() -> None:
            raise KeyError("asyncio side")

        async def from_trio_fail() -> None:
            await bridge.call_asyncio(failing)

        with pytest.raises(KeyError):
            await bridge.call(from_trio_fail)

        seen: list[int] = []
        event = asyncio.Event()

        async def emit() -> bool:
            return bridge.emit(lambda v: (seen.append(v), event.set()), 7)

        assert await bridge.call(emit)
        await asyncio.wait_for(event.wait(), 5)
        assert seen == [7]
        await bridge.stop()

    asyncio.run(main())
    assert bridge_threads() == []
