"""Callback URLs: the tenant's hosts only, https unless allowed, no internal addresses unless allowed."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from aiohttp import web

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, StackFactory
from tests.edge.conftest import ENV, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants

STRICT = tenants(
    **{
        "team-b": {
            "endpoints": ["echo*"],
            "callbacks": {"hosts": ["hooks.example.com", "localhost", "127.0.0.1"]},
        }
    }
)


def submit(url: str) -> pb.SubmitAsyncRequest:
    return pb.SubmitAsyncRequest(
        endpoint_name="echo-async",
        request=pb.EndpointRequest(
            args_json='{"delay": 0}',
            callback_url=url,
            callback_auth_basic=pb.BasicCallbackAuth(username="u", password="callback-password-xyz"),
        ),
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/cb", "must use https, not http"),
        ("https://evil.example.net/cb", "host evil.example.net is not one of this tenant's callback hosts"),
        ("https://localhost:9/cb", "host localhost resolves to an internal address"),
        ("https://127.0.0.1:9/cb", "internal address (127.0.0.1)"),
    ],
    ids=["http", "other-host", "loopback-name", "loopback-ip"],
)
async def test_callback_urls_outside_the_policy_are_refused(make_stack: StackFactory, url: str, reason: str) -> None:
    stack = await make_stack(api_keys=[KEY_B], settings={"tenants": STRICT}, gateway_env=ENV)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.SubmitAsync(submit(url), timeout=10, metadata=bearer(KEY_B))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason in (caught.value.details() or "")
    assert not [r for r in stack.launch.records if r.path == "/v1/async-tasks"]


async def test_an_allowed_callback_is_submitted_and_arrives(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.json_response({})

    url = await raw_upstream(hook)  # http://127.0.0.1:port: team-a allows http and private addresses
    stack = await make_stack(api_keys=[LAUNCH_KEY_A], settings={"tenants": tenants()}, gateway_env=ENV)
    reply = await stack.stub.SubmitAsync(submit(f"{url}/cb"), timeout=10, metadata=bearer(KEY_A))
    body = await asyncio.wait_for(received.get(), 10)
    assert body["status"] == "SUCCESS"
    assert reply.task_id.startswith("t1.")
