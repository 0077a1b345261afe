"""The Launch client's endpoint views and request headers: `status()`, `resource_state()`, `deployment_state()`,
`list_model_endpoints()` and `EndpointRequest(extra_headers=...)`, against a real gateway."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from google.protobuf import struct_pb2

from launch_gateway import (
    AsyncEndpoint,
    EndpointRequest,
    GatewayClient,
    InvalidArgumentError,
    ModelEndpoint,
    StreamingEndpoint,
    SyncEndpoint,
)
from launch_gateway.client import aio
from launch_gateway.client.objects import in_list_order
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, Stack, StackFactory, upstream_calls
from tests.fake_clock import OffsetClock

RESOURCES = {"cpus": 2, "gpus": 1, "memory": "8Gi", "gpu_type": "nvidia-ampere-a10", "optimize_costs": False}
DEPLOYMENT = {"min_workers": 1, "max_workers": 3, "per_worker": 2, "available_workers": 1, "unavailable_workers": 0}


def test_extra_headers_go_in_the_request_message() -> None:
    request = EndpointRequest(args={"n": 1}, extra_headers={"X-Team": "vision", "x-trace-tag": "a b"})
    assert dict(request.to_proto().extra_headers) == {"X-Team": "vision", "x-trace-tag": "a b"}
    assert "X-Team" in repr(request)
    assert "vision" not in repr(request)  # values may be secrets
    assert len(EndpointRequest(args={}).to_proto().extra_headers) == 0


@pytest.mark.parametrize("headers", [{"x-n": 1}, {2: "x"}], ids=["int-value", "int-name"])
def test_extra_headers_must_be_strings(headers: dict[Any, Any]) -> None:
    with pytest.raises(TypeError, match="extra_headers"):
        EndpointRequest(args={}, extra_headers=headers)


def test_model_endpoint_states_come_back_with_launchs_ints() -> None:
    resources, deployment = struct_pb2.Struct(), struct_pb2.Struct()
    resources.update(RESOURCES)
    deployment.update(DEPLOYMENT)  # a Struct holds every number as a double
    message = pb.Endpoint(id="end_1", name="e", kind=pb.ENDPOINT_KIND_SYNC, status="READY", resource_state=resources,
                          deployment_state=deployment, status_reason="scaled")  # fmt: skip
    endpoint = ModelEndpoint.from_proto(message)
    assert (endpoint.resource_state, endpoint.deployment_state, endpoint.status_reason) == (
        RESOURCES,
        DEPLOYMENT,
        "scaled",
    )
    assert isinstance(endpoint.resource_state and endpoint.resource_state["gpus"], int)
    bare = ModelEndpoint.from_proto(pb.Endpoint(name="e", kind=pb.ENDPOINT_KIND_SYNC))
    assert (bare.resource_state, bare.deployment_state, bare.status_reason) == (None, None, None)


def test_listed_endpoints_come_async_then_sync_then_streaming() -> None:
    kinds = ["streaming", "sync", "async", "unknown", "sync", "async"]
    listed = [ModelEndpoint(f"e{i}", f"id{i}", kind, "READY") for i, kind in enumerate(kinds)]
    assert [e.name for e in in_list_order(listed)] == ["e2", "e5", "e1", "e4", "e0"]


def records(status: str) -> list[dict[str, Any]]:
    """Launch's endpoint records, the way GET /v1/model-endpoints lists them."""
    return [
        {"id": "end_s", "name": "stream", "endpoint_type": "streaming", "status": status},
        {"id": "end_y", "name": "plain", "endpoint_type": "sync", "status": status,
         "resource_state": RESOURCES, "deployment_state": DEPLOYMENT},
        {"id": "end_a", "name": "queue", "endpoint_type": "async", "status": status, "resource_state": None,
         "deployment_state": None},
    ]  # fmt: skip


@dataclass
class RecordsStack:
    stack: Stack
    clock: OffsetClock  # the gateway's: pushing it past the endpoint cache's time to live makes it look up again

    def expire(self) -> None:
        self.clock.offset += 60


@pytest.fixture
async def records_stack(make_stack: StackFactory, raw_upstream: RawUpstream) -> RecordsStack:
    """A gateway in front of a Launch whose endpoints are READY at the first lookup of `plain`, then
    UPDATE_PENDING."""
    lookups = 0

    async def model_endpoints(request: web.Request) -> web.Response:
        nonlocal lookups
        name = request.query.get("name")
        if name == "plain":
            lookups += 1
        listed = records("READY" if lookups < 2 else "UPDATE_PENDING")
        return web.json_response({"model_endpoints": [r for r in listed if name in (None, r["name"])]})

    clock = OffsetClock()
    upstream = await raw_upstream(model_endpoints)
    return RecordsStack(await make_stack(settings={"upstream": {"url": upstream}}, clock=clock), clock)


