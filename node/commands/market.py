"""``gpunet submit`` (run one job as a client) and ``gpunet offers`` (the order book).

``submit`` checks everything it can locally before it touches the network or
the chain: the architecture is in the catalog, the config string parses and
fits the entry's bounds, the files exist and are under the size limit, the
weights load into the architecture with ``strict=True`` and the inputs have
the shapes and dtype the entry wants. Only then does it load the key, join
the network, deposit what the job's escrow lacks, and run the job with a
progress display. The result is verified by the SDK (output hash and
attestation signature against the chain) before it is accepted and written.

The node's TOML config is ``--node-config`` here (or ``$GPUNET_CONFIG``),
because ``--config`` is the model's config (``width=8,classes=10``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from node.commands.common import (
    Context,
    Failure,
    UserError,
    chain_errors,
    check_listen,
    config_option,
    format_amount,
    keystore_override,
    load_config_only,
    open_context,
    parse_amount,
    quiet_libp2p,
)

if TYPE_CHECKING:
    from rich.console import Console

    from node.client import Result
    from node.p2p.config import P2PConfig
    from node.p2p.orderbook import BookEntry
    from protocol.identity import Identity

__all__ = ["MAX_FILE_BYTES", "offers", "parse_model_config", "submit"]

U64_MAX: Final = 2**64 - 1
#: Largest weights or inputs file (the p2p layer's blob limit).
MAX_FILE_BYTES: Final = 4 << 30
#: Progress stages reported by the SDK, in order.
STAGES: Final = (
    "selecting",
    "requesting",
    "matched",
    "running",
    "fetching",
    "verifying",
    "accepted",
)
_CONFIG_KEY: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_CONFIG_VALUE: Final = re.compile(r"^-?[0-9]{1,10}$")
_MULTIADDR: Final = re.compile(r"^(/[A-Za-z0-9._~:+-]+)+$")
_PEER_ADDR: Final = re.compile(r"^(/[A-Za-z0-9._~:+-]+)+/p2p/[1-9A-HJ-NP-Za-km-z]+$")

bootstrap_option = click.option(
    "--bootstrap",
    multiple=True,
    metavar="MULTIADDR",
    help="Peer to dial first, /ip4/…/tcp/…/p2p/<id> (repeatable; adds to [p2p] bootstrap_peers).",
)
listen_option = click.option(
    "--listen",
    multiple=True,
    metavar="MULTIADDR",
    help="libp2p listen address (default /ip4/0.0.0.0/tcp/0: any free port).",
)


# ---------------------------------------------------------------- input checks
def parse_model_config(text: str) -> dict[str, int]:
    """``width=8,classes=10`` as a dict; a malformed string is a :class:`UserError`."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not _CONFIG_KEY.match(key) or not _CONFIG_VALUE.match(value):
            raise UserError(
                f"--config: {part[:40]!r} is not key=integer",
                "write e.g. --config width=8,classes=10,image=32",
            )
        if key in out:
            raise UserError(f"--config: {key} is given twice", "give each key once")
        out[key] = int(value)
    if len(out) > 32:
        raise UserError("--config: more than 32 keys", "a catalog config has a few keys")
    return out


def _check_listen_addrs(addrs: tuple[str, ...]) -> None:
    for addr in addrs:
        if len(addr) > 256 or not _MULTIADDR.match(addr):
            raise UserError(
                f"--listen: {addr[:60]!r} is not a multiaddr", "write e.g. /ip4/0.0.0.0/tcp/4041"
            )
    check_listen(addrs, "--listen")


def _check_peer_addrs(addrs: tuple[str, ...], option: str = "--bootstrap") -> None:
    for addr in addrs:
        if len(addr) > 256 or not _PEER_ADDR.match(addr):
            raise UserError(
                f"{option}: {addr[:60]!r} is not a peer multiaddr",
                "write /ip4/<ip>/tcp/<port>/p2p/<peer id> (a provider prints it at start)",
            )


