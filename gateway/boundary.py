"""The one place where our errors become RPC statuses.

Each RPC handler is wrapped by `unary_boundary` or `stream_boundary`. A `GatewayError` ends the
call with its code and message, plus rich details (grpcio-status): a `google.rpc.ErrorInfo` naming
the upstream HTTP status when there was one, and a `google.rpc.RetryInfo` with a `retry-after`
trailer when the caller should wait. Anything else is a bug: it is logged with its traceback and the
caller sees INTERNAL with no internals. Nothing else in the gateway calls `context.abort`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.errors import Code, GatewayError

log = logging.getLogger("gateway")

ERROR_DOMAIN = "launch-gateway"

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def status_of(error: GatewayError) -> grpc.Status:
    """The RPC status for an error, with its rich details and trailers."""
    details: list[any_pb2.Any] = []
    if error.http_status is not None:
        info = error_details_pb2.ErrorInfo(
            reason="UPSTREAM_HTTP_ERROR",
            domain=ERROR_DOMAIN,
            metadata={"http_status": str(error.http_status)},
        )
        details.append(_packed(info))
    trailers: list[tuple[str, str]] = []
    if error.retry_after is not None:
        seconds = max(error.retry_after, 0.0)
        whole = math.floor(seconds)
        delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
        trailers.append(("retry-after", str(math.ceil(seconds))))
    message = status_pb2.Status(code=int(error.code), message=error.message, details=details)
    status: grpc.Status = rpc_status.to_status(message)
    if trailers:
        return _WithTrailers(status.code, status.details, (*status.trailing_metadata, *trailers))
    return status


class _WithTrailers(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[Any, ...]) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: GatewayError) -> NoReturn:
    status = status_of(error)
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _internal(handler_name: str, exc: BaseException) -> GatewayError:
    log.error("unexpected error in %s", handler_name, exc_info=exc)
    return GatewayError("internal error in the gateway", code=Code.INTERNAL)


UnaryHandler = Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]
StreamHandler = Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]]


def unary_boundary(handler: UnaryHandler[S, Req, Resp]) -> UnaryHandler[S, Req, Resp]:
    """Wrap a unary handler so every failure leaves as a proper status."""

    @functools.wraps(handler)
    async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            return await handler(self, request, context)
        except GatewayError as exc:
            await abort(context, exc)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await abort(context, _internal(handler.__name__, exc))

    return wrapper


def stream_boundary(handler: StreamHandler[S, Req, Resp]) -> StreamHandler[S, Req, Resp]:
    """Wrap a server-streaming handler: messages already sent stand, then the status."""

    @functools.wraps(handler)
    async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> AsyncIterator[Resp]:
        try:
            async for message in handler(self, request, context):
                yield message
        except GatewayError as exc:
            await abort(context, exc)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await abort(context, _internal(handler.__name__, exc))

    return wrapper
