"""The asyncio SDK against a real gateway: awaitable get, async for over a stream, async close."""

from __future__ import annotations

import asyncio
import json

import pytest

from launch_gateway import EndpointRequest
from launch_gateway.client import aio
from tests.conftest import Endless, Stack, StackFactory


async def test_aio_sync_async_and_stream(stack: Stack) -> None:
    async with aio.GatewayClient(stack.gateway.address, timeout=30) as client:
        echo = await client.get_model_endpoint("echo")
        assert isinstance(echo, aio.SyncEndpoint)
        response = await echo.predict(EndpointRequest(args={"n": 3}))
        assert json.loads(response.result or "") == {"n": 3}

        later = await client.get_model_endpoint("echo-async")
        assert isinstance(later, aio.AsyncEndpoint)
        future = await later.predict(EndpointRequest(args={"delay": 0.1}))
        assert (await future.get(timeout=10)).status == "SUCCESS"
        with pytest.raises(TimeoutError):
            await (await later.predict(EndpointRequest(args={"delay": 30}))).get(timeout=0.2)
        with pytest.raises(ValueError, match="Timeout must be greater than 0"):
            await future.get(timeout=0)

        futures = await later.predict_batch([EndpointRequest(args={"delay": 0, "i": i}) for i in range(5)])
        results = await asyncio.gather(*(f.get(timeout=10) for f in futures))
        assert [json.loads(r.result or "")["i"] for r in results] == list(range(5))

        count = await client.get_model_endpoint("count")
        assert isinstance(count, aio.StreamingEndpoint)
        events = [json.loads(r.result or "") async for r in count.predict(EndpointRequest(args={"n": 3}))]
        assert events == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert await client.get_model_endpoint("missing") is None


async def test_aio_stream_exit_cancels_the_upstream(make_stack: StackFactory) -> None:
    endless = Endless()
    stack = await make_stack([endless.spec()])
    async with aio.GatewayClient(stack.gateway.address) as client:
        endpoint = await client.get_model_endpoint("endless")
        assert isinstance(endpoint, aio.StreamingEndpoint)
        async with endpoint.predict(EndpointRequest(args={})) as stream:
            async for response in stream:
                assert response.status == "SUCCESS"
                break
        await asyncio.wait_for(endless.stopped.wait(), 5)
