"""Long-lived connections are told to go away after `server.max_connection_age`, so clients rebalance."""

from __future__ import annotations

import asyncio

import grpc

from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import StackFactory

ECHO = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))


async def test_an_old_connection_gets_goaway_and_the_client_reconnects(make_stack: StackFactory) -> None:
    stack = await make_stack(settings={"server": {"max_connection_age": 0.3, "max_connection_age_grace": 0.3}})
    async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
        stub = pb_grpc.EndpointServiceStub(channel)
        await stub.Predict(ECHO, timeout=10)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        # The server's GOAWAY is an event the channel reports: it leaves READY without any call failing.
        await asyncio.wait_for(channel.wait_for_state_change(grpc.ChannelConnectivity.READY), 10)
        assert channel.get_state() != grpc.ChannelConnectivity.READY
        reply = await stub.Predict(ECHO, timeout=10)  # a new connection
        assert reply.response.status == pb.TASK_STATUS_SUCCESS
