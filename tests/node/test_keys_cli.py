"""Keystore files (mode 0600, no overwrite, no loose permissions) and the `gpunet keys` CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import cli
from node.keys import KeystoreError, create_keystore, load_keystore

FAST = 2**10  # scrypt cost for tests; the default (2**18) is for real keys


def test_create_and_load(tmp_path: Path) -> None:
    path = tmp_path / "k" / "keystore.json"
    identity = create_keystore(path, "pw", scrypt_n=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keystore(path, "pw") == identity
    assert json.loads(path.read_text())["address"].lower() == identity.address.hex()
    with pytest.raises(KeystoreError, match="already exists"):
        create_keystore(path, "pw", scrypt_n=FAST)
    assert load_keystore(path, "pw") == identity  # untouched by the refused overwrite
    with pytest.raises(KeystoreError):
        load_keystore(path, "wrong")


def test_loose_permissions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    create_keystore(path, "pw", scrypt_n=FAST)
    os.chmod(path, 0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        load_keystore(path, "pw")


def test_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="cannot open"):
        load_keystore(tmp_path / "missing.json", "pw")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    garbage.chmod(0o600)
    with pytest.raises(KeystoreError, match="not a JSON keystore"):
        load_keystore(garbage, "pw")
    huge = tmp_path / "huge.json"
    huge.write_text(" " * 100_000)
    huge.chmod(0o600)
    with pytest.raises(KeystoreError, match="too large"):
        load_keystore(huge, "pw")


def test_cli_keys_new_show_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import node.keys

    monkeypatch.setattr(node.keys, "encrypt_keystore", _fast_encrypt)
    path = tmp_path / "ks.json"
    runner = CliRunner()
    env = {"GPUNET_PASSWORD": "secret"}
    created = runner.invoke(cli, ["keys", "new", "--keystore", str(path)], env=env)
    assert created.exit_code == 0, created.output
    address = created.output.split("address:")[1].split()[0]
    peer_id = created.output.split("peer id:")[1].split()[0]
    shown = runner.invoke(cli, ["keys", "show", "--keystore", str(path)], env=env)
    assert shown.exit_code == 0
    assert address in shown.output and peer_id in shown.output
    exported = runner.invoke(cli, ["keys", "export-address", "--keystore", str(path)])
    assert exported.exit_code == 0
    assert exported.output.strip() == address


def test_cli_user_errors_are_one_line_with_hint(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["keys", "show", "--keystore", str(tmp_path / "nope.json")],
        env={"GPUNET_PASSWORD": "x"},
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "error: cannot open keystore" in result.output
    assert "hint:" in result.output


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "node.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "keys" in out.stdout


def _fast_encrypt(identity, password, *, scrypt_n=FAST):  # type: ignore[no-untyped-def]
    from protocol.identity import encrypt_keystore

    return encrypt_keystore(identity, password, scrypt_n=FAST)
