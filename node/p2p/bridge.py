"""asyncio <-> trio bridge: libp2p lives in one trio thread, asyncio talks to it here.

py-libp2p runs on trio only; the node's HTTP API and the SDK are asyncio. The
bridge runs ``trio.run`` in a dedicated (non-daemon) thread and offers:

* :meth:`TrioBridge.start` — start the thread, run a *service* coroutine
  (``async def service(task_status)``) inside the trio root nursery and return
  the value it hands to ``task_status.started(...)`` (the node object).
* :meth:`TrioBridge.call` — run ``await afn(*args)`` in trio and await its
  result in asyncio. Exceptions cross unchanged; cancelling the awaiting asyncio
  task cancels the trio task (and waits until it has finished); a call still
  pending when the bridge stops or crashes raises :class:`BridgeClosed`.
* :meth:`TrioBridge.emit` — from trio, schedule a plain callback on the asyncio
  loop (``call_soon_threadsafe``): how events travel back.
* :attr:`TrioBridge.done` — an asyncio future resolved when the trio side
  ends; if the service or any call task crashed it holds the exception, so a
  supervisor can stop serving a dead node instead of hanging.
* :meth:`TrioBridge.stop` — cancel everything in trio, wait for the thread to
  exit. Idempotent.

Never touch trio/libp2p objects from asyncio except through :meth:`call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import trio

__all__ = ["BridgeClosed", "BridgeCrashed", "TrioBridge"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BridgeClosed(RuntimeError):
    """The trio side is not running (never started, stopped, or crashed)."""


class BridgeCrashed(BridgeClosed):
    """The trio side ended with an exception; ``__cause__`` holds it."""


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class TrioBridge(Generic[T]):
    """Owns one trio thread; see the module docstring."""

    def __init__(self, name: str = "gpunet-trio") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._calls: trio.Nursery | None = None
        self._stop_event: trio.Event | None = None
        self._done: asyncio.Future[None] | None = None
        self._closed = False
        self._crash: BaseException | None = None

    # ------------------------------------------------------------ lifecycle
    @property
    def done(self) -> asyncio.Future[None]:
        """Resolved when the trio side has ended (with its exception if it crashed)."""
        if self._done is None:
            raise BridgeClosed("bridge was never started")
        return self._done

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and the end of the trio side."""
        return self._done is not None and not self._done.done() and not self._closed

    async def start(
        self, service: Callable[..., Awaitable[None]], *, time_limit: float = 30.0
    ) -> T:
        """Start the trio thread and return what ``service`` passes to ``task_status.started``."""
        if self._thread is not None:
            raise RuntimeError("a TrioBridge is started once")
        loop = asyncio.get_running_loop()
        self._loop = loop
        started: asyncio.Future[T] = loop.create_future()
        self._done = loop.create_future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(service, started), name=self._name, daemon=False
        )
        self._thread.start()
        try:
            async with asyncio.timeout(time_limit):  # (wait_for drops cancels on 3.11)
                return await asyncio.shield(started)
        except BaseException:
            await self.stop()
            raise

    def _thread_main(
        self, service: Callable[..., Awaitable[None]], started: asyncio.Future[T]
    ) -> None:
        loop = self._loop
        assert loop is not None and self._done is not None
        done = self._done
        error: BaseException | None = None
        try:
            trio.run(self._trio_main, service, started)
        except BaseException as exc:
            error = exc
            log.error("trio side crashed: %r", exc, exc_info=exc)
        self._crash = error
        self._closed = True

        def finish() -> None:
            if error is not None:
                _set_exception(started, BridgeCrashed(f"trio side crashed: {error!r}"))
                _set_exception(done, error)
                # a crash nobody awaits must not log "exception never retrieved" noise twice
                done.exception()
            else:
                _set_exception(started, BridgeClosed("trio side ended before starting"))
                _set_result(done, None)

        with contextlib.suppress(RuntimeError):  # loop already closed: nothing to tell
            loop.call_soon_threadsafe(finish)

    async def _trio_main(
        self, service: Callable[..., Awaitable[None]], started: asyncio.Future[T]
    ) -> None:
        loop = self._loop
        assert loop is not None
        self._token = trio.lowlevel.current_trio_token()
        self._stop_event = trio.Event()
        async with trio.open_nursery() as root:
            async with trio.open_nursery() as calls:
                self._calls = calls
                value = await root.start(service)
                loop.call_soon_threadsafe(_set_result, started, value)
                await self._stop_event.wait()
                calls.cancel_scope.cancel()
            self._calls = None
            root.cancel_scope.cancel()

    async def stop(self) -> None:
        """Cancel the trio side and wait for its thread to exit (idempotent)."""
        thread = self._thread
        if thread is None:
            return
        token, stop_event = self._token, self._stop_event
        if token is not None and stop_event is not None and not self._closed:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop_event.set)
        if self._done is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._done)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        self._closed = True

    # ------------------------------------------------------------ calls
    async def call(self, afn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """Run ``await afn(*args)`` in trio; see the module docstring for semantics."""
        loop = asyncio.get_running_loop()
        token, calls = self._token, self._calls
        if self._closed or token is None or calls is None:
            raise self._closed_error()
        fut: asyncio.Future[R] = loop.create_future()
        finished = asyncio.Event()
        scope_box: list[trio.CancelScope] = []

        async def runner() -> None:
            scope = trio.CancelScope()
            scope_box.append(scope)
            try:
                with scope:
                    result = await afn(*args)
                    loop.call_soon_threadsafe(_set_result, fut, result)
                # cancelled by the asyncio caller (its future is already cancelled) or by
                # shutdown (the caller sees ``done`` resolve and raises BridgeClosed/Crashed)
            except trio.Cancelled:
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the asyncio caller
                loop.call_soon_threadsafe(_set_exception, fut, exc)
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(finished.set)

        def schedule() -> None:
            nursery = self._calls
            if nursery is None:
                loop.call_soon_threadsafe(_set_exception, fut, self._closed_error())
                loop.call_soon_threadsafe(finished.set)
                return
            try:
                nursery.start_soon(runner)
            except RuntimeError:  # nursery closed by a concurrent shutdown
                loop.call_soon_threadsafe(_set_exception, fut, self._closed_error())
                loop.call_soon_threadsafe(finished.set)

        try:
            token.run_sync_soon(schedule)
        except trio.RunFinishedError:
            raise self._closed_error() from None
        try:
            return await self._await_or_closed(fut)
        except asyncio.CancelledError:
            fut.cancel()  # later results/errors from trio are dropped, not left unretrieved

            # cancel the trio task and wait for it to finish, so no work leaks
            def cancel() -> None:
                if scope_box:
                    scope_box[0].cancel()

            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(cancel)
            if not self._closed:
                await asyncio.shield(self._wait_finished(finished))
            raise

    async def _wait_finished(self, finished: asyncio.Event) -> None:
        assert self._done is not None
        waiter = asyncio.ensure_future(finished.wait())
        try:
            pending: set[asyncio.Future[Any]] = {waiter, self._done}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter

    async def _await_or_closed(self, fut: asyncio.Future[R]) -> R:
        assert self._done is not None
        if not self._done.done():
            pending: set[asyncio.Future[Any]] = {fut, self._done}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if fut.done():
            return fut.result()
        fut.cancel()
        raise self._closed_error()

    def _closed_error(self) -> BridgeClosed:
        if self._crash is not None:
            err = BridgeCrashed(f"trio side crashed: {self._crash!r}")
            err.__cause__ = self._crash
            return err
        return BridgeClosed("the trio side is not running")

    # ------------------------------------------------------------ asyncio from trio
    async def call_asyncio(self, afn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """From trio: run ``await afn(*args)`` on the asyncio loop and wait for it.

        Cancelling the trio caller cancels the asyncio task. Raises
        :class:`BridgeClosed` if the asyncio loop is gone.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            raise BridgeClosed("the asyncio loop is gone")
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        async def wrapper() -> R:
            return await afn(*args)

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        try:
            cfut = asyncio.run_coroutine_threadsafe(wrapper(), loop)
        except RuntimeError:
            raise BridgeClosed("the asyncio loop is gone") from None
        cfut.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            cfut.cancel()
            raise
        if cfut.cancelled():
            raise BridgeClosed("the asyncio side cancelled the call")
        return cfut.result()

    # ------------------------------------------------------------ events back
    def emit(self, callback: Callable[..., object], *args: Any) -> bool:
        """From trio: run ``callback(*args)`` on the asyncio loop; False if it is gone."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True