def _read_file(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise UserError(f"--{what}: {path} is not a file", "give a .safetensors file")
        if size > MAX_FILE_BYTES:
            raise UserError(
                f"--{what}: {path} is {size} bytes, over the limit of {MAX_FILE_BYTES}",
                "split the batch into several jobs",
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"--{what}: {path} does not exist", "check the path") from None
    except OSError as exc:
        raise UserError(
            f"--{what}: cannot read {path}: {exc.strerror or exc}", "check the file's permissions"
        ) from None


@dataclasses.dataclass(frozen=True)
class LocalJob:
    """A job whose files were checked locally."""

    arch: str
    config: dict[str, int]
    weights: bytes
    inputs: bytes
    input_shapes: dict[str, tuple[tuple[int, ...], str]]


def check_job(arch: str, config_text: str, weights_path: Path, inputs_path: Path) -> LocalJob:
    """Every local check of a job (see the module docstring); raises :class:`UserError`."""
    from node.runtime import catalog, formats
    from node.runtime.errors import JobError

    config = parse_model_config(config_text)
    if arch not in catalog.CATALOG:
        raise UserError(
            f"--arch: unknown architecture {arch[:64]!r}",
            f"the catalog has: {', '.join(sorted(catalog.CATALOG))}",
        )
    try:
        entry = catalog.get(arch)
    except JobError as exc:
        raise UserError(f"--arch: {exc.message}", "reinstall gpunet") from None
    try:
        resolved = entry.resolve(config)
        catalog.build(arch, config)
    except JobError as exc:
        raise UserError(
            f"--config: {exc.message}",
            f"keys of {arch}: "
            + ", ".join(f"{k} in [{lo}, {hi}]" for k, (lo, hi, _) in entry.bounds.items()),
        ) from None
    weights = _read_file(weights_path, "weights")
    inputs = _read_file(inputs_path, "inputs")
    try:
        model = formats.load_model(arch, config, weights)
    except JobError as exc:
        raise UserError(
            f"--weights: {_job_error_text(exc)}",
            f"the weights must be a safetensors state dict of {arch} with this --config",
        ) from None
    try:
        tensors = formats.parse_safetensors(inputs, "inputs")
        entry.inputs(resolved, tensors, formats.model_dtype(model))
    except JobError as exc:
        raise UserError(
            f"--inputs: {_job_error_text(exc)}",
            f"see the input spec of {arch} in docs/cli.md",
        ) from None
    shapes = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()}
    return LocalJob(arch, config, weights, inputs, shapes)


def _job_error_text(exc: Exception) -> str:
    return str(getattr(exc, "message", exc))


