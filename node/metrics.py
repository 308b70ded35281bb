"""Prometheus metrics of one node, in their own registry (no global state).

Other modules get the node's :class:`Metrics` object and update it:

=============================== ======= ===================================================
name                            type    updated by
=============================== ======= ===================================================
gpunet_jobs{role,state}         gauge   :meth:`Metrics.set_job_counts` (the API, per scrape)
gpunet_queue_depth              gauge   provider: accepted jobs waiting for a worker slot
gpunet_device_utilization_ratio gauge   provider: runtime-metered device time of the jobs that
                                        ended in the last :data:`UTILIZATION_WINDOW_S`, over
                                        that wall time x slots (0..1), {device}; refreshed
                                        at each scrape from :meth:`Metrics.device_run`
gpunet_earnings_total           counter provider: payments received, from the
                                        ``JobFinalized`` events of chain receipts and logs
gpunet_p2p_peers                gauge   p2p: connected peers
gpunet_rpc_errors_total         counter chain client: failed JSON-RPC calls, {method}
gpunet_jobs_transitions_total   counter store users: lifecycle transitions, {role,event}
gpunet_api_requests_total       counter the API: {route,status}
gpunet_blob_store_bytes         gauge   the role's blob store: bytes its complete blobs
                                        hold (read at each scrape, :meth:`Metrics.watch_blobs`)
gpunet_blobs_collected_total    counter blob collection: blobs deleted (least recently used)
gpunet_blobs_collected_bytes_total counter blob collection: bytes those blobs held
gpunet_node_info                info    version
gpunet_<prefix>_<name>_total    counter :meth:`Metrics.add_counters` (e.g. ``p2p``: the
                                        ``node.p2p.metrics.P2PMetrics`` snapshot, per scrape)
=============================== ======= ===================================================

Label values that come from outside (an RPC method name) are reduced to a
bounded set so a misbehaving peer cannot blow up the series count.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol.lifecycle import JobEvent, JobState

__all__ = ["CONTENT_TYPE", "ROLES", "UTILIZATION_WINDOW_S", "Metrics"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
#: Roles a job can have in the store (mirrors ``node.store.Role``).
ROLES: Final = ("provider", "client", "verifier")
_LABEL: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_MAX_LABEL_VALUES: Final = 64
_KEY: Final = re.compile(r"^(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)(?:\{(?P<labels>[^{}]*)\})?$")
_PREFIX: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Seconds of history behind ``gpunet_device_utilization_ratio``.
UTILIZATION_WINDOW_S: Final = 60.0
_MAX_DEVICES: Final = 16
_MAX_RUNS: Final = 100_000


class Metrics:
    """The node's metrics; ``render()`` gives the Prometheus text format."""

    def __init__(self, version: str = "", *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._runs: dict[str, collections.deque[tuple[float, float]]] = {}
        self._busy: dict[str, float] = {}  # device -> seconds of the runs in _runs
        self._slots: dict[str, int] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Gauge(
            "gpunet_jobs",
            "Jobs in the store by role and lifecycle state",
            ["role", "state"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "gpunet_queue_depth", "Accepted jobs waiting for a worker slot", registry=r
        )
        self.device_utilization = Gauge(
            "gpunet_device_utilization_ratio",
            "Busy fraction of each device over the last sampling interval (0..1)",
            ["device"],
            registry=r,
        )
        self.earnings = Counter(
            "gpunet_earnings", "Payments received, in the token's smallest unit", registry=r
        )
        self.p2p_peers = Gauge("gpunet_p2p_peers", "Connected libp2p peers", registry=r)
        self.rpc_errors = Counter(
            "gpunet_rpc_errors", "Failed chain JSON-RPC calls", ["method"], registry=r
        )
        self.transitions = Counter(
            "gpunet_jobs_transitions",
            "Job lifecycle transitions recorded",
            ["role", "event"],
            registry=r,
        )
        self.api_requests = Counter(
            "gpunet_api_requests", "HTTP API requests", ["route", "status"], registry=r
        )
        self.blob_store_bytes = Gauge(
            "gpunet_blob_store_bytes", "Bytes the complete blobs of the store hold", registry=r
        )
        self.blobs_collected = Counter(
            "gpunet_blobs_collected",
            "Blobs deleted by collection (least recently used)",
            registry=r,
        )
        self.blobs_collected_bytes = Counter(
            "gpunet_blobs_collected_bytes", "Bytes deleted by blob collection", registry=r
        )
        self.info = Info("gpunet_node", "Node build information", registry=r)
        self.info.info({"version": version})
        self._rpc_methods: set[str] = set()

    def add_counters(self, prefix: str, snapshot: Callable[[], Mapping[str, int]]) -> None:
        """Export counters kept elsewhere, read at each scrape.

        ``snapshot()`` returns ``{"name{k=v,...}": value}`` (the format of
        ``node.p2p.metrics.P2PMetrics.snapshot``); each name becomes the counter
        ``gpunet_<prefix>_<name>_total``. Malformed keys are skipped.
        """
        if not _PREFIX.match(prefix):
            raise ValueError(f"bad metrics prefix {prefix!r}")
        self.registry.register(_SnapshotCollector(f"gpunet_{prefix}", snapshot))

    def watch_blobs(self, usage: Callable[[], tuple[int, int]]) -> None:
        """Read ``gpunet_blob_store_bytes`` from ``usage()`` ((count, bytes)) at each scrape."""
        self.blob_store_bytes.set_function(lambda: float(usage()[1]))

    def collected(self, count: int, freed: int) -> None:
        """Count one collection pass's deleted blobs and their bytes."""
        if count < 0 or freed < 0:
            raise ValueError("collected counts only grow")
        self.blobs_collected.inc(count)
        self.blobs_collected_bytes.inc(freed)

    def set_job_counts(self, counts: Mapping[tuple[str, JobState], int]) -> None:
        """Set ``gpunet_jobs`` from per-(role, state) counts; missing pairs are 0."""
        for role in ROLES:
            for state in JobState:
                self.jobs.labels(role, state.name.lower()).set(counts.get((role, state), 0))

    def rpc_error(self, method: str) -> None:
        """Count one failed RPC call (unknown or excess method names count as ``other``)."""
        if not _LABEL.match(method) or (
            method not in self._rpc_methods and len(self._rpc_methods) >= _MAX_LABEL_VALUES
        ):
            method = "other"
        self._rpc_methods.add(method)
        self.rpc_errors.labels(method).inc()

    def transition(self, role: str, event: JobEvent) -> None:
        """Count one recorded lifecycle transition."""
        self.transitions.labels(role, event.value).inc()

    def earned(self, amount: int) -> None:
        """Add a payment received (token smallest units)."""
        if amount < 0:
            raise ValueError("earnings only grow")
        self.earnings.inc(amount)

    def device_run(self, device: str, metered_millis: int, *, slots: int = 1) -> None:
        """Record one finished job's runtime-metered device time on ``device``.

        ``slots`` is how many jobs the device runs at once (the worker pool's
        slots), so a device busy in every slot for the whole window reads 1.0.
        """
        if metered_millis < 0 or slots < 1:
            raise ValueError("metered time must be >= 0 and slots >= 1")
        if not _LABEL.match(device):
            device = "other"
        now = self._clock()
        with self._lock:
            runs = self._runs.get(device)
            if runs is None:
                if len(self._runs) >= _MAX_DEVICES:
                    return
                runs = self._runs[device] = collections.deque(maxlen=_MAX_RUNS)
            if len(runs) == runs.maxlen:  # the append below drops the oldest run
                self._busy[device] = self._busy.get(device, 0.0) - runs[0][1]
            runs.append((now, metered_millis / 1000))
            self._busy[device] = self._busy.get(device, 0.0) + metered_millis / 1000
            self._slots[device] = slots
        self._refresh_utilization()

    def _refresh_utilization(self) -> None:
        now = self._clock()
        span = max(min(UTILIZATION_WINDOW_S, now - self._started), 1e-3)
        with self._lock:
            for device, runs in self._runs.items():
                busy = self._busy.get(device, 0.0)
                while runs and runs[0][0] < now - UTILIZATION_WINDOW_S:
                    busy -= runs.popleft()[1]
                busy = self._busy[device] = max(0.0, busy) if runs else 0.0
                ratio = min(1.0, busy / (span * self._slots[device]))
                self.device_utilization.labels(device).set(ratio)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        self._refresh_utilization()
        return generate_latest(self.registry)


class _SnapshotCollector(Collector):
    """Counters from a ``{"name{k=v}": value}`` snapshot, as Prometheus families."""

    def __init__(self, prefix: str, snapshot: Callable[[], Mapping[str, int]]) -> None:
        self.prefix = prefix
        self.snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # the names are only known at scrape time

    def collect(self) -> Iterator[Metric]:
        series: dict[str, list[tuple[dict[str, str], float]]] = {}
        for key, value in sorted(self.snapshot().items()):
            match = _KEY.match(key)
            if match is None:
                continue
            labels: dict[str, str] = {}
            for part in filter(None, (match["labels"] or "").split(",")):
                label, sep, label_value = part.partition("=")
                if sep and _KEY.match(label) and not label.startswith("__"):
                    labels[label] = label_value
            series.setdefault(match["name"], []).append((labels, float(value)))
        for name, samples in series.items():
            names = sorted({k for labels, _ in samples for k in labels})
            family = CounterMetricFamily(
                f"{self.prefix}_{name}", f"{name} ({self.prefix})", labels=names
            )
            for labels, amount in samples:
                family.add_metric([labels.get(n, "") for n in names], amount)
            yield family
