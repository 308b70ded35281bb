"""Prometheus metrics of one node, in their own registry (no global state).

Other modules get the node's :class:`Metrics` object and update it:

=============================== ======= ===================================================
name                            type    updated by
=============================== ======= ===================================================
gpunet_jobs{role,state}         gauge   :meth:`Metrics.set_job_counts` (the API, per scrape)
gpunet_queue_depth              gauge   provider: accepted jobs waiting for a worker slot
gpunet_device_utilization_ratio gauge   runtime: busy fraction per device (0..1), {device}
gpunet_earnings_total           counter provider: payments received (token smallest units)
gpunet_p2p_peers                gauge   p2p: connected peers
gpunet_rpc_errors_total         counter chain client: failed JSON-RPC calls, {method}
gpunet_jobs_transitions_total   counter store users: lifecycle transitions, {role,event}
gpunet_api_requests_total       counter the API: {route,status}
gpunet_node_info                info    version, schema version
=============================== ======= ===================================================

Label values that come from outside (an RPC method name) are reduced to a
bounded set so a misbehaving peer cannot blow up the series count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    generate_latest,
)

from protocol.lifecycle import JobEvent, JobState

__all__ = ["CONTENT_TYPE", "ROLES", "Metrics"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
#: Roles a job can have in the store (mirrors ``node.store.Role``).
ROLES: Final = ("provider", "client", "verifier")
_LABEL: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_MAX_LABEL_VALUES: Final = 64


class Metrics:
    """The node's metrics; ``render()`` gives the Prometheus text format."""

    def __init__(self, version: str = "") -> None:
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
        self.info = Info("gpunet_node", "Node build information", registry=r)
        self.info.info({"version": version})
        self._rpc_methods: set[str] = set()

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

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
