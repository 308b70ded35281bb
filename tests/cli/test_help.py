"""`gpunet --help` and every subcommand's `--help` work and stay fast; small CLI helpers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import click
from click.testing import CliRunner

from node.cli import cli


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += _paths(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def test_every_command_has_help() -> None:
    paths = _paths(cli)
    names = {p[0] for p in paths if p}
    assert {"devnet", "submit", "offers", "jobs", "stake", "unstake", "withdraw"} <= names
    assert {"balance", "provider", "keys", "runtime"} <= names
    for path in paths:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith("Usage: "), (path, result.output)


def test_top_level_help_does_not_import_torch_or_libp2p() -> None:
    code = (
        "import sys; from node.cli import main; sys.argv = ['gpunet', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'libp2p', 'aiohttp') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout
    assert "submit" in out.stdout and "devnet" in out.stdout
    assert time.monotonic() - started < 10


def test_runtime_check_reports_a_tier() -> None:
    import json

    result = CliRunner().invoke(
        cli, ["runtime", "check", "--json", "--min-tier", "0"], env={"GPUNET_CONFIG": ""}
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["tier"] in range(4) and "seccomp" in report["layers"]


def test_runtime_check_runs_the_catalog_in_the_sandbox() -> None:
    import json

    from node.runtime import catalog

    result = CliRunner().invoke(
        cli,
        ["runtime", "check", "--json", "--min-tier", "0", "--run-catalog"],
        env={"GPUNET_CONFIG": ""},
    )
    assert result.exit_code == 0, result.output
    families = json.loads(result.output)["catalog"]
    assert [f["arch"] for f in families] == [t[0] for t in catalog.TINY]
    assert all(f["ok"] and f["detail"] == "bitwise equal to a bare run" for f in families)


def test_outputs_are_never_overwritten(tmp_path: Path) -> None:
    from node.commands.market import _write_new

    path = tmp_path / "job-7.safetensors"
    assert _write_new(path, b"one") == path
    assert _write_new(path, b"two") == tmp_path / "job-7-2.safetensors"
    assert path.read_bytes() == b"one"
    assert (tmp_path / "job-7-2.safetensors").read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "job-7-2.safetensors",
        "job-7.safetensors",
    ]


def test_model_config_strings() -> None:
    import pytest

    from node.commands.common import UserError
    from node.commands.market import parse_model_config

    assert parse_model_config("width=8, classes=10,image=32") == {
        "width": 8,
        "classes": 10,
        "image": 32,
    }
    assert parse_model_config("") == {}
    assert parse_model_config("depth=-1") == {"depth": -1}
    for bad in ("width", "width=", "=8", "Width=8", "width=8.5", "width=1e3", "w=99999999999"):
        with pytest.raises(UserError):
            parse_model_config(bad)
