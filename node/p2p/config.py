"""Configuration of the p2p layer: addresses, gossip tuning and abuse limits."""

from __future__ import annotations

import dataclasses

__all__ = ["Limits", "P2PConfig"]


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Abuse limits; every refusal they cause is logged and counted."""

    #: largest control frame (job protocol, tickets) in bytes
    max_frame_bytes: int = 64 * 1024
    #: timeout of every read on a stream or data-plane socket, seconds
    read_timeout: float = 10.0
    #: concurrent inbound streams of our protocols per peer
    max_streams_per_peer: int = 16
    #: token bucket per peer for inbound requests (job, notice, blob, ticket), one token
    #: per message even when a stream carries several; a client sustaining 100 jobs/s
    #: with one provider spends ~200 a second (a request and a notice per job)
    requests_per_second: float = 400.0
    request_burst: int = 800
    #: token bucket per gossip forwarder
    gossip_per_second: float = 50.0
    gossip_burst: int = 200
    #: concurrent blob transfers served, in total and per peer
    max_blob_transfers: int = 16
    max_blob_transfers_per_peer: int = 8
    #: open data-plane TCP connections (before a token is checked)
    max_dataplane_connections: int = 64
    #: largest blob served or fetched
    max_blob_bytes: int = 4 << 30
    #: strikes (invalid messages, garbage frames) before a peer is banned
    strikes_to_ban: int = 5
    #: how long a banned peer is kept out, seconds
    ban_seconds: float = 300.0
    #: largest accepted offer lifetime (expiry - now), seconds
    max_offer_ttl: int = 24 * 3600


@dataclasses.dataclass(frozen=True, slots=True)
class P2PConfig:
    """How a node joins the network; every field has a default except the chain binding."""

    chain_id: int
    contract: bytes
    listen_addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    enable_mdns: bool = False
    #: connection manager: total cap, and the floor the auto-connector keeps
    max_connections: int = 128
    min_connections: int = 8
    enable_dht: bool = True
    #: gossipsub heartbeat (seconds); the library default of 120 s is far too slow
    heartbeat_interval: int = 1
    gossip_degree: tuple[int, int, int] = (6, 4, 12)
    #: gossipsub's IP-diversity (eclipse) protection; off for loopback-only networks
    eclipse_protection: bool = True
    #: our own pacing of outgoing gossip (the library drops silently above this)
    publish_per_second: float = 5.0
    publish_queue: int = 64
    #: re-publish our current offer this often, so peers that joined later learn it
    republish_seconds: float = 30.0
    #: the blob data plane (plain TCP, ticket-authenticated); port 0 = any
    data_plane_host: str = "127.0.0.1"
    data_plane_port: int = 0
    enable_data_plane: bool = True
    limits: Limits = dataclasses.field(default_factory=Limits)

    def __post_init__(self) -> None:
        if len(self.contract) != 20:
            raise ValueError("contract must be a 20-byte address")
        if self.heartbeat_interval < 1:
            raise ValueError("heartbeat_interval is at least 1 s (gossipsub takes whole seconds)")
        if self.publish_per_second <= 0 or self.publish_queue < 1:
            raise ValueError("publish rate and queue must be positive")
