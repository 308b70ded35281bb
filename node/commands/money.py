"""``gpunet stake|unstake|withdraw|balance``: the node's money in the escrow contract.

Amounts are token base units (``100e18`` is 100 tokens of 18 decimals). Every
check that can be made before a transaction is made first (amount against
balance, gas money), so a mistake costs nothing; contract reverts that still
happen arrive as one line plus a hint (:func:`node.commands.common.chain_errors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from node.commands.common import (
    Context,
    UserError,
    chain_errors,
    config_option,
    format_amount,
    format_time,
    keystore_override,
    open_context,
    parse_amount,
)

if TYPE_CHECKING:
    from node.chain.deploy import Token

__all__ = ["balance", "stake", "unstake", "withdraw"]

amount_option = click.option(
    "--amount", "amount_text", metavar="N", help="Token base units (e.g. 100e18)."
)


def _token(ctx: Context) -> Token:
    from node.chain.deploy import Token

    assert ctx.escrow.signer is not None
    with chain_errors("reading the token address"):
        return Token(ctx.escrow.signer, ctx.escrow.token_address())


def _eth_balance(ctx: Context) -> int:
    from node.chain.rpc import parse_quantity

    with chain_errors("reading the ETH balance"):
        raw = ctx.rpc.request("eth_getBalance", ["0x" + ctx.identity.address.hex(), "latest"])
    return parse_quantity(raw, "balance")


def _need_gas(ctx: Context) -> None:
    if _eth_balance(ctx) == 0:
        raise UserError(
            f"the wallet {ctx.identity.checksum_address} has no ETH to pay for gas",
            f"on a devnet: gpunet devnet up --fund {ctx.identity.checksum_address}",
        )


def deposit_shortfall(ctx: Context, needed: int, purpose: str) -> int:
    """Approve and deposit what the escrow balance lacks for ``needed``; returns the deposit."""
    me = ctx.identity.address
    with chain_errors("reading balances"):
        free = ctx.escrow.balance_of(me)
    if free >= needed:
        return 0
    missing = needed - free
    token = _token(ctx)
    with chain_errors("reading the wallet balance"):
        wallet = token.balance_of(me)
    if wallet < missing:
        raise UserError(
            f"{purpose} needs {format_amount(missing)} more in the escrow; "
            f"the wallet holds {format_amount(wallet)}",
            f"send tokens to {ctx.identity.checksum_address} "
            f"(on a devnet: gpunet devnet up --fund {ctx.identity.checksum_address})",
        )
    _need_gas(ctx)
    with chain_errors("approving the escrow"):
        token.approve(ctx.escrow.address, missing)
    with chain_errors("depositing"):
        ctx.escrow.deposit(missing)
    click.echo(f"deposited {format_amount(missing)} from the wallet into the escrow")
    return missing


@click.command()
@config_option
@keystore_override
@amount_option
def stake(config_path: Path | None, keystore: Path | None, amount_text: str | None) -> None:
    """Stake tokens as a provider (deposits from the wallet first if needed)."""
    if amount_text is None:
        raise UserError("--amount is required", "e.g. gpunet stake --amount 100e18")
    amount = parse_amount(amount_text)
    ctx = open_context(config_path, keystore)
    deposit_shortfall(ctx, amount, f"staking {amount}")
    _need_gas(ctx)
    with chain_errors("staking"):
        ctx.escrow.stake(amount)
        info = ctx.escrow.stake_of(ctx.identity.address)
        minimum = ctx.escrow.param("minStake")
    click.echo(f"staked {format_amount(amount)}")
    click.echo(f"active stake: {format_amount(info.active)} (minimum {format_amount(minimum)})")


@click.command()
@config_option
@keystore_override
@amount_option
def unstake(config_path: Path | None, keystore: Path | None, amount_text: str | None) -> None:
    """Start unbonding stake (it stays slashable until the unlock time)."""
    if amount_text is None:
        raise UserError("--amount is required", "e.g. gpunet unstake --amount 100e18")
    amount = parse_amount(amount_text)
    ctx = open_context(config_path, keystore)
    with chain_errors("reading the stake"):
        before = ctx.escrow.stake_of(ctx.identity.address)
    if amount > before.active:
        raise UserError(
            f"cannot unstake {amount}: the active stake is {before.active}",
            "check with: gpunet balance",
        )
    _need_gas(ctx)
    with chain_errors("unstaking"):
        ctx.escrow.request_unstake(amount)
        after = ctx.escrow.stake_of(ctx.identity.address)
    click.echo(f"unbonding {format_amount(after.unbonding)}")
    if before.unbonding:
        click.echo("(the unbonding delay restarted for stake that was already unbonding)")
    click.echo(f"unlocks at {format_time(after.unlock_at)}")
    click.echo("then: gpunet withdraw --stake --all")


@click.command()
@config_option
@keystore_override
@amount_option
@click.option("--all", "everything", is_flag=True, help="Withdraw the whole free balance.")
@click.option(
    "--stake", "unbonded", is_flag=True, help="First move unlocked unbonded stake to the balance."
)
def withdraw(
    config_path: Path | None,
    keystore: Path | None,
    amount_text: str | None,
    everything: bool,
    unbonded: bool,
) -> None:
    """Withdraw free escrow balance to the wallet (and, with --stake, unlocked stake)."""
    if amount_text is not None and everything:
        raise UserError("give either --amount or --all, not both", "see: gpunet withdraw --help")
    if amount_text is None and not everything and not unbonded:
        raise UserError(
            "say how much: --amount N, --all, or --stake", "see: gpunet withdraw --help"
        )
    amount = parse_amount(amount_text) if amount_text is not None else None
    ctx = open_context(config_path, keystore)
    me = ctx.identity.address
    with chain_errors("reading balances"):
        info = ctx.escrow.stake_of(me)
        free = ctx.escrow.balance_of(me)
        now = int(ctx.rpc.block("latest")["timestamp"])
    if unbonded:
        if info.unbonding == 0:
            raise UserError("there is no unbonding stake", "start unbonding with: gpunet unstake")
        if now < info.unlock_at:
            raise UserError(
                f"the unbonding stake is locked until {format_time(info.unlock_at)}",
                "retry after the unlock time",
            )
    if amount is not None and amount > free + (info.unbonding if unbonded else 0):
        raise UserError(
            f"cannot withdraw {amount}: the free balance is {free}", "check with: gpunet balance"
        )
    _need_gas(ctx)
    if unbonded:
        with chain_errors("withdrawing stake"):
            ctx.escrow.withdraw_stake()
        click.echo(f"moved {format_amount(info.unbonding)} of unbonded stake to the balance")
        free += info.unbonding
    if everything:
        amount = free
    if amount:
        with chain_errors("withdrawing"):
            ctx.escrow.withdraw(amount)
        click.echo(f"withdrew {format_amount(amount)} to {ctx.identity.checksum_address}")
    elif everything:
        click.echo("the free balance is 0; nothing to withdraw")
    with chain_errors("reading balances"):
        click.echo(f"free balance: {format_amount(ctx.escrow.balance_of(me))}")


@click.command()
@config_option
@keystore_override
def balance(config_path: Path | None, keystore: Path | None) -> None:
    """Wallet tokens and ETH, free escrow balance, stake and unbonding."""
    ctx = open_context(config_path, keystore)
    me = ctx.identity.address
    token = _token(ctx)
    with chain_errors("reading balances"):
        wallet = token.balance_of(me)
        free = ctx.escrow.balance_of(me)
        info = ctx.escrow.stake_of(me)
        minimum = ctx.escrow.param("minStake")
    eth = _eth_balance(ctx)
    click.echo(f"account     {ctx.identity.checksum_address}")
    click.echo(f"eth         {eth} wei")
    click.echo(f"wallet      {format_amount(wallet)}")
    click.echo(f"free        {format_amount(free)}")
    click.echo(f"stake       {format_amount(info.active)} (minimum {format_amount(minimum)})")
    unbonding = format_amount(info.unbonding)
    if info.unbonding:
        unbonding += f", unlocks {format_time(info.unlock_at)}"
    click.echo(f"unbonding   {unbonding}")
