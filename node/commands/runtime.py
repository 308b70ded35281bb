"""``gpunet runtime check``: which sandbox layers this host gives, and the resulting tier."""

from __future__ import annotations

import json
from pathlib import Path

import click

from node.commands.common import config_option, load_config_only

__all__ = ["runtime"]


@click.group()
def runtime() -> None:
    """The sandboxed PyTorch runtime of this host."""


@runtime.command("check")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(config_path: Path | None, as_json: bool) -> None:
    """Probe every isolation layer and print the sandbox tier (a provider needs [provider]
    min_sandbox_tier)."""
    from node.runtime import detect

    cfg = load_config_only(config_path)
    report = detect.check((str(cfg.keystore_path),))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(report.to_text())
    minimum = cfg.provider.min_sandbox_tier
    verdict = "enough" if report.tier >= minimum else "below"
    click.echo(f"provider minimum: {minimum} ({verdict})")
