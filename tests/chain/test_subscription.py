"""Pushed escrow logs (``eth_subscribe`` over a websocket): from the real anvil, and
from a hostile node whose junk is dropped without harm."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from node.chain.devnet import TOKEN, Devnet
from node.chain.rpc import Log
from node.chain.subscription import MAX_MESSAGE_BYTES, LogSubscription, ws_url_for

ESCROW = bytes.fromhex("11" * 20)


def _log(address: bytes = ESCROW, data: str = "0x") -> dict[str, object]:
    return {
        "address": "0x" + address.hex(),
        "topics": ["0x" + "22" * 32],
        "data": data,
        "blockNumber": "0x5",
        "blockHash": "0x" + "33" * 32,
        "transactionHash": "0x" + "44" * 32,
        "logIndex": "0x0",
        "removed": False,
    }


def test_ws_url_for() -> None:
    assert ws_url_for("http://127.0.0.1:8545") == "ws://127.0.0.1:8545"
    assert ws_url_for("https://node.example/rpc?k=1") == "wss://node.example/rpc?k=1"
    with pytest.raises(ValueError):
        ws_url_for("ftp://x")


def test_anvil_pushes_a_provider_s_job_created_as_it_is_mined(net: Devnet) -> None:
    async def scenario() -> None:
        got: list[Log] = []
        arrived = asyncio.Event()

        async def on_log(lg: Log) -> None:
            got.append(lg)
            arrived.set()

        provider, other = net.provider(), net.provider()
        client = net.actor(deposit=100 * TOKEN)
        created = "0x" + net.escrow.abi.events["JobCreated"].topic0.hex()
        mine = "0x" + bytes(12).hex() + provider.address.hex()  # topics: jobId, client, provider
        sub = LogSubscription(
            "auto",
            net.escrow.address,
            on_log,
            topics=[created, None, None, mine],
            rpc_url=net.rpc.url,
        )
        task = asyncio.create_task(sub.run())
        try:
            for _ in range(200):
                if sub.live:
                    break
                await asyncio.sleep(0.02)
            assert sub.live
            await asyncio.to_thread(net.create, client, other)  # filtered out at the node
            job = await asyncio.to_thread(net.create, client, provider)
            await asyncio.wait_for(arrived.wait(), 10)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        events = [net.escrow.decode_log(lg) for lg in got]
        created = [e for e in events if e is not None and e.name == "JobCreated"]
        assert [int(e.fields["jobId"]) for e in created] == [job.job_id]
        assert sub.dropped == 0 and not sub.live

    asyncio.run(scenario())


@asynccontextmanager
async def _node(script: list[list[object]]) -> AsyncIterator[str]:
    """A websocket 'node' that confirms ``eth_subscribe`` and then sends, per
    connection, the next list of frames in ``script`` (str: text, bytes: binary,
    dict: JSON), then keeps the socket open until the client closes it."""
    sessions = iter(script)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        ask = json.loads((await ws.receive()).data)
        await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": ask["id"], "result": "0xab"}))
        for frame in next(sessions, []):
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            elif isinstance(frame, str):
                await ws.send_str(frame)
            else:
                await ws.send_str(json.dumps(frame))
        async for _ in ws:  # until the client goes
            pass
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    async with _serve(app) as port:
        yield f"ws://127.0.0.1:{port}/"


@asynccontextmanager
async def _serve(app: web.Application) -> AsyncIterator[int]:
    """Serve ``app`` on a free loopback port; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def _note(result: object, sub: str = "0xab") -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "method": "eth_subscription",
        "params": {"subscription": sub, "result": result},
    }


def test_a_hostile_node_s_junk_is_dropped_and_the_socket_reconnects() -> None:
    first = [
        "not json",
        b"\x00binary",
        {"jsonrpc": "2.0", "id": 7, "result": "stray answer"},
        _note(_log(), sub="0xother"),  # another subscription
        _note(_log(address=bytes(20))),  # another contract
        _note({**_log(), "data": "0xzz"}),  # malformed log
        _note({**_log(), "topics": ["0x00"] * 5}),  # malformed log
        _note(_log(data="0x" + "00" * 32)),  # the one good log
        "x" * (MAX_MESSAGE_BYTES + 1),  # over the cap: the socket is dropped
    ]
    second = [_note({**_log(), "removed": True}), _note(_log(data="0x01"))]

    async def scenario() -> None:
        got: list[Log] = []
        async with _node([first, second]) as url:
            sub = LogSubscription(url, ESCROW, _collect(got))
            task = asyncio.create_task(sub.run())
            try:
                for _ in range(300):
                    if len(got) == 2:
                        break
                    await asyncio.sleep(0.02)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        assert [lg.data for lg in got] == [bytes(32), b"\x01"]
        assert sub.sessions == 2  # reconnected after the oversized frame
        assert sub.dropped == 7

    asyncio.run(scenario())


def test_auto_mode_gives_up_on_an_endpoint_without_websockets() -> None:
    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": "0x1"})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_route("*", "/", plain)
        async with _serve(app) as port:
            sub = LogSubscription("auto", ESCROW, _collect([]), rpc_url=f"http://127.0.0.1:{port}/")
            await asyncio.wait_for(sub.run(), 10)  # returns: polling only
            assert not sub.live and sub.sessions == 0

    asyncio.run(scenario())


def _collect(into: list[Log]):  # type: ignore[no-untyped-def]
    async def on_log(lg: Log) -> None:
        into.append(lg)

    return on_log
