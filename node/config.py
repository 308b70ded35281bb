"""Node configuration: one TOML file, every key defaulted, environment overrides.

Sources, later wins: the defaults below, the TOML file, then environment
variables ``GPUNET_<SECTION>_<KEY>`` (e.g. ``GPUNET_API_PORT=9000``,
``GPUNET_P2P_BOOTSTRAP_PEERS=/ip4/1.2.3.4/tcp/4040/p2p/16U...,/dns/x/tcp/4040/p2p/16U...``;
booleans ``true/false/1/0/yes/no/on/off``, lists comma separated). Unknown
keys, unknown ``GPUNET_<SECTION>_*`` variables, wrong types and values out of
range are one :class:`ConfigError` naming the key and where it came from.
``docs/gpunet.example.toml`` lists every key with its default.

Relative paths in ``[node]`` and ``[api]`` are relative to ``node.data_dir``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args, get_origin

import msgspec

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "MAX_CONFIG_BYTES",
    "ApiConfig",
    "BlobsConfig",
    "ChainConfig",
    "ClientConfig",
    "Config",
    "ConfigError",
    "NodeConfig",
    "P2PConfig",
    "ProviderConfig",
    "RuntimeConfig",
    "load_config",
]

#: Largest config file accepted.
MAX_CONFIG_BYTES: Final = 64 * 1024
#: Environment variable naming the config file.
CONFIG_ENV: Final = "GPUNET_CONFIG"
DEFAULT_CONFIG_PATH: Final = Path("~/.gpunet/gpunet.toml")

# TOML integers are signed 64-bit, so amounts here stop at 2**63 - 1.
U64 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
PathText = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
Multiaddr = Annotated[str, msgspec.Meta(max_length=256, pattern=r"^(/[A-Za-z0-9._~:+-]+)+$")]
PeerAddr = Annotated[
    str, msgspec.Meta(max_length=256, pattern=r"^(/[A-Za-z0-9._~:+-]+)+/p2p/[1-9A-HJ-NP-Za-km-z]+$")
]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and its source."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class NodeConfig(_Section, frozen=True, kw_only=True):
    """[node]: where the node keeps its files."""

    data_dir: PathText = "~/.gpunet"
    keystore: PathText = "keystore.json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class ChainConfig(_Section, frozen=True, kw_only=True):
    """[chain]: the EVM chain and the escrow contract."""

    rpc_url: Annotated[str, msgspec.Meta(max_length=512, pattern=r"^(https?|wss?)://[^\s]+$")] = (
        "http://127.0.0.1:8545"
    )
    # pushed escrow logs (eth_subscribe over a websocket): "auto" (the RPC URL's host
    # and port, given up if it does not work), "" (off), or a ws(s):// URL
    ws_url: Annotated[str, msgspec.Meta(max_length=512, pattern=r"^(auto|wss?://[^\s]+)?$")] = (
        "auto"
    )
    chain_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] = 31337
    escrow_address: Annotated[str, msgspec.Meta(pattern=r"^(0x[0-9a-fA-F]{40})?$")] = ""
    confirmations: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 1
    reorg_depth: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    poll_interval_s: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 1.0
    rpc_timeout_s: Annotated[float, msgspec.Meta(ge=0.1, le=300)] = 10.0


class P2PConfig(_Section, frozen=True, kw_only=True):
    """[p2p]: libp2p listening and discovery."""

    listen_addrs: Annotated[list[Multiaddr], msgspec.Meta(max_length=16)] = msgspec.field(
        default_factory=lambda: ["/ip4/0.0.0.0/tcp/4040"]
    )
    bootstrap_peers: Annotated[list[PeerAddr], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )
    mdns: bool = True


class ProviderConfig(_Section, frozen=True, kw_only=True):
    """[provider]: what a provider charges and how much it takes on."""

    price_per_gpu_second: U64 = 1_000_000_000
    max_concurrent_jobs: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    queue_size: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 16
    min_sandbox_tier: Annotated[int, msgspec.Meta(ge=0, le=3)] = 2
    allow_untrusted: bool = False
    offer_interval_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 10.0
    offer_ttl_s: Annotated[int, msgspec.Meta(ge=10, le=86_400)] = 60


class ClientConfig(_Section, frozen=True, kw_only=True):
    """[client]: defaults for jobs this node submits."""

    max_price_per_gpu_second: U64 = 10_000_000_000
    default_deadline_s: Annotated[int, msgspec.Meta(ge=10, le=7 * 86_400)] = 600
    min_sandbox_tier: Annotated[int, msgspec.Meta(ge=0, le=3)] = 2


#: Bounds of a blob store's size: 1 MiB (one job's blobs must fit) to 1 PiB.
BlobStoreBytes = Annotated[int, msgspec.Meta(ge=1 << 20, le=1 << 50)]


class BlobsConfig(_Section, frozen=True, kw_only=True):
    """[blobs]: how much disk each role's blob store may use (docs/architecture.md,
    "Blob store bounds"). Past it, the least recently used blobs the role no longer
    owes or needs are deleted, down to 90 %; blobs it still owes stay even past it."""

    provider_max_bytes: BlobStoreBytes = 64 << 30
    client_max_bytes: BlobStoreBytes = 64 << 30
    verifier_max_bytes: BlobStoreBytes = 64 << 30
    collect_interval_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 30.0


class ApiConfig(_Section, frozen=True, kw_only=True):
    """[api]: the local HTTP API."""

    enabled: bool = True
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65_535)] = 8760
    token_file: PathText = "api.token"
    auth_reads: bool = False
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 << 20)] = 1 << 20
    max_blob_bytes: Annotated[int, msgspec.Meta(ge=1024, le=4 << 30)] = 256 << 20

    def __post_init__(self) -> None:
        if not self.auth_reads and not _is_loopback(self.host):
            raise ValueError(
                f"host: binding to the non-loopback host {self.host!r} requires auth_reads = true"
            )


class RuntimeConfig(_Section, frozen=True, kw_only=True):
    """[runtime]: the sandboxed worker pool."""

    pool_size: Annotated[int, msgspec.Meta(ge=1, le=256)] = 2
    job_timeout_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 300.0
    memory_limit_mib: Annotated[int, msgspec.Meta(ge=64, le=1 << 20)] = 4096
    #: a sandbox child that ran a client's job is kept this long for that client's next
    #: job on the same model (docs/runtime.md §5); 0: a fresh child for every job
    keep_child_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.5


class Config(_Section, frozen=True, kw_only=True):
    """The whole configuration."""

    node: NodeConfig = msgspec.field(default_factory=NodeConfig)
    chain: ChainConfig = msgspec.field(default_factory=ChainConfig)
    p2p: P2PConfig = msgspec.field(default_factory=P2PConfig)
    provider: ProviderConfig = msgspec.field(default_factory=ProviderConfig)
    client: ClientConfig = msgspec.field(default_factory=ClientConfig)
    blobs: BlobsConfig = msgspec.field(default_factory=BlobsConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)

    @property
    def data_dir(self) -> Path:
        """``node.data_dir`` with ``~`` expanded."""
        return Path(self.node.data_dir).expanduser()

    def resolve(self, path: str) -> Path:
        """A path from the config: ``~`` expanded, relative ones under the data dir."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.data_dir / p

    @property
    def keystore_path(self) -> Path:
        """The node's keystore file."""
        return self.resolve(self.node.keystore)

    @property
    def api_token_path(self) -> Path:
        """The API's bearer-token file."""
        return self.resolve(self.api.token_file)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_SECTIONS: Final[dict[str, type[_Section]]] = {
    f.name: f.type for f in msgspec.structs.fields(Config)
}
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_FIELD = re.compile(r"^(?P<key>[a-z_]+): (?P<rest>.*)$", re.DOTALL)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def load_config(path: Path | str | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the TOML file, then ``GPUNET_<SECTION>_<KEY>`` variables.

    ``path`` None means ``$GPUNET_CONFIG``, else ``~/.gpunet/gpunet.toml`` if it
    exists, else no file. A path that was named explicitly must exist.
    """
    env = os.environ if env is None else env
    source = "defaults"
    raw: dict[str, Any] = {}
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    elif path is None and DEFAULT_CONFIG_PATH.expanduser().is_file():
        path = DEFAULT_CONFIG_PATH.expanduser()
    if path is not None:
        source = str(path)
        raw = _read_toml(Path(path))
    sources = _apply_env(raw, env)
    try:
        return msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc), source, sources) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config: {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config: {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Merge ``GPUNET_<SECTION>_<KEY>`` variables into ``raw``; return key -> variable."""
    sources: dict[str, str] = {}
    defaults = Config()
    for name, value in sorted(env.items()):
        section = next((s for s in _SECTIONS if name.startswith(f"GPUNET_{s.upper()}_")), None)
        if section is None:
            continue
        key = name[len(f"GPUNET_{section}_") :].lower()
        fields = {f.name for f in msgspec.structs.fields(_SECTIONS[section])}
        if key not in fields:
            raise ConfigError(
                f"config: unknown setting {name} "
                f"(keys of [{section}]: {', '.join(sorted(fields))})",
                f"{section}.{key}",
            )
        default = getattr(getattr(defaults, section), key)
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            continue  # the file's error is reported by validation
        table[key] = _parse_env(name, value, default, f"{section}.{key}")
        sources[f"{section}.{key}"] = name
    return sources


def _parse_env(name: str, value: str, default: object, key: str) -> object:
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(
            f"config: {key} (from {name}): expected a boolean, got {value!r:.80}", key
        )
    if isinstance(default, int | float):
        try:
            return int(text) if isinstance(default, int) else float(text)
        except ValueError:
            kind = "an integer" if isinstance(default, int) else "a number"
            raise ConfigError(
                f"config: {key} (from {name}): expected {kind}, got {value!r:.80}", key
            ) from None
    if isinstance(default, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _choices(key: str) -> list[str]:
    section, _, name = key.partition(".")
    for field in msgspec.structs.fields(_SECTIONS.get(section, Config)):
        if field.name == name and get_origin(field.type) is Literal:
            return [str(a) for a in get_args(field.type)]
    return []


def _explain(message: str, source: str, env_sources: Mapping[str, str]) -> ConfigError:
    match = _AT.match(message)
    assert match is not None
    text, path = match["msg"], (match["path"] or "").lstrip(".")
    unknown = _UNKNOWN.match(text)
    if unknown:
        key = f"{path}.{unknown['field']}" if path else unknown["field"]
        what = "unknown section" if not path else "unknown key"
        return ConfigError(f"config: {key} (from {source}): {what}", key)
    field = _FIELD.match(text)  # a cross-field check in __post_init__ names its key
    if field:
        path, text = f"{path}.{field['key']}" if path else field["key"], field["rest"]
    key = re.sub(r"\[\d+\]$", "", path) or "config"
    origin = env_sources.get(key, source)
    if text.startswith("Invalid enum value"):
        text += f" (one of: {', '.join(_choices(key))})"
    text = text[0].lower() + text[1:] if text else "invalid value"
    return ConfigError(f"config: {path or 'config'} (from {origin}): {text}", key)