# ---------------------------------------------------------------- progress
class _Display:
    """The SDK's ``progress(stage, detail)`` callback as a rich progress bar."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("joining the network", total=len(STAGES))

    def __enter__(self) -> _Display:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, stage: str, detail: str) -> None:
        done = STAGES.index(stage) + 1 if stage in STAGES else None
        self.progress.update(self.task, description=f"{stage}: {detail}"[:90], completed=done)
        if not self.console.is_terminal:
            self.console.print(f"{stage}: {detail}", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- submit
@click.command()
@click.option("--arch", required=True, help="Catalog architecture, e.g. resnet18@1.")
@click.option(
    "--config", "model_config", default="", metavar="K=V,…", help="The model's config integers."
)
@click.option(
    "--weights", required=True, type=click.Path(path_type=Path), help="safetensors weights."
)
@click.option(
    "--inputs", required=True, type=click.Path(path_type=Path), help="safetensors input tensors."
)
@click.option(
    "--max-price",
    "max_price_text",
    metavar="N",
    help="Max price per GPU-second (default [client]).",
)
@click.option(
    "--max-gpu-seconds",
    type=click.FloatRange(min=0.001, max=86_400),
    default=10.0,
    show_default=True,
    help="Metered time budget; the escrow locks max price x this.",
)
@click.option(
    "--deadline", type=click.IntRange(10, 7 * 86_400), help="Seconds to finish (default [client])."
)
@click.option(
    "--min-tier", type=click.IntRange(0, 3), help="Lowest sandbox tier (default [client])."
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Output safetensors file."
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0, max=600),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the first offer.",
)
@bootstrap_option
@listen_option
@click.option(
    "--node-config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="GPUNET_CONFIG",
    help="The node's TOML config (default ~/.gpunet/gpunet.toml if it exists).",
)
@keystore_override
def submit(
    *,
    arch: str,
    model_config: str,
    weights: Path,
    inputs: Path,
    max_price_text: str | None,
    max_gpu_seconds: float,
    deadline: int | None,
    min_tier: int | None,
    out: Path | None,
    wait: float,
    bootstrap: tuple[str, ...],
    listen: tuple[str, ...],
    config_path: Path | None,
    keystore: Path | None,
) -> None:
    """Run one inference job on the marketplace and write its verified output."""
    from rich.console import Console

    from protocol import pricing

    cfg = load_config_only(config_path)
    max_price = (
        cfg.client.max_price_per_gpu_second
        if max_price_text is None
        else parse_amount(max_price_text, "--max-price", U64_MAX)
    )
    max_millis = max(1, round(max_gpu_seconds * 1000))
    max_payment = pricing.max_payment_for(max_price, max_millis)
    if max_payment > U64_MAX:
        raise UserError(
            f"--max-price x --max-gpu-seconds is {max_payment}, over the limit 2**64-1",
            "lower --max-price or --max-gpu-seconds",
        )
    _check_peer_addrs(bootstrap)
    _check_listen_addrs(listen)
    if out is not None and out.exists():
        raise UserError(f"--out: {out} already exists", "remove it or choose another path")
    if out is not None and not out.parent.is_dir():
        raise UserError(f"--out: {out.parent} is not a directory", "create it first")
    job = check_job(arch, model_config, weights, inputs)

    ctx = open_context(config_path, keystore)
    console = Console(stderr=True, highlight=False)
    click.echo(
        f"job: {arch} {_config_text(job.config)}, weights {len(job.weights)} B, "
        f"inputs {len(job.inputs)} B ({_shapes_text(job.input_shapes)})"
    )
    click.echo(
        f"max price {max_price}/GPU-s, budget {max_millis} ms -> escrow up to "
        f"{format_amount(max_payment)}"
    )
    try:
        result = _run(
            ctx,
            job,
            console=console,
            bootstrap=bootstrap,
            listen=listen,
            wait=wait,
            max_price=max_price,
            max_millis=max_millis,
            max_payment=max_payment,
            deadline_s=cfg.client.default_deadline_s if deadline is None else deadline,
            min_tier=cfg.client.min_sandbox_tier if min_tier is None else min_tier,
        )
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: say what the escrow still holds
        _warn_in_flight(ctx.data_dir / "client")
        raise
    _report(result, out)


_BUSY = "retry later; the provider may be busy"
#: What the user can change for each DeclineReason (protocol/messages.py).
_DECLINE_HINTS: Final = {
    "price": "raise --max-price (see the prices with: gpunet offers)",
    "deadline": "give the job more time with --deadline",
    "size": "send a smaller batch (split it into several jobs)",
    "tier": "lower --min-tier, or find a provider with a stronger sandbox",
    "format": "this provider does not take the job's format",
    "unknown_model": "this provider does not run this --arch",
    "determinism": "this provider cannot run the job in the determinism tier asked for",
    "bad_request": "the provider refused the request as malformed; check the inputs",
    "rate_limited": "wait a moment before the next request",
}


def _warn_in_flight(client_dir: Path) -> None:
    """Name the client's jobs an interrupted submit leaves in flight, and who settles them."""
    from node.store import STORE_FILE, Role, Store

    try:
        with Store(client_dir / STORE_FILE) as store:
            left = store.jobs.in_flight(Role.CLIENT)
    except Exception:  # noqa: BLE001 - a best-effort notice on the way out
        return
    onchain = [str(j.job_id) for j in left if j.job_id is not None]
    if onchain:
        many = len(onchain) > 1
        jobs, its, it = ("jobs", "their payments", "them") if many else ("job", "its payment", "it")
        click.echo(
            f"{jobs} {', '.join(onchain)} left in flight, {its} locked in the escrow: "
            f"`gpunet client serve` or the next `gpunet submit` with this config settles {it} "
            "(a result is followed to finalization, a missing one refunded after the deadline)",
            err=True,
        )


def _config_text(config: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()) or "(defaults)"


def _shapes_text(shapes: dict[str, tuple[tuple[int, ...], str]]) -> str:
    return ", ".join(f"{k} {dt}{list(shape)}" for k, (shape, dt) in sorted(shapes.items()))