async def test_endpoint_views_look_the_endpoint_up_again(records_stack: RecordsStack) -> None:
    def calls() -> tuple[Any, ...]:
        with GatewayClient(records_stack.stack.gateway.address, timeout=30) as client:
            plain = client.get_model_endpoint("plain")
            assert isinstance(plain, SyncEndpoint)
            assert plain.model_endpoint.status == "READY"
            records_stack.expire()
            seen = plain.status(), plain.resource_state(), plain.deployment_state()
            return (*seen, plain.model_endpoint.status)

    assert await asyncio.to_thread(calls) == ("UPDATE_PENDING", RESOURCES, DEPLOYMENT, "UPDATE_PENDING")
    async with aio.GatewayClient(records_stack.stack.gateway.address, timeout=30) as client:
        queue = await client.get_model_endpoint("queue")
        assert isinstance(queue, aio.AsyncEndpoint)
        assert (await queue.resource_state(), await queue.deployment_state(), await queue.status()) == (
            None, None, "UPDATE_PENDING"
        )  # fmt: skip


async def test_an_endpoint_gone_makes_its_views_raise_value_error(make_stack: StackFactory,
                                                                  raw_upstream: RawUpstream) -> None:  # fmt: skip
    gone = False

    async def vanishing(request: web.Request) -> web.Response:
        listed = [] if gone else records("READY")
        return web.json_response({"model_endpoints": [r for r in listed if r["name"] == request.query.get("name")]})

    upstream = await raw_upstream(vanishing)
    clock = OffsetClock()
    stack = await make_stack(settings={"upstream": {"url": upstream}}, clock=clock)
    async with aio.GatewayClient(stack.gateway.address, timeout=30) as client:
        plain = await client.get_model_endpoint("plain")
        assert plain is not None
        gone = True
        clock.offset += 60
        with pytest.raises(ValueError, match="Could not update model endpoint view for endpoint plain"):
            await plain.status()


async def test_list_model_endpoints_gives_endpoint_objects_async_then_sync_then_streaming(
    records_stack: RecordsStack,
) -> None:
    def listed() -> list[tuple[type, str]]:
        with GatewayClient(records_stack.stack.gateway.address, timeout=30) as client:
            return [(type(e), e.model_endpoint.name) for e in client.list_model_endpoints()]

    assert await asyncio.to_thread(listed) == [
        (AsyncEndpoint, "queue"), (SyncEndpoint, "plain"), (StreamingEndpoint, "stream")
    ]  # fmt: skip
    async with aio.GatewayClient(records_stack.stack.gateway.address, timeout=30) as client:
        endpoints = await client.list_model_endpoints()
    assert [(type(e), e.model_endpoint.name) for e in endpoints] == [
        (aio.AsyncEndpoint, "queue"), (aio.SyncEndpoint, "plain"), (aio.StreamingEndpoint, "stream")
    ]  # fmt: skip
    assert endpoints[1].model_endpoint.resource_state == RESOURCES


async def test_extra_headers_reach_launch_on_every_kind_of_call(stack: Stack) -> None:
    headers = {"X-Team": "vision"}

    def calls() -> None:
        with GatewayClient(stack.gateway.address, timeout=30) as client:
            echo: Any = client.get_model_endpoint("echo")
            echo_async: Any = client.get_model_endpoint("echo-async")
            count: Any = client.get_model_endpoint("count")
            echo.predict(EndpointRequest(args={}, extra_headers=headers))
            echo_async.predict(EndpointRequest(args={"delay": 0}, extra_headers=headers)).get(timeout=10)
            assert len(list(count.predict(EndpointRequest(args={"n": 1}, extra_headers=headers)))) == 1

    await asyncio.to_thread(calls)
    posted = {r.path: r.headers.get("x-team") for r in upstream_calls(stack.launch) if r.method == "POST"}
    assert posted == {"/v1/sync-tasks": "vision", "/v1/async-tasks": "vision", "/v1/streaming-tasks": "vision"}


async def test_a_refused_extra_header_is_invalid_argument(stack: Stack) -> None:
    async with aio.GatewayClient(stack.gateway.address, timeout=30) as client:
        echo = await client.get_model_endpoint("echo")
        assert isinstance(echo, aio.SyncEndpoint)
        with pytest.raises(InvalidArgumentError) as caught:
            await echo.predict(EndpointRequest(args={}, extra_headers={"Authorization": "Bearer stolen"}))
    assert "extra_headers" in caught.value.message
    assert all(r.headers.get("authorization") != "Bearer stolen" for r in upstream_calls(stack.launch))
