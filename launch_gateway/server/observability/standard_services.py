"""The grpc_server_* metrics for the standard services: health (grpc.health.v1.Health) and reflection.

EndpointService's RPCs are measured by their boundary (`statuses.boundary`); the health and reflection
servicers come from grpcio-health-checking and grpcio-reflection and have none. `measured` stands in
for such a servicer: each of its methods measures the call (started, handled with its code, handling
time, messages each way: go-grpc-prometheus's families, pre-created with the others) around the real
one, which the generated `add_*Servicer_to_server` then registers unchanged. Only the metrics: these
calls have no access log line (a probe every few seconds would drown the calls that matter), no tenant
and no concurrency kind.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from launch_gateway.server.errors import Code
from launch_gateway.server.observability.metrics import MethodInfo, Metrics, RpcMeter


def methods_of(service: ServiceDescriptor) -> list[MethodInfo]:
    """A service's methods as go-grpc-prometheus labels them."""
    return [
        MethodInfo(service.full_name, m.name, _GRPC_TYPES[m.client_streaming, m.server_streaming])
        for m in service.methods
    ]


_GRPC_TYPES = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}


def measured(servicer: Any, service: ServiceDescriptor, metrics: Metrics) -> Any:
    """A stand-in for `servicer` whose every method of `service` is measured in `metrics`."""
    stand_in = _Measured()
    for method in service.methods:
        behaviour = getattr(servicer, method.name)
        wrap = _streamed if method.client_streaming else _unary_request
        setattr(stand_in, method.name, wrap(behaviour, method.name, metrics))
    return stand_in


class _Measured:
    """Holds the measured methods (the generated registration reads them by name)."""


def _code_of(context: grpc.aio.ServicerContext[Any, Any]) -> Code:
    """The status the servicer set or aborted with (OK when it set none)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return Code(code.value[0])
    return Code(code) if code else Code.OK


class _CountingContext:
    """The call's context, counting the messages a servicer writes itself (health's Watch does)."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], meter: RpcMeter) -> None:
        self._context = context
        self._meter = meter

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._meter.sent()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _finish(meter: RpcMeter, context: grpc.aio.ServicerContext[Any, Any], outcome: BaseException | None) -> None:
    if outcome is None:
        meter.finish(_code_of(context))
    elif isinstance(outcome, (asyncio.CancelledError, GeneratorExit)):  # the caller left
        meter.finish(Code.CANCELLED)
    else:  # an abort has set its code; anything else is what grpc answers an unexpected error with
        code = _code_of(context)
        meter.finish(code if code is not Code.OK else Code.UNKNOWN)


def _unary_request(behaviour: Callable[..., Any], method: str, metrics: Metrics) -> Callable[..., Any]:
    """Unary and server-streaming methods: one request; the answer returned, yielded or written."""
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            meter = metrics.rpc(method, None)
            outcome: BaseException | None = None
            try:
                async for message in behaviour(request, context):
                    yield message
                    meter.sent()
            except BaseException as exc:
                outcome = exc
                raise
            finally:
                _finish(meter, context, outcome)

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        meter = metrics.rpc(method, None)
        outcome: BaseException | None = None
        try:
            response = behaviour(request, _CountingContext(context, meter))
            if inspect.isawaitable(response):  # a servicer's own methods are coroutines, the base class's not
                response = await response
            if response is not None:
                meter.sent()
            return response
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            _finish(meter, context, outcome)

    return call


def _streamed(behaviour: Callable[..., Any], method: str, metrics: Metrics) -> Callable[..., Any]:
    """Client- and bidi-streaming methods (reflection): every request and answer message counted."""

    async def stream(requests: AsyncIterable[Any], context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        meter = metrics.rpc(method, None)

        async def counted() -> AsyncIterator[Any]:
            async for request in requests:
                meter.received()
                yield request

        outcome: BaseException | None = None
        try:
            async for message in behaviour(counted(), context):
                yield message
                meter.sent()
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            _finish(meter, context, outcome)

    return stream