def _run(
    ctx: Context,
    job: LocalJob,
    *,
    console: Console,
    bootstrap: tuple[str, ...],
    listen: tuple[str, ...],
    wait: float,
    max_price: int,
    max_millis: int,
    max_payment: int,
    deadline_s: int,
    min_tier: int,
) -> Result:
    from node.client import Client
    from node.commands.money import deposit_shortfall
    from node.errors import (
        AttestationInvalid,
        DeadlineMissed,
        GpunetError,
        JobFailed,
        NoMatchingOffer,
        ProviderDeclined,
    )

    quiet_libp2p()
    try:
        client = Client(
            ctx.identity,
            rpc_url=ctx.config.chain.rpc_url,
            escrow_address=ctx.escrow.address,
            p2p_config=ctx.p2p_config(listen=listen or ("/ip4/0.0.0.0/tcp/0",)),
            data_dir=ctx.data_dir / "client",
            max_blob_bytes=ctx.config.blobs.client_max_bytes,
            blob_collect_s=ctx.config.blobs.collect_interval_s,
        )
    except Exception as exc:  # noqa: BLE001 - a node that cannot start is one clear line
        raise Failure(
            f"cannot join the network: {str(exc)[:200] or type(exc).__name__}",
            "check --listen and [p2p] in the config",
        ) from None
    try:
        for addr in bootstrap:
            try:
                client.connect(addr)
            except Exception as exc:  # noqa: BLE001 - any dial failure is one clear line
                raise Failure(
                    f"cannot reach {addr}: {str(exc)[:200] or type(exc).__name__}",
                    "is the provider running, and the address the one it printed?",
                ) from None
        seen = client.wait_for_offers(1, within=wait)
        if seen == 0:
            raise Failure(
                f"no offers seen within {wait:g} s",
                "give a provider with --bootstrap, or wait longer with --wait",
            )
        time.sleep(min(1.0, wait))  # let the rest of the book arrive
        deposit_shortfall(ctx, max_payment, "the job's escrow")
        with _Display(console) as display, chain_errors("running the job"):
            try:
                return client.run(
                    (job.arch, job.config, job.weights),
                    job.inputs,
                    max_price=max_price,
                    max_gpu_millis=max_millis,
                    deadline_s=deadline_s,
                    min_tier=min_tier,
                    progress=display,
                )
            except NoMatchingOffer as exc:
                reasons = "; ".join(
                    f"{who}: {', '.join(why)}" for who, why in sorted(exc.reasons.items())
                )
                raise Failure(
                    f"no matching offer among {exc.offers_seen} seen"
                    + (f" ({reasons})" if reasons else ""),
                    "raise --max-price, lower --min-tier, or add providers with --bootstrap",
                ) from None
            except ProviderDeclined as exc:
                raise Failure(str(exc), _DECLINE_HINTS.get(exc.reason.value, _BUSY)) from None
            except DeadlineMissed as exc:
                raise Failure(str(exc), "the escrow was refunded; retry the job") from None
            except AttestationInvalid as exc:
                raise Failure(
                    f"the result did not verify: {exc}",
                    "nothing was accepted; the escrow refunds after the deadline",
                ) from None
            except (JobFailed, GpunetError) as exc:
                raise Failure(str(exc), "see the provider's message above") from None
    finally:
        client.close()


