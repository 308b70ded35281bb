"""``gpunet runtime check``: which sandbox layers this host gives, and the resulting tier."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from node.commands.common import config_option, load_config_only

if TYPE_CHECKING:
    from node.runtime.selftest import FamilyCheck

__all__ = ["runtime"]


@click.group()
def runtime() -> None:
    """Inspect the sandboxed PyTorch runtime (isolation layers, tier, devices)."""


@runtime.command("check")
@config_option
@click.option(
    "--keystore",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keystore the workers must not reach (default: the config's).",
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda:N")
@click.option(
    "--min-tier",
    type=click.IntRange(0, 3),
    default=None,
    help="Tier to require (default: [provider] min_sandbox_tier).",
)
@click.option(
    "--run-catalog",
    is_flag=True,
    help="Also run one tiny job of every catalog family in a sandboxed pool and compare"
    " each output with a bare run (checks this build works under every layer).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(
    *,
    config_path: Path | None,
    keystore: Path | None,
    device: str,
    min_tier: int | None,
    run_catalog: bool,
    as_json: bool,
) -> None:
    """Probe every isolation layer on this host and print the resulting sandbox tier.

    Exits 1 when the tier is below the minimum (a provider would refuse to serve), or
    with --run-catalog when a family fails in the sandbox or differs from a bare run.
    """
    from node.runtime import detect

    cfg = load_config_only(config_path)
    minimum = cfg.provider.min_sandbox_tier if min_tier is None else min_tier
    keystores = (str(keystore or cfg.keystore_path),)
    report = detect.check(keystores, device=device)
    families = None
    if run_catalog and report.tier >= minimum:
        families = _run_catalog(device, keystores, minimum, cfg.runtime.memory_limit_mib)
    if as_json:
        out = report.to_dict()
        if families is not None:
            out["catalog"] = [dataclasses.asdict(f) for f in families]
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(report.to_text())
        verdict = "enough" if report.tier >= minimum else "below"
        click.echo(f"required minimum: {minimum} ({verdict})")
        for f in families or ():
            mark = "ok" if f.ok else "FAILED"
            click.echo(f"catalog {f.arch:<11} {mark:<6} {f.detail} ({f.sandbox_ms:.0f} ms)")
    if families is not None and not all(f.ok for f in families):
        bad = ", ".join(f.arch for f in families if not f.ok)
        click.secho(f"catalog families failing in the sandbox: {bad}", fg="red", err=True)
        sys.exit(1)
    if report.tier < minimum:
        click.secho(
            f"tier {report.tier} is below the minimum {minimum}: the node refuses untrusted"
            " jobs (fix the missing layers, or set [provider] allow_untrusted = true, which"
            " advertises tier 0)",
            fg="red",
            err=True,
        )
        sys.exit(1)


def _run_catalog(
    device: str, keystores: tuple[str, ...], minimum: int, memory_mib: int
) -> list[FamilyCheck]:
    from node.runtime import selftest
    from node.runtime.pool import PoolConfig, WorkerPool

    mode = "lease" if device.startswith("cuda") else "fork"
    cfg = PoolConfig(
        device=device,
        mode=mode,
        min_tier=minimum,
        memory_bytes=memory_mib << 20,
        keystores=keystores,
    )
    with WorkerPool(cfg) as pool:
        return selftest.run_catalog(pool)
