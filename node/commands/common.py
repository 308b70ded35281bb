"""What every subcommand needs: config, identity, chain handles, p2p settings, user errors."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from node.config import Config, ConfigError, load_config
from node.keys import KeystoreError, open_keystore
from protocol.errors import IdentityError
from protocol.identity import Identity, parse_address

if TYPE_CHECKING:  # imported when a command runs, so `gpunet --help` stays fast
    from node.chain.escrow import Escrow
    from node.chain.rpc import Rpc
    from node.p2p.config import P2PConfig

__all__ = [
    "MAX_AMOUNT",
    "Context",
    "Failure",
    "UserError",
    "chain_errors",
    "check_listen",
    "check_port",
    "config_option",
    "format_amount",
    "format_time",
    "keystore_override",
    "load_config_only",
    "open_context",
    "parse_amount",
    "quiet_libp2p",
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
        identity = open_keystore(key_path)
    except KeystoreError as exc:
        raise UserError(str(exc), exc.hint) from None
    if not config.chain.escrow_address:
        raise UserError(
            "no escrow contract configured ([chain] escrow_address)",
            "start a local chain with: gpunet devnet up",
        )
    try:
        escrow_address = parse_address(config.chain.escrow_address)
    except IdentityError as exc:
        raise UserError(
            f"[chain] escrow_address: {exc}", "gpunet devnet up prints the [chain] section"
        ) from None
    rpc = Rpc(config.chain.rpc_url)
    chain_id = _chain_id(rpc, config.chain.rpc_url)
    if chain_id != config.chain.chain_id:
        raise UserError(
            f"the chain at {config.chain.rpc_url} has id {chain_id}, config says "
            f"{config.chain.chain_id}",
            "fix [chain] chain_id or rpc_url in the config",
        )
    escrow = Escrow(rpc, escrow_address, Signer(rpc, identity.private_key))
    return Context(config, identity, data_dir, rpc, escrow)


def _chain_id(rpc: Rpc, url: str) -> int:
    """The chain id at ``url``: a chain that does not answer is a :class:`Failure`
    (exit 1), an answer that is not Ethereum JSON-RPC a :class:`UserError`."""
    from node.chain.errors import ChainError, RpcUnavailable

    try:
        return rpc.chain_id()
    except RpcUnavailable as exc:  # the transport's reason, without the method and URL again
        raise Failure(
            f"cannot reach the chain at {url}: {exc.__cause__ or exc}",
            "is the chain running and [chain] rpc_url right? (gpunet devnet status)",
        ) from None
    except ChainError as exc:
        raise UserError(
            f"{url} does not answer as an Ethereum JSON-RPC node: {exc.__cause__ or exc}",
            "fix [chain] rpc_url (gpunet devnet up prints the [chain] section)",
        ) from None


def quiet_libp2p() -> None:
    """Keep py-libp2p's log lines (each failed dial at ERROR) off a short command's stderr.

    Importing libp2p resets its logger to WARNING with no handler, so logging's
    last-resort handler printed them ahead of our one ``error:`` line; the group's
    own setting (before the import) did not last. ``GPUNET_DEBUG=1`` shows them.
    """
    import logging
    import os

    import libp2p  # noqa: F401 - its import configures the logger we override

    if not os.environ.get("GPUNET_DEBUG"):
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)


def check_port(host: str, port: int, what: str, hint: str) -> None:
    """A :class:`UserError` unless a TCP server could bind ``host:port`` now."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UserError(f"cannot serve {what} on {host}:{port}: {reason}", hint) from None


def check_listen(addrs: Sequence[str], source: str, *, must_bind: bool = False) -> None:
    """Each libp2p listen address parses, and (``must_bind``) its TCP port, unless 0,
    is free to bind.

    An address that does not parse crashes the libp2p thread. libp2p logs a port it
    cannot bind and carries on without it: a provider then announces itself ready
    while no client can reach it, so a provider asks for ``must_bind``; nodes that
    only dial out (client, verifier) run on, as before, when a local provider holds
    the default port.
    """
    import socket

    from multiaddr import Multiaddr

    hint = "write e.g. /ip4/0.0.0.0/tcp/4040 (tcp/0: any free port)"
    for text in addrs:
        try:
            addr = Multiaddr(text)
            names = [p.name for p in addr.protocols()]
        except Exception as exc:  # noqa: BLE001 - the parser raises several types
            reason = str(exc).split(" (string:")[0].removeprefix(f"Invalid MultiAddr {text!r}: ")
            raise UserError(f"{source}: {text[:80]!r} is not a multiaddr: {reason}", hint) from None
        if not must_bind or names[:2] not in (["ip4", "tcp"], ["ip6", "tcp"]):
            continue
        host, port = addr.value_for_protocol(names[0]), int(addr.value_for_protocol("tcp"))
        if port == 0:
            continue
        family = socket.AF_INET if names[0] == "ip4" else socket.AF_INET6
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libp2p does
                probe.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"cannot listen on {text} ({source}): {exc.strerror or exc}",
                "another process has the port (another node?): choose another with --listen "
                "or [p2p] listen_addrs",
            ) from None


