"""New logs of one contract pushed by the chain node (``eth_subscribe("logs")`` over a
websocket): a fast path next to the polling :mod:`~node.chain.follower`.

A provider learns that a client matched its offer the moment the ``createJob``
is mined, instead of at its follower's next poll or the client's notice plus a
receipt look-up. The follower stays the authority: it sees every log, across
reorgs and reconnects; a log pushed here is only acted on sooner (its consumer
must tolerate seeing the same event twice). Logs emitted while the socket is
down are not replayed here; the follower finds them.

Every message is untrusted: a frame is at most :data:`MAX_MESSAGE_BYTES`,
must be a JSON-RPC notification for this subscription, and its log is parsed
with :meth:`~node.chain.rpc.Log.parse` (typed, sized) and must come from the
contract; anything else is dropped and counted in :attr:`LogSubscription.dropped`.

``url="auto"`` derives the websocket URL from an ``http(s)`` RPC URL (anvil and
many nodes serve both on one port) and gives up quietly, for good, if that
endpoint does not accept the subscription; an explicit URL is retried with
backoff for as long as the subscription runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from node.chain.errors import RpcError
from node.chain.rpc import Log
from protocol import boundedjson

__all__ = ["MAX_MESSAGE_BYTES", "LogSubscription", "ws_url_for"]

log = logging.getLogger(__name__)

#: Largest websocket frame read (one log notification is well under 4 KiB).
MAX_MESSAGE_BYTES = 1 << 20
_MAX_BACKOFF_S = 30.0


def ws_url_for(rpc_url: str) -> str:
    """The websocket URL on the same host and port as an ``http(s)``/``ws(s)`` RPC URL."""
    parts = urllib.parse.urlsplit(rpc_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError(f"not an RPC URL: {rpc_url!r}")
    return urllib.parse.urlunsplit((scheme, *parts[1:]))


class LogSubscription:
    """Pushes the new logs of ``address`` (those matching ``topics``, in
    ``eth_getLogs`` form, if given) to ``on_log`` while :meth:`run` runs."""

    def __init__(
        self,
        url: str,
        address: bytes,
        on_log: Callable[[Log], Awaitable[None]],
        *,
        topics: list[str | None] | None = None,
        rpc_url: str = "",
        connect_timeout_s: float = 10.0,
    ) -> None:
        if len(address) != 20:
            raise ValueError("contract address must be 20 bytes")
        self.auto = url == "auto"
        self.url = ws_url_for(rpc_url) if self.auto else ws_url_for(url)
        self.address = address
        self.topics = topics  # the eth_subscribe topic filter (None: every log)
        self.on_log = on_log
        self.connect_timeout_s = connect_timeout_s
        #: True while subscribed (pushed logs arrive); False while down or given up
        self.live = False
        self.sessions = 0  # subscriptions made so far
        self.pushed = 0  # logs handed to ``on_log``
        self.dropped = 0  # messages refused (malformed, foreign, oversized)

    async def run(self) -> None:
        """Subscribe and dispatch until cancelled, reconnecting with backoff (in auto mode
        an endpoint that never subscribes ends it: the follower alone remains)."""
        delay = 0.5
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                before = self.sessions
                try:
                    await self._session(session)
                    problem = "closed by the node"
                except (aiohttp.ClientError, RpcError, TimeoutError, OSError) as exc:
                    problem = str(exc) or type(exc).__name__
                finally:
                    self.live = False
                if self.sessions > before:  # it worked for a while: retry soon
                    delay = 0.5
                elif self.auto and not self.sessions:
                    log.info("no log subscription at %s (%s): polling only", self.url, problem)
                    return
                log.warning("log subscription at %s: %s; again in %.1fs", self.url, problem, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _session(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(
            self.url, max_msg_size=MAX_MESSAGE_BYTES, heartbeat=30.0
        ) as ws:
            flt: dict[str, Any] = {"address": "0x" + self.address.hex()}
            if self.topics is not None:
                flt["topics"] = self.topics
            request = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_subscribe",
                "params": ["logs", flt],
            }
            await ws.send_str(json.dumps(request))
            # not asyncio.wait_for: on 3.11 it drops a cancellation that arrives as the
            # answer does, and the cancelled task then read the socket forever (a
            # provider stopped right after it started hung, deaf to Ctrl-C and SIGTERM)
            async with asyncio.timeout(self.connect_timeout_s):
                sub_id = await self._subscribed(ws)
            self.live = True
            self.sessions += 1
            log.info("log subscription %s at %s", sub_id, self.url)
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.ERROR:  # e.g. a frame over the size cap
                    raise aiohttp.ClientError(f"websocket error: {ws.exception() or msg.data}")
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    self.dropped += 1
                    continue
                lg = self._log_of(msg.data, sub_id)
                if lg is None:
                    self.dropped += 1
                    continue
                if lg.removed:  # a reorg took it back: the follower deals with that
                    continue
                self.pushed += 1
                await self.on_log(lg)

    async def _subscribed(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """The subscription id from the answer to ``eth_subscribe``."""
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            answer = _json(msg.data)
            if not isinstance(answer, dict) or answer.get("id") != 1:
                self.dropped += 1
                continue
            if "error" in answer:
                raise RpcError(f"eth_subscribe: {str(answer['error'])[:300]}")
            sub_id = answer.get("result")
            if not isinstance(sub_id, str) or not 3 <= len(sub_id) <= 130:
                raise RpcError(f"eth_subscribe: bad subscription id {str(sub_id)[:80]!r}")
            return sub_id
        raise aiohttp.ClientError("closed before the subscription was confirmed")

    def _log_of(self, text: str, sub_id: str) -> Log | None:
        """The log a notification carries, or None for anything else."""
        note = _json(text)
        if not isinstance(note, dict) or note.get("method") != "eth_subscription":
            return None
        params = note.get("params")
        if not isinstance(params, dict) or params.get("subscription") != sub_id:
            return None
        try:
            lg = Log.parse(params.get("result"))
        except RpcError as exc:
            log.info("log subscription: malformed log: %s", exc)
            return None
        return lg if lg.address == self.address else None


def _json(text: str) -> Any:
    try:
        return boundedjson.loads(text)
    except ValueError:
        return None
