"""The SDK's exceptions: one family for every RPC failure, keeping the gRPC code and message.

    GatewayRPCError                 any failed RPC: .code (grpc.StatusCode), .message, .retry_after
    ├── InvalidArgumentError        INVALID_ARGUMENT: the message starts with the bad field's path
    ├── NotFoundError               NOT_FOUND: no such endpoint or task
    ├── FailedPreconditionError     FAILED_PRECONDITION: e.g. the endpoint is of another kind
    ├── UnauthenticatedError        UNAUTHENTICATED
    ├── PermissionDeniedError       PERMISSION_DENIED
    ├── ResourceExhaustedError      RESOURCE_EXHAUSTED: rate limited; see .retry_after
    ├── UnavailableError            UNAVAILABLE: the gateway or the upstream is down
    ├── DeadlineExceededError       DEADLINE_EXCEEDED
    ├── InternalError               INTERNAL, UNKNOWN, DATA_LOSS
    └── BatchSubmitError            predict_batch: some submissions failed; .futures has the others

A model's own failure is not an exception: it is an `EndpointResponse` with status "FAILURE" and a
traceback, as in the Launch client. Client-side misuse raises ValueError or TypeError, and a future
that runs out of time raises the built-in TimeoutError, both as the Launch client does.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class GatewayRPCError(Exception):
    """An RPC to the gateway failed with `code` and `message`."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, from google.rpc.RetryInfo, when the gateway sent one


class InvalidArgumentError(GatewayRPCError):
    pass


class NotFoundError(GatewayRPCError):
    pass


class FailedPreconditionError(GatewayRPCError):
    pass


class UnauthenticatedError(GatewayRPCError):
    pass


class PermissionDeniedError(GatewayRPCError):
    pass


class ResourceExhaustedError(GatewayRPCError):
    pass


class UnavailableError(GatewayRPCError):
    pass


class DeadlineExceededError(GatewayRPCError):
    pass


class InternalError(GatewayRPCError):
    pass


class BatchSubmitError(GatewayRPCError):
    """Some submissions of a batch failed; the accepted ones are not lost.

    `futures[i]` is the future of request i, or None where `errors[i]` says why it failed.
    `code` and `message` are those of the first failure.
    """

    def __init__(self, futures: list[Any], errors: list[GatewayRPCError | None]) -> None:
        first = next(e for e in errors if e is not None)
        failed = sum(e is not None for e in errors)
        super().__init__(first.code, f"{failed} of {len(errors)} submissions failed; first: {first.message}")
        self.futures = futures
        self.errors = errors


_BY_CODE: dict[grpc.StatusCode, type[GatewayRPCError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
}


def _retry_after(call: Any) -> float | None:
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        return None
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def from_rpc_error(error: grpc.RpcError) -> GatewayRPCError:
    """Our exception for a failed call (grpc.RpcError from either the sync or the aio API)."""
    call: Any = error
    code: grpc.StatusCode = call.code()
    message: str = call.details() or ""
    return _BY_CODE.get(code, GatewayRPCError)(code, message, _retry_after(call))
