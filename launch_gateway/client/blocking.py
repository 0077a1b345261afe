"""The blocking SDK: the Launch client's shape over gRPC.

    client = GatewayClient("localhost:50051", api_key="...")
    endpoint = client.get_model_endpoint("my-endpoint")   # SyncEndpoint, AsyncEndpoint or StreamingEndpoint
    response = endpoint.predict(EndpointRequest(args={"x": 1}))

Moving from the Launch client means changing its constructor for this one; the endpoint, request,
response, future and stream objects behave as the Launch client's do, except that futures wait with
server-side long polls (WaitAsyncTask) instead of sleeping 2 s between polls. With `results="launch"` each
response's `result` has the Launch client's shape too (docs/sdk.md lists what still differs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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
    """A client of launch-gateway, shaped like the Launch client (`LaunchClient`); parameters in `ClientBase`."""

    stub: pb_grpc.EndpointServiceStub

    def _connect(self, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> None:
        target = self.settings.target
        if credentials is not None:
            self._channel = grpc.secure_channel(target, credentials, options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        self.stub = pb_grpc.EndpointServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, method: Callable[..., R], request: Any, timeout: float | None = None) -> R:
        """Run one unary RPC with the client's metadata and deadline; errors as GatewayRPCError."""
        try:
            return method(request, timeout=timeout or self.settings.timeout, metadata=self.call_metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def get_model_endpoint(self, endpoint_name: str) -> SyncEndpoint | AsyncEndpoint | StreamingEndpoint | None:
        """The endpoint called `endpoint_name`, as an object of its kind; None if there is none."""
        try:
            reply = self.call(self.stub.GetEndpoint, pb.GetEndpointRequest(endpoint_name=endpoint_name))
        except NotFoundError:
            return None
        return self._endpoint_of(ModelEndpoint.from_proto(reply.endpoint))

    def list_model_endpoints(self) -> list[Endpoint]:
        """Every endpoint the caller may call, as objects of their kinds: async, then sync, then streaming."""
        reply = self.call(self.stub.ListEndpoints, pb.ListEndpointsRequest())
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
        return f"{type(self).__name__}(name={self.model_endpoint.name!r}, id={self.model_endpoint.id!r})"

    def _update_model_endpoint_view(self) -> None:
        """Look the endpoint up again; ValueError when it is gone, as in the Launch client."""
        request = pb.GetEndpointRequest(endpoint_name=self.model_endpoint.name)
        try:
            reply = self.client.call(self.client.stub.GetEndpoint, request)
        except NotFoundError as exc:
            raise ValueError(f"Could not update model endpoint view for endpoint {self.model_endpoint.name}") from exc
        self.model_endpoint = ModelEndpoint.from_proto(reply.endpoint)

    def status(self) -> str | None:
        """The endpoint's current status (looked up again), e.g. "READY"."""
        self._update_model_endpoint_view()
        return self.model_endpoint.status

    def resource_state(self) -> dict[str, Any] | None:
        """The endpoint's current resource state (looked up again): cpus, gpus, memory, ...; None if Launch has none."""
        self._update_model_endpoint_view()
        return self.model_endpoint.resource_state

    def deployment_state(self) -> dict[str, Any] | None:
        """The endpoint's current deployment state (looked up again): min_workers, max_workers, ..."""
        self._update_model_endpoint_view()
        return self.model_endpoint.deployment_state


class SyncEndpoint(Endpoint):
    """A synchronous model endpoint."""

    def predict(self, request: EndpointRequest) -> EndpointResponse:
        """Runs a synchronous prediction request."""
        message = pb.PredictRequest(endpoint_name=self.model_endpoint.name, request=request.to_proto())
        reply = self.client.call(self.client.stub.Predict, message)
        return EndpointResponse.from_proto(self.client, reply.response, "sync", self.client.results)


class AsyncEndpoint(Endpoint):
    """An asynchronous model endpoint."""

    def _submit_message(self, request: EndpointRequest) -> pb.SubmitAsyncRequest:
        return pb.SubmitAsyncRequest(endpoint_name=self.model_endpoint.name, request=request.to_proto())

    def predict(self, request: EndpointRequest) -> EndpointResponseFuture:
        """Submits a request; the returned future's `get` waits for the response."""
        reply = self.client.call(self.client.stub.SubmitAsync, self._submit_message(request))
        return EndpointResponseFuture(self.client, self.model_endpoint.name, reply.task_id)

    def predict_batch(self, requests: Sequence[EndpointRequest]) -> list[EndpointResponseFuture]:
        """Submits all requests at once (concurrently, on one connection); one future per request, in order.

        If some submissions fail, BatchSubmitError carries the futures of those that were accepted,
        so no accepted task is lost.
        """
        client = self.client
        calls = [
            client.stub.SubmitAsync.future(
                self._submit_message(r), timeout=client.settings.timeout, metadata=client.call_metadata
            )
            for r in requests
        ]
        futures: list[EndpointResponseFuture | None] = []
        errors: list[GatewayRPCError | None] = []
        for call in calls:
            try:
                futures.append(EndpointResponseFuture(client, self.model_endpoint.name, call.result().task_id))
                errors.append(None)
            except grpc.RpcError as exc:
                futures.append(None)
                errors.append(from_rpc_error(exc))
        if any(errors):
            raise BatchSubmitError(futures, errors)
        return [f for f in futures if f is not None]


class StreamingEndpoint(Endpoint):
    """A streaming model endpoint."""

    def predict(self, request: EndpointRequest) -> EndpointResponseStream:
        """Starts a streaming request; iterate the returned stream for responses as they arrive."""
        message = pb.StreamPredictRequest(endpoint_name=self.model_endpoint.name, request=request.to_proto())
        call = self.client.stub.StreamPredict(
            message, timeout=self.client.settings.timeout, metadata=self.client.call_metadata
        )
        return EndpointResponseStream(call, client=self.client)


class EndpointResponseFuture:
    """A future response from an AsyncEndpoint: `get` returns the EndpointResponse once it is ready.

    This object should not be directly instantiated by the user.
    """

    def __init__(self, client: GatewayClient, endpoint_name: str, async_task_id: str) -> None:
        self.client = client
        self.endpoint_name = endpoint_name
        self.async_task_id = async_task_id

    def __repr__(self) -> str:
        return f"EndpointResponseFuture({self.endpoint_name!r}, {self.async_task_id!r})"

    def get(self, timeout: float | None = None) -> EndpointResponse:
        """Blocks until the response is ready and returns it.

        Parameters:
            timeout: The maximum number of seconds to wait for the response. If None, then the
                method will block indefinitely until the response is ready.

        Raises TimeoutError when `timeout` passes first, and ValueError for a timeout <= 0 or a task
        whose status is UNDEFINED, as the Launch client does.
        """
        for wait in long_polls(timeout, self.async_task_id):
            reply = self.client.call(
                self.client.stub.WaitAsyncTask, wait_request(self.async_task_id, wait), wait + DEADLINE_SLACK
            )
            response = finished(self.client, reply.response, self.client.results)
            if response is not None:
                return response
        raise AssertionError("long_polls ends by raising")  # pragma: no cover


class EndpointResponseStream(Iterator[EndpointResponse]):
    """A stream of EndpointResponse objects from a StreamingEndpoint, one per event as it arrives.

    Also a context manager: leaving it (or `close()`) cancels the call, which stops the upstream.
    This object should not be directly instantiated by the user.
    """

    def __init__(self, response: Any, client: GatewayClient | None = None) -> None:
        self.response = response  # the gRPC call
        self.client = client

    def __iter__(self) -> EndpointResponseStream:
        return self

    def __next__(self) -> EndpointResponse:
        try:
            message: pb.StreamPredictResponse = next(self.response)
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
            if error.code == grpc.StatusCode.CANCELLED and self.response.cancelled():
                raise StopIteration from None  # we closed it
            raise error from None
        form = self.client.results if self.client is not None else "json"
        return EndpointResponse.from_proto(self.client, message.response, "stream", form)

    def close(self) -> None:
        """Cancel the call; the gateway cancels the upstream stream."""
        self.response.cancel()

    def __enter__(self) -> EndpointResponseStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
