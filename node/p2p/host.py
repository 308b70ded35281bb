"""The hardened libp2p host: node key, TCP, Noise only, yamux, one connection per peer.

py-libp2p's defaults are unsafe or slow (shared/notes/libp2p.md §7): the
default security list also accepts ``/plaintext/2.0.0`` (a dialer can claim any
peer id), mplex deadlocks, and every dial waits 250 ms unless
``max_connections_per_peer=1``. :func:`build_host` overrides all three.
Identify (``/ipfs/id/1.0.0``) and ping (``/ipfs/ping/1.0.0``) are registered
by the basic host itself.
"""

from __future__ import annotations

import multiaddr
from libp2p import create_yamux_muxer_option, new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from node.p2p.config import P2PConfig
from protocol.identity import Identity

__all__ = [
    "NOISE_PROTOCOL_ID",
    "build_host",
    "key_pair_from_identity",
    "parse_peer_addr",
    "peer_id_of",
]


def key_pair_from_identity(identity: Identity) -> KeyPair:
    """libp2p secp256k1 key pair of the node key: its peer id equals ``identity.peer_id``."""
    key_pair = secp256k1_key_pair(identity.private_key)
    derived = ID.from_pubkey(key_pair.public_key).to_base58()
    if derived != identity.peer_id:  # the foundation's derivation must match libp2p's
        raise RuntimeError(f"libp2p derives peer id {derived}, protocol says {identity.peer_id}")
    return key_pair


def peer_id_of(identity: Identity) -> ID:
    """The libp2p ``ID`` of an identity."""
    return ID.from_base58(identity.peer_id)


def parse_peer_addr(addr: str) -> PeerInfo:
    """``/ip4/…/tcp/…/p2p/<peer id>`` -> PeerInfo; raise ValueError on anything else."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except Exception as exc:  # noqa: BLE001 - multiaddr raises a zoo of types
        raise ValueError(f"not a /p2p/ multiaddr: {addr!r:.200} ({exc})") from None


def build_host(identity: Identity, config: P2PConfig) -> IHost:
    """A host with the node key, TCP, Noise only, yamux and one connection per peer."""
    key_pair = key_pair_from_identity(identity)
    noise = NoiseTransport(key_pair, noise_privkey=x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},  # Noise ONLY: no plaintext, no secio
        muxer_opt=create_yamux_muxer_option(),  # never mplex
        listen_addrs=[multiaddr.Multiaddr(a) for a in config.listen_addrs],
        connection_config=ConnectionConfig(
            max_connections_per_peer=1,  # else every dial waits 250 ms (happy eyeballs)
            max_connections=config.max_connections,
            # the auto-connector dials known peers until (low + high) / 2; the library's
            # 100..300 would connect every node of a small network to every other
            min_connections=config.min_connections,
            low_watermark=config.min_connections,
            high_watermark=config.max_connections // 2,
        ),
        enable_mDNS=config.enable_mdns,
    )
