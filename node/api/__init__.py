"""The node's local HTTP API (aiohttp) and its callback interfaces; see docs/openapi.yaml."""

from node.api.app import ApiError, create_app, serve
from node.api.auth import TokenError, check_bearer, load_or_create_token
from node.api.models import (
    DeviceInfo,
    JobSubmitter,
    LayerStatus,
    NodeInfo,
    NodeInfoSource,
    SandboxReport,
    SubmitJobBody,
    SubmitRejected,
    SubmitRequest,
)

__all__ = [
    "ApiError",
    "DeviceInfo",
    "JobSubmitter",
    "LayerStatus",
    "NodeInfo",
    "NodeInfoSource",
    "SandboxReport",
    "SubmitJobBody",
    "SubmitRejected",
    "SubmitRequest",
    "TokenError",
    "check_bearer",
    "create_app",
    "load_or_create_token",
    "serve",
]
