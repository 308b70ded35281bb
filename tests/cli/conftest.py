"""Fixtures for the CLI tests: one devnet started by ``gpunet devnet up`` per module.

The devnet is the real thing (anvil detached in its own session); teardown
runs ``gpunet devnet down`` and checks that no process of it is left.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from node.cli import cli
from node.commands.devnet import _group_alive
from node.keys import create_keystore
from protocol.identity import Identity

PASSWORD = "cli-test"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``gpunet *args`` in-process."""
    return CliRunner().invoke(cli, list(args), env={"GPUNET_PASSWORD": PASSWORD, **(env or {})})


def assert_user_error(result: Result, *needles: str, code: int = 2) -> None:
    """Exit ``code``, one ``error:`` line then one ``hint:`` line on stderr, no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), lines
    for needle in needles:
        assert needle in lines[0], lines


@dataclasses.dataclass
class Node:
    """A keystore and a config file pointing at the devnet."""

    home: Path
    config: Path
    identity: Identity

    def run(self, *args: str) -> Result:
        return invoke(*args, "--config", str(self.config))


def make_node(home: Path, state: dict[str, object], extra: str = "") -> Node:
    home.mkdir(parents=True, exist_ok=True)
    identity = create_keystore(home / "keystore.json", PASSWORD, scrypt_n=2**10)
    config = home / "gpunet.toml"
    config.write_text(
        f'[node]\ndata_dir = "{home}"\nlog_level = "warning"\n\n'
        f'[chain]\nrpc_url = "{state["rpc_url"]}"\nchain_id = {state["chain_id"]}\n'
        f'escrow_address = "{state["escrow_address"]}"\npoll_interval_s = 0.05\n\n' + extra
    )
    return Node(home, config, identity)


@pytest.fixture(scope="module")
def devnet_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    state_dir = tmp_path_factory.mktemp("devnet")
    up = invoke("devnet", "up", "--dir", str(state_dir))
    assert up.exit_code == 0, up.output
    state = json.loads((state_dir / "devnet.json").read_text())
    state["dir"] = str(state_dir)
    try:
        yield state
    finally:
        down = invoke("devnet", "down", "--dir", str(state_dir))
        assert down.exit_code == 0, down.output
        assert not _group_alive(int(state["anvil_pid"]))


def fund(state: dict[str, object], node: Node, amount: str = "1000e18") -> None:
    """``gpunet devnet up --fund`` on the running devnet."""
    result = invoke(
        "devnet", "up", "--dir", str(state["dir"]), "--fund", node.identity.checksum_address,
        "--amount", amount,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "already running" in result.output


def live_processes(matches: Callable[[Path], bool]) -> list[int]:
    """Pids of live (not zombie) processes whose ``/proc/<pid>`` dir ``matches``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if matches(entry):
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def holds_open(target: Path) -> Callable[[Path], bool]:
    """A :func:`live_processes` test: the process has ``target`` open."""
    name = str(target.resolve())
    return lambda proc: any(os.readlink(fd) == name for fd in (proc / "fd").iterdir())
