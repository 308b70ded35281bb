"""``gpunet jobs [--role …] [--state …]`` and ``gpunet jobs show ID``: the node's job records.

Reads the store in ``[node] data_dir`` (``--role client``: the one of ``gpunet
submit`` and ``gpunet client serve`` in ``<data_dir>/client``); no key, no
chain, no network; safe while the node runs (sqlite WAL). A data directory
without a store is reported, never created.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from node.commands.common import UserError, config_option, load_config_only

if TYPE_CHECKING:
    from node.store import Store

__all__ = ["jobs"]

_ROLES = ("provider", "client", "verifier")
_STATES = ("none", "matched", "submitted", "disputed", "finalized", "refunded", "slashed")


#: Where ``gpunet submit`` and ``gpunet client serve`` keep their client store.
CLIENT_SUBDIR = "client"


@contextmanager
def _open_store(config_path: Path | None, role: str | None) -> Iterator[Store | None]:
    """The node's store; for ``--role client`` the client commands' own store
    (``<data_dir>/client``), and that one too when it is the only store there is."""
    from node.store import STORE_FILE, SchemaError, Store, StoreError

    cfg = load_config_only(config_path)
    main, client = cfg.data_dir / STORE_FILE, cfg.data_dir / CLIENT_SUBDIR / STORE_FILE
    wants_client = role == "client" or (role is None and not main.is_file())
    path = client if wants_client and client.is_file() else main
    if role is None and path == main and client.is_file():
        click.echo(
            f"(jobs of gpunet submit and gpunet client serve are in {client}: "
            "gpunet jobs --role client)",
            err=True,
        )
    if not path.is_file():
        click.echo(f"no jobs: there is no store at {path} yet")
        yield None
        return
    try:
        store = Store(path)
    except (SchemaError, StoreError, OSError) as exc:
        raise UserError(
            f"cannot open the store {path}: {exc}", "is [node] data_dir right?"
        ) from None
    with store:
        yield store


def _when(millis: int) -> str:
    stamp = datetime.datetime.fromtimestamp(millis / 1000, datetime.UTC)
    age = max(0, int(time.time() - millis / 1000))
    return f"{stamp:%Y-%m-%d %H:%M:%S} ({age} s ago)"


def _short(address: bytes | None) -> str:
    from protocol.identity import checksum_address

    return "-" if address is None else checksum_address(address)


@click.group(invoke_without_command=True)
@config_option
@click.option("--role", type=click.Choice(_ROLES), help="Only jobs of this role.")
@click.option(
    "--state", "states", multiple=True, type=click.Choice(_STATES), help="Only these states."
)
@click.option("--in-flight", is_flag=True, help="Only jobs still owed work.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.pass_context
def jobs(
    ctx: click.Context,
    *,
    config_path: Path | None,
    role: str | None,
    states: tuple[str, ...],
    in_flight: bool,
    limit: int,
) -> None:
    """List this node's jobs, newest first; `gpunet jobs show ID` shows one."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = (config_path, role)
        return
    from rich.console import Console
    from rich.table import Table

    from node.store import Role
    from protocol.lifecycle import JobState

    with _open_store(config_path, role) as store:
        if store is None:
            return
        found = store.jobs.select(
            role=Role(role) if role else None,
            states=[JobState[s.upper()] for s in states] or None,
            in_flight=True if in_flight else None,
            limit=limit,
        )
    if not found:
        click.echo("no jobs match")
        return
    table = Table()
    for col in ("id", "role", "job id", "state", "price/GPU-s", "max payment"):
        table.add_column(col, justify="right" if col not in ("role", "state") else "left")
    table.add_column("counterparty")
    table.add_column("updated (UTC)")
    table.add_column("last error")
    for job in found:
        table.add_row(
            str(job.id),
            job.role.value,
            "-" if job.job_id is None else str(job.job_id),
            job.state.name.lower() + ("" if job.abandoned_at is None else " (abandoned)"),
            str(job.price),
            str(job.max_payment),
            _short(job.counterparty),
            _when(job.updated_at),
            (job.last_error or "")[:60],
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=250)
    console.print(table)


@jobs.command("show")
@click.argument("local_id", metavar="ID", type=click.IntRange(1, 2**63 - 1))
@config_option
@click.option(
    "--role", type=click.Choice(_ROLES), help="client: the store of submit / client serve."
)
@click.pass_obj
def show(
    group: tuple[Path | None, str | None],
    local_id: int,
    config_path: Path | None,
    role: str | None,
) -> None:
    """One job (by the local id in the first column of ``gpunet jobs``) with its history."""
    from node.store import StoreError

    config_path = config_path or group[0]
    role = role or group[1]

    with _open_store(config_path, role) as store:
        if store is None:
            return
        try:
            job = store.jobs.get(local_id)
            if role is not None and job.role.value != role:
                raise StoreError(f"job {local_id} is a {job.role.value} job")
        except StoreError:
            what = f"{role} job" if role else "job"
            raise UserError(
                f"no {what} with id {local_id}",
                "list them with: gpunet jobs" + (f" --role {role}" if role else ""),
            ) from None
        history = store.jobs.history(local_id)
    rows = [
        ("id", str(job.id)),
        ("role", job.role.value),
        ("job id", "-" if job.job_id is None else str(job.job_id)),
        ("state", job.state.name.lower()),
        ("in flight", "yes" if job.in_flight else "no"),
        ("counterparty", _short(job.counterparty)),
        ("price", f"{job.price}/GPU-s"),
        ("max payment", str(job.max_payment)),
        ("deadline", datetime.datetime.fromtimestamp(job.deadline, datetime.UTC).isoformat()),
        ("spec hash", "0x" + job.spec_hash.hex()),
    ]
    if job.spec is not None:
        config = ",".join(f"{k}={v}" for k, v in sorted(job.spec.model.config.items()))
        rows.append(("model", f"{job.spec.model.arch} {config}"))
    if job.output_cid is not None:
        rows.append(("output", str(job.output_cid)))
    for event, tx in sorted(job.tx_hashes.items()):
        rows.append((f"tx {event}", tx))
    rows += [("created", _when(job.created_at)), ("updated", _when(job.updated_at))]
    if job.abandoned_at is not None:
        rows.append(("abandoned", _when(job.abandoned_at)))
    if job.last_error:
        rows.append(("last error", job.last_error))
    for key, value in rows:
        click.echo(f"{key:<13} {value}")
    click.echo("history:")
    for h in history:
        where = f" block {h.block}" if h.block is not None else ""
        tx = f" tx {h.tx_hash}" if h.tx_hash else ""
        click.echo(
            f"  {h.seq:>3}  {_when(h.at)}  {h.event.value}: "
            f"{h.from_state.name.lower()} -> {h.to_state.name.lower()}{where}{tx}"
        )
