"""libp2p networking for gpunet: host, asyncio bridge, offer gossip, job streams, blobs.

Everything that touches py-libp2p runs in one trio thread owned by
:class:`node.p2p.bridge.TrioBridge`; asyncio code uses :class:`node.p2p.service.P2PService`.
The design and protocol ids are in ``docs/p2p.md``.
"""
