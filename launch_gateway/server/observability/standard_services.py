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
import contextlib
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
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


@contextlib.contextmanager
def _measuring(metrics: Metrics, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[RpcMeter]:
    """One call's meter, finished with the call's code however the body ends."""
    meter = metrics.rpc(method, None)
    try:
        yield meter
    except (asyncio.CancelledError, GeneratorExit):  # the caller left
        meter.finish(Code.CANCELLED)
        raise
    except BaseException:  # an abort has set its code; anything else is what grpc answers an unexpected error with
        code = _code_of(context)
        meter.finish(code if code is not Code.OK else Code.UNKNOWN)
        raise
    else:
        meter.finish(_code_of(context))


def _unary_request(behaviour: Callable[..., Any], method: str, metrics: Metrics) -> Callable[..., Any]:
    """Unary and server-streaming methods: one request; the answer returned, yielded or written."""
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            with _measuring(metrics, method, context) as meter:
                async for message in behaviour(request, context):
                    yield message
                    meter.sent()

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        with _measuring(metrics, method, context) as meter:
            response = behaviour(request, _CountingContext(context, meter))
            if inspect.isawaitable(response):  # a servicer's own methods are coroutines, the base class's not
                response = await response
            if response is not None:
                meter.sent()
            return response

    return call


def _streamed(behaviour: Callable[..., Any], method: str, metrics: Metrics) -> Callable[..., Any]:
    """Client- and bidi-streaming methods (reflection): every request and answer message counted."""

    async def stream(requests: AsyncIterable[Any], context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        with _measuring(metrics, method, context) as meter:

            async def counted() -> AsyncIterator[Any]:
                async for request in requests:
                    meter.received()
                    yield request

            async for message in behaviour(counted(), context):
                yield message
                meter.sent()

    return stream
