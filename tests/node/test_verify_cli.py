"""`gpunet verify`: a placeholder resolver is refused with one line and a hint."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from node.chain.anvil import Anvil
from node.chain.devnet import Devnet
from node.cli import cli
from node.keys import create_keystore


def test_verify_refuses_an_escrow_without_a_committee(tmp_path: Path) -> None:
    create_keystore(tmp_path / "keystore.json", "pw", scrypt_n=2**10)
    with Anvil() as anvil:
        net = Devnet(anvil.url)  # resolver: a plain account, not a VerifierCommittee
        config = tmp_path / "gpunet.toml"
        config.write_text(
            f'[node]\ndata_dir = "{tmp_path}"\n'
            f'[chain]\nrpc_url = "{anvil.url}"\nchain_id = {net.rpc.chain_id()}\n'
            f'escrow_address = "0x{net.escrow.address.hex()}"\n'
        )
        result = CliRunner().invoke(
            cli, ["verify", "--config", str(config)], env={"GPUNET_PASSWORD": "pw"}
        )
    assert result.exit_code == 2, result.output
    assert "is not a verifier committee" in result.output
    assert "hint: deploy VerifierCommittee" in result.output
    assert "Traceback" not in result.output
