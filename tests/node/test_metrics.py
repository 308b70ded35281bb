"""``gpunet_device_utilization_ratio``: metered device time over the window's wall time;
the blob store's bytes and collections."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.metrics import UTILIZATION_WINDOW_S, Metrics
from node.p2p.blobstore import BlobStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def utilization(metrics: Metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name == "gpunet_device_utilization_ratio":
            out.update({s.labels["device"]: s.value for s in family.samples})
    return out


def test_busy_fraction_over_the_window() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    assert utilization(m) == {}
    clock.now += 10  # 10 s up; 2 slots; 5 s of metered device time -> 25 %
    m.device_run("cpu", 3000, slots=2)
    m.device_run("cpu", 2000, slots=2)
    assert utilization(m) == {"cpu": pytest.approx(0.25)}
    clock.now += UTILIZATION_WINDOW_S - 10  # the window is full: 5 s of 2 x 60 s
    assert utilization(m) == {"cpu": pytest.approx(5 / (2 * UTILIZATION_WINDOW_S))}
    clock.now = 1010 + UTILIZATION_WINDOW_S + 1  # the runs (ended at 1010) fell out
    assert utilization(m) == {"cpu": 0.0}
    m.device_run("cpu", 10_000_000, slots=1)  # more than the window: capped at 1
    assert utilization(m) == {"cpu": 1.0}


def test_bad_values_are_refused() -> None:
    m = Metrics()
    with pytest.raises(ValueError):
        m.device_run("cpu", -1)
    with pytest.raises(ValueError):
        m.device_run("cpu", 5, slots=0)
    m.device_run("a device name with spaces!", 5)
    assert set(utilization(m)) == {"other"}


def test_blob_store_bytes_and_collections(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_bytes=1500)
    m = Metrics()
    m.watch_blobs(store.usage)

    def samples() -> dict[str, float]:
        text = m.render().decode()
        return {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name.startswith(("gpunet_blob_store", "gpunet_blobs_collected"))
            and not s.name.endswith("_created")
        }

    store.put_bytes(b"a" * 1000)
    store.put_bytes(b"b" * 1000)
    assert samples()["gpunet_blob_store_bytes"] == 2000
    m.collected(*store.collect())
    assert samples() == {
        "gpunet_blob_store_bytes": 1000,
        "gpunet_blobs_collected_total": 1,
        "gpunet_blobs_collected_bytes_total": 1000,
    }
    with pytest.raises(ValueError, match="only grow"):
        m.collected(-1, 0)
