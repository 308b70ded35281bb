"""Config: defaults, the example file, TOML and environment sources, clear errors."""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.config import MAX_CONFIG_BYTES, Config, ConfigError, load_config

PEERS = "/ip4/10.0.0.1/tcp/4040/p2p/16Uiu2HAm, /dns/b/tcp/1/p2p/Qm "
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "gpunet.example.toml"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gpunet.toml"
    path.write_text(body)
    return path


def test_example_lists_every_key_with_its_default() -> None:
    assert load_config(EXAMPLE, env={}) == Config()
    raw = tomllib.loads(EXAMPLE.read_text())
    defaults = msgspec.to_builtins(Config())
    assert {s: set(v) for s, v in raw.items()} == {s: set(v) for s, v in defaults.items()}


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_config(env={}) == Config()
    config = write(tmp_path, "[api]\nport = 1234\n")
    assert load_config(env={"GPUNET_CONFIG": str(config)}).api.port == 1234


def test_file_then_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[node]\ndata_dir = "/srv/gpunet"\n[api]\nport = 1234\n[provider]\nqueue_size = 3\n',
    )
    config = load_config(
        path,
        env={
            "GPUNET_API_PORT": "9000",
            "GPUNET_P2P_MDNS": "off",
            "GPUNET_P2P_BOOTSTRAP_PEERS": PEERS,
            "GPUNET_RUNTIME_JOB_TIMEOUT_S": "12.5",
            "GPUNET_BLOBS_VERIFIER_MAX_BYTES": str(8 << 30),
            "GPUNET_PASSWORD": "not a config key",  # other GPUNET_ variables are left alone
        },
    )
    assert config.api.port == 9000
    assert config.provider.queue_size == 3
    assert config.p2p.mdns is False
    assert config.p2p.bootstrap_peers == [
        "/ip4/10.0.0.1/tcp/4040/p2p/16Uiu2HAm",
        "/dns/b/tcp/1/p2p/Qm",
    ]
    assert config.runtime.job_timeout_s == 12.5
    assert config.blobs.verifier_max_bytes == 8 << 30
    assert config.blobs.provider_max_bytes == 64 << 30  # the default
    assert config.keystore_path == Path("/srv/gpunet/keystore.json")
    assert config.api_token_path == Path("/srv/gpunet/api.token")
    assert config.resolve("/abs/file") == Path("/abs/file")


@pytest.mark.parametrize(
    ("body", "key", "text"),
    [
        ("[provider]\nmax_concurrent_jobs = 0", "provider.max_concurrent_jobs", ">= 1"),
        ("[provider]\nmax_concurent_jobs = 2", "provider.max_concurent_jobs", "unknown key"),
        ("[nodes]\nx = 1", "nodes", "unknown section"),
        ("node = 5", "node", "expected `object`"),
        ('[api]\nhost = "0.0.0.0"', "api.host", "requires auth_reads"),
        ('[api]\nport = "80"', "api.port", "expected `int`, got `str`"),
        ("[chain]\nchain_id = true", "chain.chain_id", "got `bool`"),
        ('[chain]\nescrow_address = "0x12"', "chain.escrow_address", "regex"),
        ('[chain]\nrpc_url = "ftp://x"', "chain.rpc_url", "regex"),
        ('[chain]\nws_url = "http://127.0.0.1:8545"', "chain.ws_url", "regex"),
        ('[p2p]\nlisten_addrs = ["/ip4/1.2.3.4/tcp/1", "bad"]', "p2p.listen_addrs", "[1]"),
        ('[p2p]\nbootstrap_peers = ["/ip4/1.2.3.4/tcp/1"]', "p2p.bootstrap_peers", "regex"),
        ("[provider]\nprice_per_gpu_second = -1", "provider.price_per_gpu_second", ">= 0"),
        ("[runtime]\nmemory_limit_mib = 1", "runtime.memory_limit_mib", ">= 64"),
        ("[runtime]\nkeep_child_s = -1", "runtime.keep_child_s", ">= 0"),
        ("[runtime]\nkeep_child_s = 61", "runtime.keep_child_s", "<= 60"),
        ('[node]\nlog_level = "loud"', "node.log_level", "debug"),
        ("[blobs]\nprovider_max_bytes = 0", "blobs.provider_max_bytes", ">= 1048576"),
        ("[blobs]\nclient_max_bytes = 1e9", "blobs.client_max_bytes", "expected `int`"),
        ("[blobs]\nverifier_max_bytes = 1125899906842625", "blobs.verifier_max_bytes", "<= "),
        ("[blobs]\ncollect_interval_s = 0", "blobs.collect_interval_s", ">= 1"),
    ],
)
def test_bad_file_values_name_the_key(tmp_path: Path, body: str, key: str, text: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == key
    assert key in str(info.value) and text in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    ("env", "key", "text"),
    [
        ({"GPUNET_API_PORT": "x"}, "api.port", "from GPUNET_API_PORT): expected an integer"),
        (
            {"GPUNET_API_PORT": "70000"},
            "api.port",
            "from GPUNET_API_PORT): expected `int` <= 65535",
        ),
        ({"GPUNET_API_PROT": "1"}, "api.prot", "unknown setting GPUNET_API_PROT"),
        ({"GPUNET_P2P_MDNS": "maybe"}, "p2p.mdns", "expected a boolean"),
        ({"GPUNET_CHAIN_POLL_INTERVAL_S": "fast"}, "chain.poll_interval_s", "a number"),
        ({"GPUNET_BLOBS_CLIENT_MAX_BYTES": "-1"}, "blobs.client_max_bytes", ">= 1048576"),
    ],
)
def test_bad_env_values_name_the_variable(env: dict[str, str], key: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=env | {"GPUNET_CONFIG": str(EXAMPLE)})
    assert info.value.key == key and text in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "x = ["), env={})
    with pytest.raises(ConfigError, match="larger than"):
        load_config(write(tmp_path, "#" * (MAX_CONFIG_BYTES + 1)), env={})
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"# \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad, env={})


_toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
_KEYS = {s: [*msgspec.to_builtins(Config())[s], "bogus"] for s in msgspec.to_builtins(Config())}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([*_KEYS, "bogus"]),
    st.data(),
    _toml_scalars | st.lists(_toml_scalars, max_size=3),
)
def test_any_value_is_a_config_or_a_config_error(section: str, data: Any, value: Any) -> None:
    key = data.draw(st.sampled_from(_KEYS.get(section, ["x"])))
    raw = {section: {key: value}}
    try:
        config = msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError:
        config = None
    path = Path(tempfile.gettempdir()) / f"gpunet-fuzz-{os.getpid()}.toml"
    path.write_text(_dump(raw))
    try:
        assert load_config(path, env={}) == config
    except ConfigError as exc:
        assert config is None and exc.key is not None and exc.key.split(".")[0] == section
    finally:
        path.unlink()


def _dump(raw: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, table in raw.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_literal(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if abs(v) != float("inf") else ("inf" if v > 0 else "-inf")
    if isinstance(v, list):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + "".join(_char(c) for c in v) + '"'
    return str(v)


def _char(c: str) -> str:
    return f"\\u{ord(c):04x}" if ord(c) < 0x20 or c in '"\\\x7f' else c
