"""The SDK's exceptions: one family for every RPC failure, keeping the gRPC code and message.

    GatewayRPCError                 any failed RPC: .code (grpc.StatusCode), .message, and from the rich
                                    details .reason, .domain, .metadata, .field_violations, .retry_after
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

`.reason` is the google.rpc.ErrorInfo reason (`RATE_LIMITED`, `ENDPOINT_NOT_FOUND`, ...: the table in
docs/errors.md), stable across releases, so code can tell refusals of one code apart without reading
messages; `.field_violations` lists google.rpc.BadRequest's (field, description) pairs.

A model's own failure is not an exception: it is an `EndpointResponse` with status "FAILURE" and a
traceback, as in the Launch client. Client-side misuse raises ValueError or TypeError, and a future
that runs out of time raises the built-in TimeoutError, both as the Launch client does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (google.rpc.BadRequest.FieldViolation): its path and what is wrong."""

    field: str  # e.g. "request.args.n", "task_id"
    description: str


class GatewayRPCError(Exception):
    """An RPC to the gateway failed with `code` and `message`, and what its rich details say."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        retry_after: float | None = None,
        *,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, from google.rpc.RetryInfo, when the gateway sent one
        self.reason = reason  # google.rpc.ErrorInfo.reason; None when the status had no ErrorInfo
        self.domain = domain  # google.rpc.ErrorInfo.domain
        self.metadata: Mapping[str, str] = dict(metadata or {})  # google.rpc.ErrorInfo.metadata
        self.field_violations = field_violations  # google.rpc.BadRequest's, for INVALID_ARGUMENT


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
        super().__init__(
            first.code,
            f"{failed} of {len(errors)} submissions failed; first: {first.message}",
            first.retry_after,
            reason=first.reason,
            domain=first.domain,
            metadata=first.metadata,
            field_violations=first.field_violations,
        )
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


def _details(call: Any) -> dict[str, Any]:
    """GatewayRPCError's keyword arguments from the call's grpc-status-details-bin trailer (none without one)."""
    try:
        status = rpc_status.from_call(call)
    except ValueError:  # a trailer that disagrees with the call's own status is not trusted
        return {}
    found: dict[str, Any] = {}
    for detail in status.details if status is not None else ():
        info, retry, bad = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo(), error_details_pb2.BadRequest()
        if "reason" not in found and detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
            found.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif "retry_after" not in found and detail.Is(retry.DESCRIPTOR) and detail.Unpack(retry):
            found["retry_after"] = float(retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9)
        elif detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):
            violations = tuple(FieldViolation(v.field, v.description) for v in bad.field_violations)
            found["field_violations"] = (*found.get("field_violations", ()), *violations)
    return found


def from_rpc_error(error: grpc.RpcError) -> GatewayRPCError:
    """Our exception for a failed call (grpc.RpcError from either the sync or the aio API)."""
    call: Any = error
    code: grpc.StatusCode = call.code()
    message: str = call.details() or ""
    return _BY_CODE.get(code, GatewayRPCError)(code, message, **_details(call))
