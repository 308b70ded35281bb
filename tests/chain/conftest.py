"""Fixtures: one anvil per test session with the contracts deployed; a snapshot per test.

anvil (npm ``@foundry-rs/anvil``) starts on a free loopback port and is always
terminated (fixture teardown plus an ``atexit`` hook in :class:`Anvil`).
Every test runs between ``evm_snapshot`` and ``evm_revert``, so tests are
independent yet share one deployment.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node.chain.anvil import Anvil
from node.chain.devnet import Devnet


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node
    assert not node.running


@pytest.fixture(scope="session")
def session_net(anvil: Anvil) -> Devnet:
    return Devnet(anvil.url)


@pytest.fixture
def net(session_net: Devnet) -> Iterator[Devnet]:
    snap = session_net.snapshot()
    before = len(session_net.actors)
    yield session_net
    del session_net.actors[before:]
    session_net.revert(snap)
