"""The asyncio SDK: the same objects as `launch_gateway.client.blocking`, with awaitable calls.

    async with GatewayClient("localhost:50051", api_key="...") as client:
        endpoint = await client.get_model_endpoint("my-stream")
        async with endpoint.predict(EndpointRequest(args={"n": 3})) as stream:
            async for response in stream:
                ...

`EndpointResponseFuture.get` is awaitable; `EndpointResponseStream` is an async iterator and an
async context manager whose exit cancels the call. Requests, responses, errors and the retry policy
are shared with the blocking flavour.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from launch_gateway.client.channel import ClientBase
from launch_gateway.client.errors import BatchSubmitError, GatewayRPCError, NotFoundError, from_rpc_error
from launch_gateway.client.objects import (
    DEADLINE_SLACK,
    EndpointRequest,
    EndpointResponse,
    ModelEndpoint,
    finished,
    in_list_order,
    long_polls,
    wait_request,
)
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc

R = TypeVar("R")


class GatewayClient(ClientBase):
    """The asyncio client of launch-gateway; parameters as `gateway.GatewayClient` (see `ClientBase`)."""

    stub: pb_grpc.EndpointServiceAsyncStub

    def _connect(self, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> None:
        target = self.settings.target
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(target, credentials, options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options)
        self.stub = pb_grpc.EndpointServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def call(self, method: Callable[..., Awaitable[R]], request: Any, deadline: float | None = None) -> R:
        """Run one unary RPC with the client's metadata and deadline; errors as GatewayRPCError."""
        try:
            return await method(request, timeout=deadline or self.settings.timeout, metadata=self.call_metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def get_model_endpoint(self, endpoint_name: str) -> SyncEndpoint | AsyncEndpoint | StreamingEndpoint | None:
        """The endpoint called `endpoint_name`, as an object of its kind; None if there is none."""
        try:
            reply = await self.call(self.stub.GetEndpoint, pb.GetEndpointRequest(endpoint_name=endpoint_name))
        except NotFoundError:
            return None
        return self._endpoint_of(ModelEndpoint.from_proto(reply.endpoint))

    async def list_model_endpoints(self) -> list[Endpoint]:
        """Every endpoint the caller may call, as objects of their kinds: async, then sync, then streaming."""
        reply = await self.call(self.stub.ListEndpoints, pb.ListEndpointsRequest())
        listed = in_list_order([ModelEndpoint.from_proto(e) for e in reply.endpoints])
        return [self._endpoint_of(model_endpoint) for model_endpoint in listed]

    def _endpoint_of(self, model_endpoint: ModelEndpoint) -> SyncEndpoint | AsyncEndpoint | StreamingEndpoint:
        kinds: dict[str, type[SyncEndpoint | AsyncEndpoint | StreamingEndpoint]] = {
            "sync": SyncEndpoint, "async": AsyncEndpoint, "streaming": StreamingEndpoint,
        }  # fmt: skip
        return kinds[model_endpoint.kind()](model_endpoint, self)


class Endpoint:
    """Any kind of endpoint."""

    def __init__(self, model_endpoint: ModelEndpoint, client: GatewayClient) -> None:
        self.model_endpoint = model_endpoint
        self.client = client

    def __repr__(self) -> str:
        return f"aio.{type(self).__name__}(name={self.model_endpoint.name!r}, id={self.model_endpoint.id!r})"

    async def _update_model_endpoint_view(self) -> None:
        """Look the endpoint up again; ValueError when it is gone, as in the Launch client."""
        request = pb.GetEndpointRequest(endpoint_name=self.model_endpoint.name)
        try:
            reply = await self.client.call(self.client.stub.GetEndpoint, request)
        except NotFoundError as exc:
            raise ValueError(f"Could not update model endpoint view for endpoint {self.model_endpoint.name}") from exc
        self.model_endpoint = ModelEndpoint.from_proto(reply.endpoint)

    async def status(self) -> str | None:
        """The endpoint's current status (looked up again), e.g. "READY"."""
        await self._update_model_endpoint_view()
        return self.model_endpoint.status

    async def resource_state(self) -> dict[str, Any] | None:
        """The endpoint's current resource state (looked up again): cpus, gpus, memory, ...; None if Launch has none."""
        await self._update_model_endpoint_view()
        return self.model_endpoint.resource_state

    async def deployment_state(self) -> dict[str, Any] | None:
        """The endpoint's current deployment state (looked up again): min_workers, max_workers, ..."""
        await self._update_model_endpoint_view()
        return self.model_endpoint.deployment_state


class SyncEndpoint(Endpoint):
    """A synchronous model endpoint."""

    async def predict(self, request: EndpointRequest) -> EndpointResponse:
        """Runs a synchronous prediction request."""
        message = pb.PredictRequest(endpoint_name=self.model_endpoint.name, request=request.to_proto())
        reply = await self.client.call(self.client.stub.Predict, message)
        return EndpointResponse.from_proto(self.client, reply.response, "sync", self.client.results)


class AsyncEndpoint(Endpoint):
    """An asynchronous model endpoint."""

    async def predict(self, request: EndpointRequest) -> EndpointResponseFuture:
        """Submits a request; await the returned future's `get` for the response."""
        message = pb.SubmitAsyncRequest(endpoint_name=self.model_endpoint.name, request=request.to_proto())
        reply = await self.client.call(self.client.stub.SubmitAsync, message)
        return EndpointResponseFuture(self.client, self.model_endpoint.name, reply.task_id)

    async def predict_batch(self, requests: Sequence[EndpointRequest]) -> list[EndpointResponseFuture]:
        """Submits all requests concurrently; one future per request, in order (see the blocking flavour)."""
        results = await asyncio.gather(*(self.predict(r) for r in requests), return_exceptions=True)
        errors = [r if isinstance(r, GatewayRPCError) else None for r in results]
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, GatewayRPCError):
                raise result
        if any(errors):
            raise BatchSubmitError([r if isinstance(r, EndpointResponseFuture) else None for r in results], errors)
        return [r for r in results if isinstance(r, EndpointResponseFuture)]


