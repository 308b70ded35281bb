"""The hardened host: Noise only (a plaintext dialer is refused), yamux, identify, ping."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from conftest import make_config
from libp2p import create_yamux_muxer_option, new_host
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from node.p2p.node import P2PNode
from protocol.identity import Identity

pytestmark = pytest.mark.timeout(60)


def test_plaintext_dialer_is_refused_and_noise_peer_is_accepted() -> None:
    async def main() -> None:
        victim = P2PNode(Identity.generate(), make_config(enable_dht=False))
        honest = P2PNode(Identity.generate(), make_config(enable_dht=False))
        async with trio.open_nursery() as nursery:
            await nursery.start(victim.run)
            await nursery.start(honest.run)
            addr = victim.addrs()[0]
            assert victim.host.get_id().to_base58() == victim.identity.peer_id

            # an attacker offering only /plaintext/2.0.0, claiming the honest peer's id
            # would be possible with the library default; here the dial must fail
            kp = create_new_key_pair()
            attacker = new_host(
                key_pair=kp,
                sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)},
                muxer_opt=create_yamux_muxer_option(),
                listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")],
                connection_config=ConnectionConfig(max_connections_per_peer=1),
            )
            async with attacker.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                with pytest.raises(Exception) as info:
                    with trio.fail_after(10):
                        await attacker.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))
                assert not isinstance(info.value, trio.TooSlowError)
                await trio.sleep(0.2)
                assert kp.public_key not in [
                    victim.host.get_peerstore().pubkey(p) for p in victim.host.get_connected_peers()
                ]
                assert victim.connected_peers() == []

            # an honest Noise peer connects, and its authenticated id is its node key
            with trio.fail_after(10):
                pid = await honest.connect(addr)
            assert pid == victim.identity.peer_id
            await trio.sleep(0.3)
            assert victim.connected_peers() == [honest.identity.peer_id]
            protocols = victim.host.get_mux().get_protocols()
            for proto in ("/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/gpunet/job/1.0.0"):
                assert proto in protocols
            nursery.cancel_scope.cancel()

    trio.run(main)
