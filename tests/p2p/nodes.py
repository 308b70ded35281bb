"""Helpers to run P2PNodes inside one trio run (in-process tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from conftest import make_config

from node.p2p.node import P2PNode
from protocol.identity import Identity


@asynccontextmanager
async def running(n: int, **kwargs: Any) -> AsyncIterator[list[P2PNode]]:
    """``n`` nodes; node i>0 connected to node 0; cancelled on exit."""
    config_kwargs = kwargs.pop("config", {})
    nodes = [P2PNode(Identity.generate(), make_config(**config_kwargs), **kwargs) for _ in range(n)]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        for node in nodes[1:]:
            await node.connect(nodes[0].addrs()[0])
        yield nodes
        nursery.cancel_scope.cancel()


async def wait_for(pred: Callable[[], bool], limit: float = 10.0, step: float = 0.05) -> None:
    """Poll ``pred`` until true or fail (polling: the state lives in library objects)."""
    with trio.fail_after(limit):
        while not pred():  # noqa: ASYNC110
            await trio.sleep(step)


async def mesh_ready(nodes: list[P2PNode], limit: float = 10.0) -> None:
    """Every node sees at least one subscriber of the offers topic."""
    await wait_for(lambda: all(n.mesh_size() >= 1 for n in nodes), limit)
