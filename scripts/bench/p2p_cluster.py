"""Drive a network of ``p2p_peer.py`` processes on loopback (tests and benchmarks)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PEER_SCRIPT = Path(__file__).with_name("p2p_peer.py")


class PeerProcess:
    """One peer process; events arrive on a reader thread."""

    def __init__(
        self, bootstrap: list[str] | None = None, *, dht: bool = True, store: str = ""
    ) -> None:
        args = [sys.executable, str(PEER_SCRIPT)]
        if store:
            args += ["--store", store]
        for addr in bootstrap or []:
            args += ["--bootstrap", addr]
        if not dht:
            args.append("--no-dht")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.offers: list[dict[str, Any]] = []
        self.ready: dict[str, Any] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "offer":
                self.offers.append(event)
            else:
                self.events.put(event)

    def wait(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        """The next event named ``event`` (errors raise)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {event!r} event within {timeout} s")
            try:
                got = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if got.get("event") == "error":
                raise RuntimeError(got.get("message"))
            if got.get("event") == event:
                return got

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """Wait for the ``ready`` event (cached)."""
        if not self.ready:
            self.ready = self.wait("ready", timeout)
        return self.ready

    @property
    def peer_id(self) -> str:
        return str(self.wait_ready()["peer_id"])

    @property
    def addr(self) -> str:
        return str(self.wait_ready()["addrs"][0])

    @property
    def address(self) -> str:
        return str(self.wait_ready()["address"])

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def ask(self, event: str, timeout: float = 60.0, **cmd: Any) -> dict[str, Any]:
        """Send a command and wait for its answer."""
        self.send(**cmd)
        return self.wait(event, timeout)

    def close(self, timeout: float = 20.0, *, asked: bool = False) -> dict[str, Any] | None:
        """Ask the peer to quit; its ``bye`` (thread list) or None if it had to be killed."""
        if self.proc.returncode is not None:
            return None
        bye = None
        try:
            if not asked:
                self.send(cmd="quit")
            bye = self.wait("bye", timeout)
            self.proc.wait(timeout)
        except (TimeoutError, RuntimeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        return bye


class Cluster:
    """``n`` peers: peer 0 is the bootstrap; each other peer also dials ``extra`` random peers."""

    def __init__(self, n: int, *, extra: int = 2, dht: bool = True, seed: int = 1) -> None:
        self.peers: list[PeerProcess] = []
        first = PeerProcess(dht=dht)
        self.peers.append(first)
        boot = first.addr
        self.peers += [PeerProcess([boot], dht=dht) for _ in range(n - 1)]
        for p in self.peers:
            p.wait_ready()
        rng = random.Random(seed)
        for i, p in enumerate(self.peers[1:], start=1):
            others = [q for j, q in enumerate(self.peers) if j not in (0, i)]
            for q in rng.sample(others, min(extra, len(others))):
                p.ask("connected", cmd="connect", addr=q.addr)

    def wait_mesh(self, timeout: float = 60.0) -> None:
        """Every peer has at least one offers-topic peer."""
        deadline = time.monotonic() + timeout
        for p in self.peers:
            while p.ask("peers", cmd="peers")["mesh"] < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError("gossip mesh did not form")
                time.sleep(0.2)

    def close(self) -> list[dict[str, Any] | None]:
        """Stop every peer (in parallel); their ``bye`` events."""
        live = [p for p in self.peers if p.proc.returncode is None]
        for p in live:
            with contextlib.suppress(OSError):
                p.send(cmd="quit")
        return [p.close(asked=True) for p in live]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
