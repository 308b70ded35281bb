"""``gpunet runtime check``: which sandbox layers this host gives, and the resulting tier."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from node.commands.common import config_option, load_config_only

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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(
    *,
    config_path: Path | None,
    keystore: Path | None,
    device: str,
    min_tier: int | None,
    as_json: bool,
) -> None:
    """Probe every isolation layer on this host and print the resulting sandbox tier.

    Exits 1 when the tier is below the minimum (a provider would refuse to serve).
    """
    from node.runtime import detect

    cfg = load_config_only(config_path)
    minimum = cfg.provider.min_sandbox_tier if min_tier is None else min_tier
    report = detect.check((str(keystore or cfg.keystore_path),), device=device)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.to_text())
        verdict = "enough" if report.tier >= minimum else "below"
        click.echo(f"required minimum: {minimum} ({verdict})")
    if report.tier < minimum:
        click.secho(
            f"tier {report.tier} is below the minimum {minimum}: the node refuses untrusted"
            " jobs (fix the missing layers, or set [provider] allow_untrusted = true, which"
            " advertises tier 0)",
            fg="red",
            err=True,
        )
        sys.exit(1)
