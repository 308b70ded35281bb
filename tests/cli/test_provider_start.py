"""``gpunet provider start`` below the minimum stake, as a service would run it (no
terminal): a clear refusal, not click's bare "aborted" (exit 1) after a prompt
nobody could answer. Real CLI processes on a ``gpunet devnet up`` chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.chain.anvil import free_port
from node.chain.deploy import Token
from node.chain.escrow import Escrow
from node.chain.rpc import Rpc, Signer
from protocol.identity import parse_address
from tests.cli.conftest import Node, fund, make_node
from tests.cli.test_user_errors import assert_error, gpunet

pytestmark = pytest.mark.timeout(120)

EXTRA = '[p2p]\nmdns = false\nlisten_addrs = ["/ip4/127.0.0.1/tcp/0"]\n\n' \
    "[provider]\nallow_untrusted = true\n\n"  # fmt: skip


def test_unstaked_provider_without_a_terminal_is_told_to_use_yes(
    tmp_path: Path, devnet_state: dict[str, Any]
) -> None:
    node = make_node(tmp_path, devnet_state, EXTRA + f"[api]\nport = {free_port()}\n")
    fund(devnet_state, node, "300e18")
    assert node.run("stake", "--amount", "50e18").exit_code == 0  # half the minimum
    _deposit(devnet_state, node, 100 * 10**18)  # enough free balance to stake the rest
    result = gpunet("provider", "start", "--config", str(node.config), home=tmp_path)
    assert_error(result, 2, "a provider needs 100000000000000000000 (100 tokens) staked",
                 "no terminal to confirm", hint="--yes", after_log=True)  # fmt: skip


def test_provider_without_the_tokens_to_stake_is_told_before_any_question(
    tmp_path: Path, devnet_state: dict[str, Any]
) -> None:
    node = make_node(tmp_path, devnet_state, EXTRA + f"[api]\nport = {free_port()}\n")
    fund(devnet_state, node, "300e18")  # in the wallet, not in the escrow
    result = gpunet("provider", "start", "--config", str(node.config), "--yes", home=tmp_path)
    assert_error(result, 2, "the free escrow balance 0 (0 tokens)",
                 hint="gpunet stake --amount 100000000000000000000", after_log=True)  # fmt: skip


def _deposit(state: dict[str, Any], node: Node, amount: int) -> None:
    """Wallet -> free escrow balance (no CLI command deposits without staking)."""
    rpc = Rpc(str(state["rpc_url"]))
    signer = Signer(rpc, node.identity.private_key)
    escrow = Escrow(rpc, parse_address(str(state["escrow_address"])), signer)
    Token(signer, escrow.token_address()).approve(escrow.address, amount)
    escrow.deposit(amount)
