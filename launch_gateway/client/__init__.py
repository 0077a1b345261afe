"""The Python SDK: the Launch client's objects over gRPC (`blocking`) and its asyncio flavour (`aio`).

Importing it loads grpc and the generated messages only, never the gateway's server side.
"""

from __future__ import annotations

from launch_gateway.client.blocking import (
    AsyncEndpoint,
    EndpointResponseFuture,
    EndpointResponseStream,
    GatewayClient,
    StreamingEndpoint,
    SyncEndpoint,
)
from launch_gateway.client.errors import (
    BatchSubmitError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    GatewayRPCError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from launch_gateway.client.objects import EndpointRequest, EndpointResponse, ModelEndpoint

__all__ = [
    "AsyncEndpoint",
    "BatchSubmitError",
    "DeadlineExceededError",
    "EndpointRequest",
    "EndpointResponse",
    "EndpointResponseFuture",
    "EndpointResponseStream",
    "FailedPreconditionError",
    "FieldViolation",
    "GatewayClient",
    "GatewayRPCError",
    "InternalError",
    "InvalidArgumentError",
    "ModelEndpoint",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "StreamingEndpoint",
    "SyncEndpoint",
    "UnauthenticatedError",
    "UnavailableError",
]
