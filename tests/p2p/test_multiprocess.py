"""Networks of peers in separate OS processes on loopback (2 and 10 peers)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))
from p2p_cluster import Cluster, PeerProcess

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def wait_until(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_two_processes_offer_job_and_blob() -> None:
    a = PeerProcess(dht=False)
    b = PeerProcess([a.addr], dht=False)
    try:
        b.wait_ready()
        assert wait_until(lambda: b.ask("peers", cmd="peers")["mesh"] >= 1, 30)
        b.send(cmd="publish", nonce=1)
        assert wait_until(lambda: any(o["provider"] == b.address for o in a.offers), 20)
        job = a.ask("job", cmd="job", peer=b.peer_id)
        assert job["accepted"]
        cid = b.ask("blob", cmd="put_blob", size=3_000_000)["cid"]
        for via in ("dataplane", "libp2p"):
            got = a.ask("fetched", cmd="fetch", peer=b.peer_id, cid=cid, via=via)
            assert got["size"] == 3_000_000
    finally:
        byes = [a.close(), b.close()]
    assert byes[0] is not None and byes[0]["threads"] == ["MainThread"]
    assert byes[1] is not None and byes[1]["threads"] == ["MainThread"]
    assert a.proc.returncode == 0 and b.proc.returncode == 0


def test_ten_processes_every_offer_reaches_every_peer_and_dht_finds_provider() -> None:
    with Cluster(10, extra=2) as cluster:
        peers = cluster.peers
        cluster.wait_mesh()
        for p in peers:
            p.send(cmd="publish", nonce=1)
        addresses = {p.address for p in peers}

        def everyone_has_everything() -> bool:
            return all({o["provider"] for o in p.offers} >= addresses - {p.address} for p in peers)

        assert wait_until(everyone_has_everything, 60), [len(p.offers) for p in peers]
        assert all(p.ask("book", cmd="book")["n"] >= 9 for p in peers)
        key = "12" * 32
        assert peers[3].ask("provided", cmd="provide", key=key)["ok"]

        def found() -> bool:
            return peers[3].peer_id in peers[7].ask("found", cmd="find", key=key)["providers"]

        assert wait_until(found, 30)
        byes = cluster.close()
    assert all(b is not None and b["threads"] == ["MainThread"] for b in byes), byes
    assert all(p.proc.returncode == 0 for p in peers)
