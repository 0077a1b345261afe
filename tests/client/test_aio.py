"""The asyncio SDK against a real gateway: awaitable get, async for over a stream, async close."""

from __future__ import annotations

import asyncio
import json

import pytest

from launch_gateway import BatchSubmitError, EndpointRequest, PermissionDeniedError
from launch_gateway.client import aio
from tests.client.test_blocking import REFUSED, partly_refused_batch
from tests.conftest import Endless, Stack, StackFactory
from tests.edge.conftest import ENV, KEY_A, LAUNCH_KEY_A, tenants


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


async def test_aio_partly_refused_batch_keeps_the_accepted_futures(make_stack: StackFactory) -> None:
    stack = await make_stack(api_keys=[LAUNCH_KEY_A], settings={"tenants": tenants()}, gateway_env=ENV)
    async with aio.GatewayClient(stack.gateway.address, api_key=KEY_A, timeout=30) as client:
        endpoint = await client.get_model_endpoint("echo-async")
        assert isinstance(endpoint, aio.AsyncEndpoint)
        with pytest.raises(BatchSubmitError) as caught:
            await endpoint.predict_batch(partly_refused_batch())
        futures = caught.value.futures
        results = [json.loads((await f.get(timeout=10)).result or "") if f else None for f in futures]
    assert [type(e) for e in caught.value.errors] == [
        PermissionDeniedError if i in REFUSED else type(None) for i in range(5)
    ]
    assert results == [{"i": 0}, None, {"i": 2}, None, {"i": 4}]
    assert len(stack.launch.task_ids) == 3
