"""Property test: no JSON body makes job submission fail other than with a clear 4xx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.api.app import ApiError, _Api
from node.api.models import SubmitRequest
from node.config import ApiConfig, ClientConfig
from node.metrics import Metrics

CID = "sha256:" + "ab" * 32
VALID: dict[str, Any] = {
    "model": {"arch": "mlp@1", "config": {"hidden": 64}, "weights": CID, "weights_size": 10},
    "inputs": CID,
    "inputs_size": 20,
    "max_payment": "1000",
}
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "model",
    "inputs",
    "inputs_size",
    "format",
    "determinism",
    "min_sandbox_tier",
    "max_output_bytes",
    "max_gpu_millis",
    "max_price_per_gpu_second",
    "max_payment",
    "deadline_s",
    "bogus",
]
MODEL_FIELDS = ["arch", "config", "weights", "weights_size", "bogus"]


def api() -> _Api:
    async def never(*_: Any) -> Any:
        raise AssertionError("not called")

    return _Api(
        store=None,  # type: ignore[arg-type]
        token="t" * 32,
        metrics=Metrics(),
        node_info=never,
        submit=never,
        config=ApiConfig(),
        client=ClientConfig(),
        known_models=lambda: {"mlp@1"},
        clock=lambda: 0.0,
    )


API = api()


def outcome(raw: bytes) -> None:
    try:
        result = API._validate(raw)
    except ApiError as exc:
        assert 400 <= exc.status < 500 and exc.code and exc.message
    else:
        assert isinstance(result, SubmitRequest)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), json_values, st.sampled_from(MODEL_FIELDS), json_values)
def test_mutated_bodies_fail_cleanly(field: str, value: Any, mfield: str, mvalue: Any) -> None:
    body = json.loads(json.dumps(VALID))
    body[field] = value
    outcome(json.dumps(body).encode())
    body = json.loads(json.dumps(VALID))
    body["model"][mfield] = mvalue
    outcome(json.dumps(body).encode())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bodies_fail_cleanly(raw: bytes) -> None:
    outcome(raw)


def test_the_valid_body_passes(tmp_path: Path) -> None:
    result = API._validate(json.dumps(VALID).encode())
    assert result.max_payment == 1000 and result.spec.model.config == {"hidden": 64}
