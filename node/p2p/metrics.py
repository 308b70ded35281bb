"""Plain counters of the p2p layer (drops, refusals, bans, traffic).

Counters are incremented from the trio thread and read (as a snapshot) from
anywhere; ``collections.Counter`` updates are atomic enough under the GIL for
monotonic counters. Prometheus export is the HTTP API's job.
"""

from __future__ import annotations

import collections
import threading

__all__ = ["P2PMetrics"]


class P2PMetrics:
    """Named monotonic counters, e.g. ``gossip_rejected{reason=bad_signature}``."""

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` with ``labels``."""
        key = name
        if labels:
            key += "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
        with self._lock:
            self._counts[key] += amount

    def get(self, name: str, **labels: str) -> int:
        """Current value (0 if never incremented)."""
        key = name
        if labels:
            key += "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
        with self._lock:
            return self._counts.get(key, 0)

    def total(self, name: str) -> int:
        """Sum over every label set of ``name``."""
        with self._lock:
            return sum(v for k, v in self._counts.items() if k == name or k.startswith(name + "{"))

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)
