"""Every failed JSON-RPC request reaches ``gpunet_rpc_errors_total`` (real anvil)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.chain.anvil import Anvil, free_port
from node.chain.errors import RpcError, RpcUnavailable
from node.chain.rpc import RetryPolicy, Rpc
from node.metrics import Metrics


def rpc_errors(metrics: Metrics) -> dict[str, float]:
    """``method -> count`` parsed from the Prometheus text, as a scraper sees it."""
    text = metrics.render().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "gpunet_rpc_errors":
            for sample in family.samples:
                if sample.name == "gpunet_rpc_errors_total":
                    out[sample.labels["method"]] = sample.value
    return out


def test_error_answers_and_unreachable_nodes_are_counted(anvil: Anvil) -> None:
    metrics = Metrics()
    rpc = Rpc(anvil.url, on_error=metrics.rpc_error)
    assert rpc.block_number() >= 0
    assert rpc_errors(metrics) == {}  # a good call counts nothing
    with pytest.raises(RpcError):
        rpc.request("eth_noSuchMethod", [])
    with pytest.raises(RpcError):  # an invalid call is a failed call too
        rpc.request("eth_call", [{"to": "0x" + "00" * 20, "data": "0xzz"}, "latest"])
    assert rpc_errors(metrics) == {"eth_noSuchMethod": 1.0, "eth_call": 1.0}

    down = Rpc(
        f"http://127.0.0.1:{free_port()}",
        timeout=1.0,
        retry=RetryPolicy(attempts=3, initial_delay=0.01),
        on_error=metrics.rpc_error,
    )
    with pytest.raises(RpcUnavailable):
        down.block_number()
    assert rpc_errors(metrics)["eth_blockNumber"] == 3.0  # every attempt failed


def test_a_broken_hook_does_not_break_the_call(anvil: Anvil) -> None:
    def hook(method: str) -> None:
        raise RuntimeError("metrics backend gone")

    rpc = Rpc(anvil.url, on_error=hook)
    with pytest.raises(RpcError):  # the RPC's own error, not the hook's
        rpc.request("eth_noSuchMethod", [])
