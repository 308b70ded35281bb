"""`gpunet runtime check` prints the layer report and exits by the tier."""

from __future__ import annotations

import json

from click.testing import CliRunner

from node.cli import cli
from node.runtime import detect


def test_runtime_check_json_matches_detection() -> None:
    res = CliRunner().invoke(cli, ["runtime", "check", "--json", "--min-tier", "0"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["tier"] == detect.check().tier
    assert set(data["layers"]) >= {"bwrap", "landlock", "seccomp", "cgroup", "uid"}


def test_runtime_check_fails_below_min_tier() -> None:
    res = CliRunner().invoke(cli, ["runtime", "check", "--min-tier", "3"])
    assert res.exit_code == 1
    assert "sandbox tier:" in res.output