def _report(result: Result, out: Path | None) -> None:
    from protocol.identity import checksum_address

    att = result.attestation
    att.verify()  # the SDK checked it before accepting; say so only after checking again
    digest = hashlib.sha256(result.output_bytes).hexdigest()
    path = _write_new(out or Path(f"job-{result.job_id}.safetensors"), result.output_bytes)
    rows = [
        ("job id", str(result.job_id)),
        ("provider", checksum_address(result.provider)),
        ("price", f"{result.price_per_gpu_second}/GPU-s"),
        ("cost", format_amount(result.cost)),
        ("refund", format_amount(result.refund)),
        ("gas", str(result.gas_used)),
        ("latency", f"{result.latency_s:.2f} s"),
        ("output", f"sha256:{digest} ({len(result.output_bytes)} B)"),
    ]
    for name, tensor in sorted(result.outputs.items()):
        dtype = str(tensor.dtype).removeprefix("torch.")
        rows.append((f"  {name}", f"{dtype}{list(tensor.shape)}"))
    rows += [
        ("written", str(path)),
        ("attestation", f"job {att.job_id}, signer {checksum_address(att.provider)}"),
        ("  output hash", "0x" + att.output_hash.hex()),
        ("  spec hash", "0x" + att.spec_hash.hex()),
        ("  runtime", att.runtime),
        ("  determinism", att.determinism.name.lower()),
        ("  metered", f"{att.metered_millis} ms"),
        ("  verified", "yes: signature, job, spec and output hash match the chain"),
    ]
    for who, reason in result.declined_by:
        rows.append(("declined by", f"{who} ({reason.value})"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


def _write_new(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new file (atomically, never overwriting); returns the path used.

    If ``path`` exists by now, ``<stem>-2<suffix>``, ``-3`` … is used instead:
    a paid-for result is never dropped.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    try:
        for n in range(1, 1000):
            target = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
            try:
                os.link(tmp, target)
            except FileExistsError:
                continue
            return target
    finally:
        tmp.unlink()
    raise Failure(f"cannot write the output next to {path}", "free a file name there")


# ---------------------------------------------------------------- offers
@click.command()
@config_option
@bootstrap_option
@listen_option
@click.option(
    "--wait",
    type=click.FloatRange(min=0, max=600),
    default=5.0,
    show_default=True,
    help="Seconds to collect gossip.",
)
def offers(
    config_path: Path | None, bootstrap: tuple[str, ...], listen: tuple[str, ...], wait: float
) -> None:
    """Join the network for a few seconds and print the offers seen (cheapest first)."""
    import asyncio

    from node.p2p.config import P2PConfig
    from protocol.errors import IdentityError
    from protocol.identity import Identity, parse_address

    cfg = load_config_only(config_path)
    _check_peer_addrs(bootstrap)
    _check_listen_addrs(listen)
    if not cfg.chain.escrow_address:
        raise UserError(
            "no escrow contract configured ([chain] escrow_address)",
            "offers are bound to one escrow; gpunet devnet up prints the [chain] section",
        )
    try:
        contract = parse_address(cfg.chain.escrow_address)
    except IdentityError as exc:
        raise UserError(f"[chain] escrow_address: {exc}", "fix the config") from None
    p2p = P2PConfig(
        chain_id=cfg.chain.chain_id,
        contract=contract,
        listen_addrs=listen or ("/ip4/0.0.0.0/tcp/0",),
        bootstrap=tuple(cfg.p2p.bootstrap_peers),
        enable_mdns=cfg.p2p.mdns,
    )
    quiet_libp2p()
    # a throwaway identity: listening needs no key, so no password either
    entries = asyncio.run(_collect(Identity.generate(), p2p, bootstrap, wait))
    _print_book(entries)


async def _collect(
    identity: Identity, p2p: P2PConfig, bootstrap: tuple[str, ...], wait: float
) -> list[BookEntry]:
    import asyncio

    from node.p2p.service import P2PService

    service = P2PService(identity, p2p)
    await service.start()
    try:
        for addr in bootstrap:
            try:
                await service.connect(addr)
            except Exception as exc:  # noqa: BLE001 - any dial failure is one clear line
                raise Failure(
                    f"cannot reach {addr}: {str(exc)[:200] or type(exc).__name__}",
                    "is the peer running, and the address the one it printed?",
                ) from None
        await asyncio.sleep(wait)
        return list(service.query(limit=10_000))
    finally:
        await service.stop()


def _print_book(entries: list[BookEntry]) -> None:
    from rich.console import Console
    from rich.table import Table

    from protocol.identity import checksum_address

    if not entries:
        click.echo("no offers seen (give a peer with --bootstrap, or wait longer with --wait)")
        return
    now = int(time.time())
    table = Table(title=f"{len(entries)} offer(s)", title_justify="left")
    for col in ("provider", "price/GPU-s", "device", "gpus", "mem MiB", "tier", "max job B"):
        table.add_column(col, justify="right" if col not in ("provider", "device") else "left")
    table.add_column("expires")
    table.add_column("peer")
    for e in sorted(entries, key=lambda e: (e.offer.price_per_gpu_second, e.offer.provider)):
        o, caps = e.offer, e.offer.capabilities
        device = caps.device_class + (f" {caps.gpu_model}" if caps.gpu_model else "")
        table.add_row(
            checksum_address(o.provider),
            str(o.price_per_gpu_second),
            device,
            str(caps.gpu_count),
            str(caps.gpu_memory_mib),
            str(caps.sandbox_tier),
            str(caps.max_job_bytes),
            f"in {o.expiry - now} s",
            e.peer_id,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=250)
    console.print(table)