class Failure(UserError):
    """The command could not do its work (not the user's mistake): same format, exit status 1."""

    exit_code = 1


#: Largest amount accepted on the command line (the escrow keeps stakes in uint96).
MAX_AMOUNT = 2**96 - 1


def parse_amount(text: str, what: str = "--amount", maximum: int = MAX_AMOUNT) -> int:
    """A token amount in base units: ``1000``, ``1_000``, ``1e18`` or ``2.5e18`` (must be whole)."""
    from decimal import Decimal, InvalidOperation

    cleaned = text.strip().replace("_", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        value = Decimal("NaN")
    if len(cleaned) > 80 or not value.is_finite() or value != value.to_integral_value():
        raise UserError(
            f"{what}: {text[:40]!r} is not a whole number of token base units",
            "write e.g. 1000, 1_000 or 100e18 (100 tokens of 18 decimals)",
        )
    amount = int(value)
    if not 0 < amount <= maximum:
        raise UserError(
            f"{what}: must be between 1 and {maximum}, got {text[:40]}",
            "amounts are positive token base units, e.g. 100e18",
        )
    return amount


def format_amount(amount: int, decimals: int = 18) -> str:
    """``amount`` base units, with the whole-token value for readability."""
    whole, frac = divmod(amount, 10**decimals)
    tokens = f"{whole:,}" + (f".{frac:0{decimals}d}".rstrip("0") if frac else "")
    return f"{amount} ({tokens} tokens)"


@contextlib.contextmanager
def chain_errors(action: str) -> Iterator[None]:
    """Turn typed chain failures during ``action`` into one clear line plus a hint."""
    from node.chain import errors as e

    try:
        yield
    except e.InsufficientBalance as exc:
        raise UserError(
            f"{action}: the escrow balance is {exc.fields.get('balance')}, "
            f"{exc.fields.get('needed')} needed",
            "check with: gpunet balance",
        ) from None
    except e.InsufficientStake as exc:
        raise UserError(
            f"{action}: the active stake is {exc.fields.get('stake')}, "
            f"{exc.fields.get('minimum')} needed",
            "check with: gpunet balance",
        ) from None
    except e.StakeLocked as exc:
        unlock = int(exc.fields.get("unlockAt", 0))
        raise UserError(
            f"{action}: the unbonding stake is locked until {format_time(unlock)}",
            "retry after the unlock time",
        ) from None
    except e.NothingUnbonding:
        raise UserError(
            f"{action}: there is no unbonding stake", "start unbonding with: gpunet unstake"
        ) from None
    except e.ZeroAmount:
        raise UserError(f"{action}: the amount must be positive", "e.g. --amount 100e18") from None
    except e.ContractRevert as exc:
        raise Failure(
            f"{action}: the contract refused: {exc}", "check the state with: gpunet balance"
        ) from None
    except e.RpcUnavailable as exc:
        raise Failure(
            f"{action}: the chain does not answer: {exc}", "is it running? (gpunet devnet status)"
        ) from None
    except e.TransactionTimeout as exc:
        raise Failure(f"{action}: {exc}", "the chain may be congested; check later") from None
    except e.RpcError as exc:
        message = str(exc)
        if "insufficient funds" in message.lower():
            raise UserError(
                f"{action}: the wallet has not enough ETH to pay for gas",
                "on a devnet: gpunet devnet up --fund <address>",
            ) from None
        raise Failure(
            f"{action}: the chain refused the request: {message[:200]}",
            "is [chain] rpc_url an Ethereum JSON-RPC endpoint?",
        ) from None
    except e.ChainError as exc:
        raise Failure(f"{action}: {exc}", "see the node's log for details") from None


def format_time(unix: int) -> str:
    """A unix time as UTC text plus how far away it is."""
    import datetime
    import time

    when = datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = int(unix - time.time())
    return f"{when} (in {delta} s)" if delta > 0 else f"{when} ({-delta} s ago)"


def load_config_only(config_path: Path | None) -> Config:
    """The config alone (no key, no chain), every failure a :class:`UserError`."""
    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise UserError(str(exc), "see docs/gpunet.example.toml for every key") from None
