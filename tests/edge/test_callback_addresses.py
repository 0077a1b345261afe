"""Callback URLs that point into a network are refused: private and link-local addresses and the other
internal ranges, in IPv4, IPv6 and IPv4-mapped IPv6 form, unless the tenant sets `allow_private`.

Launch POSTs results to the callback URL from inside its own network, so these are what a caller
could otherwise reach through it. Hosts are IP literals here: nothing is resolved.
"""

from __future__ import annotations

import grpc
import pytest

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory
from tests.edge.conftest import ENV, KEY_B, bearer, tenants

INTERNAL = [
    pytest.param("10.0.0.1", id="private-10"),
    pytest.param("172.16.5.4", id="private-172.16"),
    pytest.param("192.168.1.1", id="private-192.168"),
    pytest.param("169.254.169.254", id="link-local-metadata"),
    pytest.param("169.254.7.7", id="link-local"),
    pytest.param("100.64.0.1", id="shared-cgnat"),
    pytest.param("0.0.0.0", id="this-network"),
    pytest.param("[fd12:3456::1]", id="ipv6-unique-local"),
    pytest.param("[fe80::1]", id="ipv6-link-local"),
    pytest.param("[::ffff:10.0.0.1]", id="ipv4-mapped-private"),
    pytest.param("[::ffff:169.254.169.254]", id="ipv4-mapped-link-local"),
]


async def team_b(make_stack: StackFactory, **callbacks: object) -> Stack:
    """team-b (forwards its own key) may name any callback host over https."""
    team = tenants(**{"team-b": {"callbacks": {"hosts": ["*"], **callbacks}}})
    return await make_stack(api_keys=[KEY_B], settings={"tenants": team}, gateway_env=ENV)


def submit(host: str) -> pb.SubmitAsyncRequest:
    # A task that outlives the test: Launch never gets to call back, wherever the URL points.
    request = pb.EndpointRequest(args_json='{"delay": 60}', callback_url=f"https://{host}/hook")
    return pb.SubmitAsyncRequest(endpoint_name="echo-async", request=request)


def submissions(stack: Stack) -> list[object]:
    return [r for r in stack.launch.records if r.path == "/v1/async-tasks"]


@pytest.mark.parametrize("host", INTERNAL)
async def test_an_internal_callback_address_is_refused(make_stack: StackFactory, host: str) -> None:
    stack = await team_b(make_stack)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.SubmitAsync(submit(host), timeout=10, metadata=bearer(KEY_B))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = caught.value.details() or ""
    assert details.startswith("request.callback_url: "), details
    assert "internal address" in details
    assert submissions(stack) == []  # refused before Launch saw it


@pytest.mark.parametrize("host", INTERNAL[:1] + INTERNAL[3:4] + INTERNAL[8:9])
async def test_allow_private_accepts_internal_callback_addresses(make_stack: StackFactory, host: str) -> None:
    stack = await team_b(make_stack, allow_private=True)
    reply = await stack.stub.SubmitAsync(submit(host), timeout=10, metadata=bearer(KEY_B))
    assert reply.task_id
    assert len(submissions(stack)) == 1


async def test_a_public_callback_address_is_accepted(make_stack: StackFactory) -> None:
    stack = await team_b(make_stack)
    reply = await stack.stub.SubmitAsync(submit("93.184.215.14"), timeout=10, metadata=bearer(KEY_B))
    assert reply.task_id
    assert len(submissions(stack)) == 1


async def test_open_mode_has_no_callback_policy(make_stack: StackFactory) -> None:
    stack = await make_stack()
    request = pb.EndpointRequest(args_json='{"delay": 60}', callback_url="http://10.0.0.1/hook")
    reply = await stack.stub.SubmitAsync(pb.SubmitAsyncRequest(endpoint_name="echo-async", request=request), timeout=10)
    assert reply.task_id
    assert len(submissions(stack)) == 1
