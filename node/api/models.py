"""Typed shapes at the API's edges: the submit body, node info, and the callback interfaces.

The API does not run jobs or inspect the host itself; the node hands it two
callbacks (so the runtime, p2p and client SDK can land separately):

* :data:`NodeInfoSource` -- ``async () -> NodeInfo``, for ``GET /v1/node``;
* :class:`JobSubmitter` -- ``async (SubmitRequest) -> int``, for ``POST /v1/jobs``.
  It records the job (role client, state ``NONE``) and starts working on it in
  the node's own task group, returning the local job id at once. It raises
  :class:`SubmitRejected` for a request it will not take.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Annotated, Final, Protocol

import msgspec

from protocol.messages import Determinism, JobFormat, JobSpec

__all__ = [
    "DETERMINISM_NAMES",
    "DeviceInfo",
    "JobSubmitter",
    "LayerStatus",
    "ModelBody",
    "NodeInfo",
    "NodeInfoSource",
    "SandboxReport",
    "SubmitJobBody",
    "SubmitRejected",
    "SubmitRequest",
]

# Same bounds as the wire format (protocol/messages.py); the JobSpec built from
# the body is validated once more against the protocol's own decoder.
# The protocol's character rules for names apply through that second check.
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Cid = Annotated[str, msgspec.Meta(pattern=r"^sha256:[0-9a-f]{64}$")]
_ConfigKey = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")]
_ConfigValue = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
_U53 = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]  # exact in every JSON parser
_Amount = Annotated[str, msgspec.Meta(pattern=r"^(0|[1-9][0-9]{0,19})$")]  # u64, decimal text


class DeterminismName(enum.StrEnum):
    """Determinism tiers as they are spelled in JSON."""

    EXACT = "exact"
    GPU_DETERMINISTIC = "gpu-deterministic"
    TOLERANCE = "tolerance"


DETERMINISM_NAMES: Final = {
    DeterminismName.EXACT: Determinism.EXACT,
    DeterminismName.GPU_DETERMINISTIC: Determinism.GPU_DETERMINISTIC,
    DeterminismName.TOLERANCE: Determinism.TOLERANCE,
}


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class ModelBody(_Body, frozen=True, kw_only=True):
    """The model of a submitted job."""

    arch: _Name
    config: Annotated[dict[_ConfigKey, _ConfigValue], msgspec.Meta(max_length=32)] = {}
    weights: _Cid
    weights_size: _U53


class SubmitJobBody(_Body, frozen=True, kw_only=True):
    """``POST /v1/jobs`` JSON body (amounts are decimal strings: they exceed 2**53)."""

    model: ModelBody
    inputs: _Cid
    inputs_size: _U53
    format: JobFormat = JobFormat.CATALOG_V1
    determinism: DeterminismName = DeterminismName.EXACT
    min_sandbox_tier: Annotated[int, msgspec.Meta(ge=0, le=3)] | None = None
    max_output_bytes: _U53 = 64 << 20
    max_gpu_millis: Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1)] = 60_000
    max_price_per_gpu_second: _Amount | None = None
    max_payment: _Amount
    deadline_s: Annotated[int, msgspec.Meta(ge=10, le=7 * 86_400)] | None = None


class SubmitRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A validated submission, with the config defaults filled in."""

    spec: JobSpec
    max_price_per_gpu_second: int
    max_payment: int
    deadline_s: int


class SubmitRejected(Exception):
    """The submitter will not take this job: answered as ``status`` with ``code``."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class JobSubmitter(Protocol):
    """Takes a validated job submission; returns the new job's local id."""

    async def __call__(self, request: SubmitRequest) -> int: ...


class DeviceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One compute device of the host."""

    name: str
    device_class: str
    memory_mib: int = 0
    count: int = 1


class LayerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One isolation layer: does it work here, and why not."""

    ok: bool
    detail: str = ""


class SandboxReport(msgspec.Struct, frozen=True, kw_only=True):
    """What isolation this host gives, detected at start by the runtime.

    The shape of ``node.runtime.detect.SandboxReport.to_dict()`` plus ``trusted``:
    ``msgspec.convert(report.to_dict() | {"trusted": ...}, SandboxReport)``.
    """

    tier: int
    trusted: bool  # false when the operator allowed untrusted jobs below the minimum tier
    formats: list[str] = []
    layers: dict[str, LayerStatus] = {}
    landlock_abi: int = 0
    cgroup: str = ""


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/node``."""

    version: str
    address: str
    peer_id: str
    roles: list[str]
    chain_id: int
    escrow_address: str
    sandbox: SandboxReport | None = None
    devices: list[DeviceInfo] = []


NodeInfoSource = Callable[[], Awaitable[NodeInfo]]
