"""What every subcommand needs: config, identity, chain handles, p2p settings, user errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import click

from node.config import Config, ConfigError, load_config
from node.keys import KeystoreError, load_keystore, read_password
from protocol.errors import IdentityError
from protocol.identity import Identity, parse_address

if TYPE_CHECKING:  # imported when a command runs, so `gpunet --help` stays fast
    from node.chain.escrow import Escrow
    from node.chain.rpc import Rpc
    from node.p2p.config import P2PConfig

__all__ = [
    "Context",
    "UserError",
    "config_option",
    "keystore_override",
    "open_context",
]


class UserError(click.ClickException):
    """A mistake the user can fix: printed as one line plus a hint, exit status 2."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def show(self, file: object = None) -> None:
        click.secho(f"error: {self.message}", fg="red", err=True)
        if self.hint:
            click.echo(f"hint: {self.hint}", err=True)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="GPUNET_CONFIG",
    help="TOML config file (default ~/.gpunet/gpunet.toml if it exists).",
)
keystore_override = click.option(
    "--keystore",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keystore file (default: [node] keystore in the config).",
)


@dataclasses.dataclass
class Context:
    """Config, identity and chain handles of one command invocation."""

    config: Config
    identity: Identity
    data_dir: Path
    rpc: Rpc
    escrow: Escrow

    def p2p_config(self, *, listen: tuple[str, ...] | None = None) -> P2PConfig:
        """libp2p settings from ``[p2p]``, bound to this chain and escrow."""
        from node.p2p.config import P2PConfig

        domain = self.escrow.domain
        return P2PConfig(
            chain_id=domain.chain_id,
            contract=domain.verifying_contract,
            listen_addrs=listen or tuple(self.config.p2p.listen_addrs),
            bootstrap=tuple(self.config.p2p.bootstrap_peers),
            enable_mdns=self.config.p2p.mdns,
        )


def open_context(config_path: Path | None, keystore: Path | None) -> Context:
    """Load config and key, connect to the chain; every failure is a :class:`UserError`."""
    from node.chain.escrow import Escrow
    from node.chain.rpc import Rpc, Signer

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise UserError(str(exc), "see docs/gpunet.example.toml for every key") from None
    data_dir = Path(config.node.data_dir).expanduser()
    key_path = keystore or (data_dir / Path(config.node.keystore).expanduser())
    try:
        identity = load_keystore(key_path, read_password())
    except KeystoreError as exc:
        raise UserError(str(exc), "create a key with: gpunet keys new") from None
    if not config.chain.escrow_address:
        raise UserError(
            "no escrow contract configured ([chain] escrow_address)",
            "start a local chain with: gpunet devnet up",
        )
    try:
        escrow_address = parse_address(config.chain.escrow_address)
    except IdentityError as exc:
        raise UserError(f"[chain] escrow_address: {exc}") from None
    rpc = Rpc(config.chain.rpc_url)
    try:
        chain_id = rpc.chain_id()
    except Exception as exc:  # noqa: BLE001 - any transport error becomes one clear line
        raise UserError(
            f"cannot reach the chain at {config.chain.rpc_url}: {exc}",
            "is the RPC URL right and the node running? (gpunet devnet status)",
        ) from None
    if chain_id != config.chain.chain_id:
        raise UserError(
            f"the chain at {config.chain.rpc_url} has id {chain_id}, config says "
            f"{config.chain.chain_id}"
        )
    escrow = Escrow(rpc, escrow_address, Signer(rpc, identity.private_key))
    return Context(config, identity, data_dir, rpc, escrow)
