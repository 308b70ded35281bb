"""``gpunet devnet`` and the money commands against a real anvil."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from node.chain.deploy import Token
from node.chain.escrow import Escrow
from node.chain.rpc import Rpc, Signer
from node.commands.devnet import _group_alive
from protocol.identity import Identity, parse_address
from tests.cli.conftest import Node, assert_user_error, fund, invoke, make_node

T = 10**18


def test_devnet_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    state_dir = tmp_path / "dn"
    up = invoke("devnet", "up", "--dir", str(state_dir))
    assert up.exit_code == 0, up.output
    state_file = state_dir / "devnet.json"
    state = json.loads(state_file.read_text())
    pid = int(state["anvil_pid"])
    try:
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        assert f'rpc_url = "{state["rpc_url"]}"' in up.output
        assert f'escrow_address = "{state["escrow_address"]}"' in up.output
        assert "chain_id = 31337" in up.output
        rpc = Rpc(state["rpc_url"])
        escrow = Escrow(rpc, parse_address(state["escrow_address"]))
        assert escrow.token_address() == parse_address(state["token_address"])
        assert escrow.param("minStake") == state["params"]["min_stake"]

        status = invoke("devnet", "status", "--dir", str(state_dir))
        assert status.exit_code == 0, status.output
        assert "answers: chain id 31337, block" in status.output

        again = invoke("devnet", "up", "--dir", str(state_dir))
        assert again.exit_code == 0, again.output
        assert f"already running at {state['rpc_url']}" in again.output
        assert json.loads(state_file.read_text())["anvil_pid"] == pid  # the same one
    finally:
        down = invoke("devnet", "down", "--dir", str(state_dir))
    assert down.exit_code == 0, down.output
    assert f"stopped anvil (pid {pid})" in down.output
    assert not _group_alive(pid)
    assert not state_file.exists()
    gone = invoke("devnet", "status", "--dir", str(state_dir))
    assert gone.exit_code == 1 and "no devnet" in gone.output
    assert "nothing to stop" in invoke("devnet", "down", "--dir", str(state_dir)).output


def test_devnet_bad_input_starts_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "dn"
    assert_user_error(
        invoke("devnet", "up", "--dir", str(state_dir), "--fund", "0x12"), "not an address"
    )
    assert_user_error(
        invoke(
            "devnet", "up", "--dir", str(state_dir), "--fund", "0x" + "ab" * 20, "--amount", "x"
        ),
        "--amount",
    )
    assert_user_error(invoke("devnet", "up", "--dir", str(state_dir), "--amount", "5"), "--fund")
    assert_user_error(invoke("devnet", "up", "--dir", str(state_dir), "--bogus"), "--bogus")
    assert not state_dir.exists()
    state_dir.mkdir()
    (state_dir / "devnet.json").write_text("{not json")
    assert_user_error(invoke("devnet", "status", "--dir", str(state_dir)), "not a devnet state")
    assert (state_dir / "devnet.json").read_text() == "{not json"


def _chain(state: dict[str, object]) -> tuple[Rpc, Escrow, Token]:
    rpc = Rpc(str(state["rpc_url"]))
    escrow = Escrow(rpc, parse_address(str(state["escrow_address"])))
    reader = Signer(rpc, Identity.generate().private_key)
    return rpc, escrow, Token(reader, escrow.token_address())


def _money(node: Node, escrow: Escrow, token: Token) -> tuple[int, int, int, int]:
    info = escrow.stake_of(node.identity.address)
    return (
        token.balance_of(node.identity.address),
        escrow.balance_of(node.identity.address),
        info.active,
        info.unbonding,
    )


def test_stake_unstake_withdraw_balance(devnet_state: dict[str, object], tmp_path: Path) -> None:
    rpc, escrow, token = _chain(devnet_state)
    node = make_node(tmp_path / "p", devnet_state)
    fund(devnet_state, node, "500e18")
    assert _money(node, escrow, token) == (500 * T, 0, 0, 0)

    shown = node.run("balance")
    assert shown.exit_code == 0, shown.output
    assert f"wallet      {500 * T} (500 tokens)" in shown.output
    assert "stake       0 (0 tokens) (minimum 100000000000000000000" in shown.output

    staked = node.run("stake", "--amount", "150e18")
    assert staked.exit_code == 0, staked.output
    assert "deposited 150000000000000000000" in staked.output
    assert _money(node, escrow, token) == (350 * T, 0, 150 * T, 0)

    unstaked = node.run("unstake", "--amount", "60_000000000000000000")
    assert unstaked.exit_code == 0, unstaked.output
    assert "unlocks at" in unstaked.output
    assert _money(node, escrow, token) == (350 * T, 0, 90 * T, 60 * T)

    locked = node.run("withdraw", "--stake", "--all")
    assert_user_error(locked, "locked until")
    assert _money(node, escrow, token) == (350 * T, 0, 90 * T, 60 * T)

    rpc.request("evm_increaseTime", [int(devnet_state["params"]["unbonding_delay_s"]) + 1])  # type: ignore[index]
    rpc.request("evm_mine", [])
    withdrawn = node.run("withdraw", "--stake", "--all")
    assert withdrawn.exit_code == 0, withdrawn.output
    assert _money(node, escrow, token) == (410 * T, 0, 90 * T, 0)
    assert "unbonding   0 (0 tokens)" in node.run("balance").output

    # a second stake uses the free balance first, then the wallet
    assert node.run("withdraw", "--stake").exit_code == 2  # nothing unbonding any more
    assert node.run("stake", "--amount", "10e18").exit_code == 0
    assert _money(node, escrow, token) == (400 * T, 0, 100 * T, 0)


def test_money_mistakes_change_nothing(devnet_state: dict[str, object], tmp_path: Path) -> None:
    _, escrow, token = _chain(devnet_state)
    node = make_node(tmp_path / "p", devnet_state)
    fund(devnet_state, node, "20e18")
    assert node.run("stake", "--amount", "5e18").exit_code == 0
    before = _money(node, escrow, token)
    assert_user_error(node.run("stake"), "--amount is required")
    assert_user_error(node.run("stake", "--amount", "-5"), "between 1 and")
    assert_user_error(node.run("stake", "--amount", "1.5"), "whole number")
    assert_user_error(node.run("stake", "--amount", "lots"), "whole number")
    assert_user_error(node.run("stake", "--amount", "100e18"), "needs", "more in the escrow")
    assert_user_error(node.run("unstake", "--amount", "6e18"), "active stake is")
    assert_user_error(node.run("withdraw"), "say how much")
    assert_user_error(node.run("withdraw", "--amount", "1", "--all"), "not both")
    assert_user_error(node.run("withdraw", "--amount", "1"), "free balance is 0")
    assert_user_error(node.run("withdraw", "--stake"), "no unbonding stake")
    assert_user_error(invoke("balance", "--config", str(tmp_path / "missing.toml")), "cannot read")
    wrong = invoke("balance", "--config", str(node.config), env={"GPUNET_PASSWORD": "wrong"})
    assert_user_error(wrong)
    broke = make_node(tmp_path / "broke", devnet_state)  # no ETH, no tokens
    assert_user_error(broke.run("stake", "--amount", "1"), "the wallet holds 0")
    assert _money(node, escrow, token) == before


def test_chain_reverts_become_one_line_with_a_hint(
    devnet_state: dict[str, object], tmp_path: Path
) -> None:
    from node.chain.anvil import free_port
    from node.chain.rpc import RetryPolicy
    from node.commands.common import Failure, UserError, chain_errors

    rpc, escrow, _ = _chain(devnet_state)
    node = make_node(tmp_path / "p", devnet_state)
    fund(devnet_state, node, "1e18")
    mine = escrow.with_signer(Signer(rpc, node.identity.private_key))
    # the contract reverts NothingUnbonding()
    with pytest.raises(UserError) as info, chain_errors("withdrawing"):
        mine.withdraw_stake()
    assert info.value.message == "withdrawing: there is no unbonding stake"
    assert info.value.hint == "start unbonding with: gpunet unstake"
    with pytest.raises(UserError, match="the escrow balance is 0, 5 needed"), chain_errors("w"):
        mine.withdraw(5)
    with pytest.raises(UserError, match="the amount must be positive"), chain_errors("staking"):
        mine.stake(0)
    url = f"http://127.0.0.1:{free_port()}"
    dead = Escrow(Rpc(url, retry=RetryPolicy(attempts=1)), escrow.address)
    with pytest.raises(Failure, match="the chain does not answer") as failed, chain_errors("r"):
        dead.balance_of(node.identity.address)
    assert failed.value.exit_code == 1 and failed.value.hint


def test_devnet_up_without_anvil_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.chain.anvil

    monkeypatch.setattr(node.chain.anvil, "REPO_ROOT", tmp_path)  # no node_modules here
    monkeypatch.setenv("PATH", str(tmp_path))  # and no anvil on PATH
    result = invoke("devnet", "up", "--dir", str(tmp_path / "dn"))
    assert_user_error(result, "anvil is not installed")
    assert "scripts/bootstrap.sh" in result.stderr
    assert not (tmp_path / "dn").exists()
