"""The ``gpunet`` command: one entry point for providers, clients and verifiers.

User mistakes (bad arguments, missing files, wrong passwords) end in one clear
line plus a hint and exit status 2, never a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from node import __version__
from node.commands.common import UserError
from node.keys import (
    KeystoreError,
    create_keystore,
    open_keystore,
    read_keystore,
    read_password,
    refuse_existing,
)
from protocol.errors import IdentityError
from protocol.identity import checksum_address, parse_address

DEFAULT_KEYSTORE = Path.home() / ".gpunet" / "keystore.json"


keystore_option = click.option(
    "--keystore",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_KEYSTORE,
    show_default=True,
    envvar="GPUNET_KEYSTORE",
    help="Encrypted Ethereum JSON keystore holding the node's secp256k1 key.",
)


class GpunetGroup(click.Group):
    """The top-level group: usage mistakes print like every other user error.

    click's own format (usage, a blank line, ``Error: ...``) becomes
    ``error: ...`` plus ``hint: see <command> --help``, exit status 2.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None else "gpunet"
            UserError(exc.format_message(), f"see: {path} --help").show()
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__cause__, Terminated):
                click.echo("terminated", err=True)
                sys.exit(143)
            if isinstance(exc.__cause__, KeyboardInterrupt):
                click.echo("interrupted", err=True)
                sys.exit(130)
            click.echo("aborted", err=True)
            sys.exit(1)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                sys.exit(1)
            raise
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=GpunetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gpunet")
def cli() -> None:
    """gpunet: a decentralized GPU inference marketplace node."""
    # Library chatter (py-libp2p logs every failed dial at ERROR) is not for users of
    # the CLI: our own code reports failures as one line; GPUNET_DEBUG=1 shows it all.
    if not os.environ.get("GPUNET_DEBUG"):
        for name in ("libp2p", "multiaddr", "trio", "aioquic", "async_service"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        # Until a daemon configures logging, our own modules' warnings (each RPC retry)
        # would reach stderr through logging's last-resort handler, ahead of the one
        # `error:` line that reports the failure; a daemon's handler still gets them.
        ours = logging.getLogger("node")
        if not any(isinstance(h, logging.NullHandler) for h in ours.handlers):
            ours.addHandler(logging.NullHandler())


@cli.group()
def keys() -> None:
    """Create and inspect the node key (one key: Ethereum address and libp2p peer id)."""


@keys.command("new")
@keystore_option
def keys_new(keystore: Path) -> None:
    """Create a new encrypted keystore (mode 0600)."""
    try:
        refuse_existing(keystore)  # before asking for a password twice
        identity = create_keystore(keystore, read_password(confirm=True))
    except KeystoreError as exc:
        raise UserError(str(exc), exc.hint) from None
    click.echo(f"keystore: {keystore}")
    click.echo(f"address:  {identity.checksum_address}")
    click.echo(f"peer id:  {identity.peer_id}")


@keys.command("show")
@keystore_option
def keys_show(keystore: Path) -> None:
    """Show the address and peer id of a keystore."""
    try:
        identity = open_keystore(keystore)
    except KeystoreError as exc:
        raise UserError(str(exc), exc.hint) from None
    click.echo(f"address:  {identity.checksum_address}")
    click.echo(f"peer id:  {identity.peer_id}")


@keys.command("export-address")
@keystore_option
def keys_export_address(keystore: Path) -> None:
    """Print only the checksummed address (without decrypting the key)."""
    try:
        document = read_keystore(keystore)
        raw = parse_address("0x" + str(document["address"]).lower().removeprefix("0x"))
    except KeystoreError as exc:
        raise UserError(str(exc), exc.hint) from None
    except (KeyError, IdentityError) as exc:
        raise UserError(
            f"{keystore} holds no valid address: {exc}",
            "gpunet keys show decrypts the key and prints its address",
        ) from None
    click.echo(checksum_address(raw))


def _register() -> None:
    from node.commands.client import client
    from node.commands.devnet import devnet
    from node.commands.jobs import jobs
    from node.commands.market import offers, submit
    from node.commands.money import balance, stake, unstake, withdraw
    from node.commands.provider import provider
    from node.commands.runtime import runtime
    from node.commands.verify import verify

    for command in (
        devnet,
        provider,
        client,
        submit,
        offers,
        jobs,
        stake,
        unstake,
        withdraw,
        balance,
        runtime,
        verify,
    ):
        cli.add_command(command)


_register()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup a Ctrl-C runs runs for it too."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main() -> None:
    """Console-script entry point.

    SIGTERM unwinds like Ctrl-C (exit status 143 instead of 130): without this, a
    SIGTERM between starting a child (anvil, the worker pool) and handing it to its
    owner's cleanup killed the command at once and left the child running. The
    daemons replace the handler with their own graceful stop while they run.
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(prog_name="gpunet", standalone_mode=True)
    except Terminated:
        click.echo("terminated", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
