"""The SDK's channel: retries only for the calls that are safe to repeat, TLS and mTLS handshakes.

The server here is a scripted EndpointService (not the gateway): it fails the first call of each
method with UNAVAILABLE, so the test sees exactly which calls the client's retry policy repeats.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme

from launch_gateway import (
    AsyncEndpoint,
    EndpointRequest,
    EndpointResponseFuture,
    GatewayClient,
    StreamingEndpoint,
    SyncEndpoint,
    UnavailableError,
)
from launch_gateway.client import ModelEndpoint
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]
DONE = pb.EndpointResponse(status=pb.TASK_STATUS_SUCCESS, result="1", task_id="t")


class FlakyService(pb_grpc.EndpointServiceServicer):
    """Fails the first call of every method with UNAVAILABLE; counts calls per method."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def _first_fails(self, method: str, context: Context) -> None:
        self.calls[method] += 1
        if self.calls[method] == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")

    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        await self._first_fails("Predict", context)
        return pb.PredictResponse(response=DONE)

    async def SubmitAsync(self, request: pb.SubmitAsyncRequest, context: Context) -> pb.SubmitAsyncResponse:
        await self._first_fails("SubmitAsync", context)
        return pb.SubmitAsyncResponse(task_id="t")

    async def GetAsyncTask(self, request: pb.GetAsyncTaskRequest, context: Context) -> pb.GetAsyncTaskResponse:
        await self._first_fails("GetAsyncTask", context)
        return pb.GetAsyncTaskResponse(response=DONE)

    async def WaitAsyncTask(self, request: pb.WaitAsyncTaskRequest, context: Context) -> pb.WaitAsyncTaskResponse:
        await self._first_fails("WaitAsyncTask", context)
        return pb.WaitAsyncTaskResponse(response=DONE)

    async def StreamPredict(
        self, request: pb.StreamPredictRequest, context: Context
    ) -> AsyncIterator[pb.StreamPredictResponse]:
        await self._first_fails("StreamPredict", context)
        yield pb.StreamPredictResponse(response=DONE)

    async def GetEndpoint(self, request: pb.GetEndpointRequest, context: Context) -> pb.GetEndpointResponse:
        await self._first_fails("GetEndpoint", context)
        kind = pb.ENDPOINT_KIND_SYNC
        return pb.GetEndpointResponse(endpoint=pb.Endpoint(id="e", name=request.endpoint_name, kind=kind))

    async def ListEndpoints(self, request: pb.ListEndpointsRequest, context: Context) -> pb.ListEndpointsResponse:
        await self._first_fails("ListEndpoints", context)
        return pb.ListEndpointsResponse(endpoints=[pb.Endpoint(id="e", name="e", kind=pb.ENDPOINT_KIND_SYNC)])


async def serve(
    service: pb_grpc.EndpointServiceServicer, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    pb_grpc.add_EndpointServiceServicer_to_server(service, server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    return server, f"localhost:{port}"


async def test_only_safe_calls_are_retried_on_unavailable() -> None:
    service = FlakyService()
    server, address = await serve(service)
    client = GatewayClient(address, timeout=10)
    endpoint = ModelEndpoint("e", "e", "sync", "READY")

    def calls() -> dict[str, str]:
        outcomes = {}
        outcomes["GetEndpoint"] = type(client.get_model_endpoint("e")).__name__
        outcomes["ListEndpoints"] = ",".join(type(e).__name__ for e in client.list_model_endpoints())
        future = AsyncEndpoint(endpoint, client)
        try:
            future.predict(EndpointRequest(args={}))
        except UnavailableError:
            outcomes["SubmitAsync"] = "UnavailableError"
        outcomes["WaitAsyncTask"] = future_get(client)
        views = (
            ("Predict", SyncEndpoint(endpoint, client)),
            ("StreamPredict", StreamingEndpoint(endpoint, client)),
        )
        for name, view in views:
            try:
                result = view.predict(EndpointRequest(args={}))
                if name == "StreamPredict":
                    list(result)  # type: ignore[call-overload]
            except UnavailableError:
                outcomes[name] = "UnavailableError"
        return outcomes

    try:
        outcomes = await asyncio.to_thread(calls)
    finally:
        client.close()
        await server.stop(0)
    assert outcomes == {
        "GetEndpoint": "SyncEndpoint",
        "ListEndpoints": "SyncEndpoint",
        "SubmitAsync": "UnavailableError",
        "WaitAsyncTask": "SUCCESS",
        "Predict": "UnavailableError",
        "StreamPredict": "UnavailableError",
    }
    assert service.calls == {
        "GetEndpoint": 2,
        "ListEndpoints": 2,
        "WaitAsyncTask": 2,
        "SubmitAsync": 1,
        "Predict": 1,
        "StreamPredict": 1,
    }


def future_get(client: GatewayClient) -> str:
    return EndpointResponseFuture(client, "e", "t").get(timeout=10).status


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_and_mtls_handshakes(ca: trustme.CA, tmp_path: Path) -> None:
    server_cert = ca.issue_cert("localhost")
    client_cert = ca.issue_cert("client.example")
    key_pair = (server_cert.private_key_pem.bytes(), server_cert.cert_chain_pems[0].bytes())
    roots = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(roots))
    tls_server, tls_address = await serve(FlakyService(), grpc.ssl_server_credentials([key_pair]))
    mtls_credentials = grpc.ssl_server_credentials(
        [key_pair], root_certificates=ca.cert_pem.bytes(), require_client_auth=True
    )
    mtls_server, mtls_address = await serve(FlakyService(), mtls_credentials)

    def calls() -> list[str]:
        seen = []
        with GatewayClient(tls_address, root_certificates=str(roots), timeout=10) as client:
            seen.append(type(client.get_model_endpoint("e")).__name__)
        with GatewayClient(
            mtls_address,
            root_certificates=ca.cert_pem.bytes(),
            client_certificate=client_cert.cert_chain_pems[0].bytes(),
            client_key=client_cert.private_key_pem.bytes(),
            timeout=10,
        ) as client:
            seen.append(type(client.get_model_endpoint("e")).__name__)
        with GatewayClient(mtls_address, root_certificates=ca.cert_pem.bytes(), timeout=3) as client:
            try:
                client.get_model_endpoint("e")
            except UnavailableError:
                seen.append("refused without a client certificate")
        return seen

    try:
        seen = await asyncio.to_thread(calls)
    finally:
        await tls_server.stop(0)
        await mtls_server.stop(0)
    assert seen == ["SyncEndpoint", "SyncEndpoint", "refused without a client certificate"]


def test_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="go together"):
        GatewayClient("localhost:1", client_certificate=b"x")
