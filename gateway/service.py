"""The EndpointService servicer: each RPC resolves its endpoint, translates, and calls one route.

Data flows one way: servicer -> translate -> upstream, and back. The servicer decides what the
RPCs mean (which endpoint kinds each accepts, how long a call may take, when a cached endpoint is
stale); `translate` shapes bodies and `upstream` speaks HTTP.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from gateway._proto.launch_gateway.v1 import endpoint_service_pb2 as pb
from gateway._proto.launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from gateway.boundary import stream_boundary, unary_boundary
from gateway.clock import Clock
from gateway.config import Settings
from gateway.credentials import Credential, UpstreamCredentials
from gateway.endpoints import EndpointDirectory
from gateway.errors import (
    Code,
    GatewayError,
    InvalidArgument,
    UpstreamProtocolError,
    UpstreamTimeout,
    WrongEndpointKind,
)
from gateway.metadata import passed_through_headers
from gateway.translate import kind_name, to_endpoint_response, to_upstream_body
from gateway.upstream import LaunchAPI, UpstreamCall
from gateway.waits import TaskWaits

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]

# The RPC that serves each endpoint kind, for FAILED_PRECONDITION messages.
_RPC_FOR_KIND = {
    pb.ENDPOINT_KIND_SYNC: "Predict",
    pb.ENDPOINT_KIND_ASYNC: "SubmitAsync",
    pb.ENDPOINT_KIND_STREAMING: "StreamPredict",
}
# Launch's sync route also serves streaming endpoints (launch-http-api.md §1).
_PREDICT_KINDS = frozenset({pb.ENDPOINT_KIND_SYNC, pb.ENDPOINT_KIND_STREAMING})
_ASYNC_KINDS = frozenset({pb.ENDPOINT_KIND_ASYNC})
_STREAM_KINDS = frozenset({pb.ENDPOINT_KIND_STREAMING})


class EndpointService(pb_grpc.EndpointServiceServicer):
    """Serves launch_gateway.v1.EndpointService against one Launch API."""

    def __init__(
        self,
        settings: Settings,
        api: LaunchAPI,
        credentials: UpstreamCredentials,
        directory: EndpointDirectory,
        waits: TaskWaits,
        clock: Clock,
    ) -> None:
        self._timeouts = settings.timeouts
        self._api = api
        self._credentials = credentials
        self._directory = directory
        self._waits = waits
        self._clock = clock

    # --- per-call plumbing ---------------------------------------------------------------

    def _budget(self, context: Context, default: float) -> float:
        """Seconds an upstream request may take: the default, cut to the caller's deadline."""
        remaining = context.time_remaining()
        if remaining is None:
            return default
        budget = min(default, remaining - self._timeouts.deadline_margin)
        if budget <= 0:
            raise UpstreamTimeout("the call's deadline leaves no time for the upstream request")
        return budget

    def _call(self, context: Context, default_timeout: float) -> tuple[UpstreamCall, Credential]:
        metadata = context.invocation_metadata()
        credential = self._credentials.for_call(metadata)
        call = UpstreamCall(
            authorization=credential.authorization,
            timeout=self._budget(context, default_timeout),
            headers=passed_through_headers(metadata),
        )
        return call, credential

    async def _on_endpoint(
        self,
        rpc: str,
        name: str,
        kinds: frozenset[pb.EndpointKind.ValueType],
        call: UpstreamCall,
        credential: Credential,
        use: Callable[[pb.Endpoint], Awaitable[T]],
    ) -> T:
        """Resolve `name`, check its kind, and run `use` on it.

        A task route's 404 means the cached record is stale (the endpoint was deleted or
        re-created): the entry is dropped and, when a fresh lookup gives a new id, `use` runs once
        more. Nothing was created upstream by a 404, so repeating is safe for every route.
        """
        if not name:
            raise InvalidArgument("endpoint_name", "must not be empty")
        endpoint = await self._directory.resolve(name, call, credential.scope)
        for attempt in range(2):
            if endpoint.kind not in kinds:
                right = _RPC_FOR_KIND.get(endpoint.kind)
                hint = f"; call it with {right}" if right else ""
                kind = kind_name(endpoint.kind)
                article = "an" if kind[0] in "aeiou" else "a"
                raise WrongEndpointKind(f"{rpc} cannot call endpoint {name!r}: it is {article} {kind} endpoint{hint}")
            try:
                return await use(endpoint)
            except GatewayError as exc:
                if exc.code != Code.NOT_FOUND or attempt:
                    raise
                self._directory.forget(name, credential.scope)
                fresh = await self._directory.resolve(name, call, credential.scope)
                if fresh.id == endpoint.id:
                    raise
                endpoint = fresh
        raise AssertionError("unreachable")  # pragma: no cover

    # --- RPCs ----------------------------------------------------------------------------

    @unary_boundary
    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        call, credential = self._call(context, self._timeouts.sync)

        async def predict(endpoint: pb.Endpoint) -> Any:
            body = to_upstream_body(request.request, endpoint.kind)
            return await self._api.sync_predict(endpoint.id, body, call)

        payload = await self._on_endpoint(
            "Predict", request.endpoint_name, _PREDICT_KINDS, call, credential, predict
        )
        return pb.PredictResponse(response=to_endpoint_response(payload))

    @unary_boundary
    async def SubmitAsync(self, request: pb.SubmitAsyncRequest, context: Context) -> pb.SubmitAsyncResponse:
        call, credential = self._call(context, self._timeouts.submit)

        async def submit(endpoint: pb.Endpoint) -> str:
            body = to_upstream_body(request.request, endpoint.kind)
            return await self._api.submit_async(endpoint.id, body, call)

        task_id = await self._on_endpoint(
            "SubmitAsync", request.endpoint_name, _ASYNC_KINDS, call, credential, submit
        )
        return pb.SubmitAsyncResponse(task_id=task_id)

    async def _poll(self, task_id: str, call: UpstreamCall) -> pb.EndpointResponse:
        payload = await self._api.get_task(task_id, call)
        return to_endpoint_response(payload, task_id=task_id)

    @unary_boundary
    async def GetAsyncTask(
        self, request: pb.GetAsyncTaskRequest, context: Context
    ) -> pb.GetAsyncTaskResponse:
        if not request.task_id:
            raise InvalidArgument("task_id", "must not be empty")
        call, _ = self._call(context, self._timeouts.poll)
        return pb.GetAsyncTaskResponse(response=await self._poll(request.task_id, call))

    @unary_boundary
    async def WaitAsyncTask(
        self, request: pb.WaitAsyncTaskRequest, context: Context
    ) -> pb.WaitAsyncTaskResponse:
        if not request.task_id:
            raise InvalidArgument("task_id", "must not be empty")
        wait = self._timeouts.max_wait
        if request.HasField("timeout"):
            requested = request.timeout.ToTimedelta().total_seconds()
            if requested < 0:
                raise InvalidArgument("timeout", "must not be negative")
            if requested > 0:
                wait = min(wait, requested)
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, remaining - self._timeouts.deadline_margin)
        # The shared loop outlives any one waiter, so its polls get the poll timeout, not ours.
        call, credential = self._call(context, self._timeouts.poll)
        poll_call = UpstreamCall(call.authorization, self._timeouts.poll, call.headers)
        response = await self._waits.wait(
            f"{credential.scope}/{request.task_id}",
            lambda: self._poll(request.task_id, poll_call),
            wait,
        )
        return pb.WaitAsyncTaskResponse(response=response)

    @stream_boundary
    async def StreamPredict(
        self, request: pb.StreamPredictRequest, context: Context
    ) -> AsyncIterator[pb.StreamPredictResponse]:
        call, credential = self._call(context, self._timeouts.stream_idle)

        async def open_stream(endpoint: pb.Endpoint) -> tuple[AsyncGenerator[bytes, None], bytes | None]:
            body = to_upstream_body(request.request, endpoint.kind)
            events = self._api.stream(endpoint.id, body, call)
            # Read the first event here, so a 404 on opening still takes the stale-cache path.
            try:
                return events, await anext(events, None)
            except BaseException:
                await events.aclose()
                raise

        events, first = await self._on_endpoint(
            "StreamPredict", request.endpoint_name, _STREAM_KINDS, call, credential, open_stream
        )
        try:
            if first is None:
                return
            yield _stream_message(first)
            async for data in events:
                yield _stream_message(data)
        finally:
            await events.aclose()

    @unary_boundary
    async def GetEndpoint(self, request: pb.GetEndpointRequest, context: Context) -> pb.GetEndpointResponse:
        if not request.endpoint_name:
            raise InvalidArgument("endpoint_name", "must not be empty")
        call, credential = self._call(context, self._timeouts.poll)
        endpoint = await self._directory.resolve(request.endpoint_name, call, credential.scope)
        return pb.GetEndpointResponse(endpoint=endpoint)


def _stream_message(data: bytes) -> pb.StreamPredictResponse:
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise UpstreamProtocolError(f"upstream stream sent an event whose data is not JSON: {exc}") from None
    return pb.StreamPredictResponse(response=to_endpoint_response(payload, streaming=True))