class StreamingEndpoint(Endpoint):
    """A streaming model endpoint."""

    def predict(self, request: EndpointRequest) -> EndpointResponseStream:
        """Starts a streaming request; `async for` over the stream for responses as they arrive."""
        message = pb.StreamPredictRequest(endpoint_name=self.model_endpoint.name, request=request.to_proto())
        call = self.client.stub.StreamPredict(
            message, timeout=self.client.settings.timeout, metadata=self.client.call_metadata
        )
        return EndpointResponseStream(call, client=self.client)


class EndpointResponseFuture:
    """A future response from an AsyncEndpoint: `await get()` returns the EndpointResponse."""

    def __init__(self, client: GatewayClient, endpoint_name: str, async_task_id: str) -> None:
        self.client = client
        self.endpoint_name = endpoint_name
        self.async_task_id = async_task_id

    def __repr__(self) -> str:
        return f"aio.EndpointResponseFuture({self.endpoint_name!r}, {self.async_task_id!r})"

    async def get(self, timeout: float | None = None) -> EndpointResponse:  # noqa: ASYNC109 (the seed's signature)
        """Waits until the response is ready and returns it; raises as the blocking `get` does."""
        for wait in long_polls(timeout, self.async_task_id):
            request = wait_request(self.async_task_id, wait)
            reply = await self.client.call(self.client.stub.WaitAsyncTask, request, wait + DEADLINE_SLACK)
            response = finished(self.client, reply.response, self.client.results)
            if response is not None:
                return response
        raise AssertionError("long_polls ends by raising")  # pragma: no cover


class EndpointResponseStream(AsyncIterator[EndpointResponse]):
    """An async stream of EndpointResponse objects, one per event as it arrives.

    An async context manager: leaving it (or `close()`) cancels the call, which stops the upstream.
    """

    def __init__(self, response: Any, client: GatewayClient | None = None) -> None:
        self.response = response  # the gRPC call
        self.client = client
        self._messages: AsyncIterator[pb.StreamPredictResponse] = response.__aiter__()

    def __aiter__(self) -> EndpointResponseStream:
        return self

    async def __anext__(self) -> EndpointResponse:
        try:
            message = await self._messages.__anext__()
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        except asyncio.CancelledError:
            if self.response.cancelled():
                raise StopAsyncIteration from None  # we closed it
            raise
        form = self.client.results if self.client is not None else "json"
        return EndpointResponse.from_proto(self.client, message.response, "stream", form)

    def close(self) -> None:
        """Cancel the call; the gateway cancels the upstream stream."""
        self.response.cancel()

    async def __aenter__(self) -> EndpointResponseStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
