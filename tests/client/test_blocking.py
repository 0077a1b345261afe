"""The blocking SDK against a real gateway. Blocking calls run in a thread: the servers share this loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from launch_gateway import (
    AsyncEndpoint,
    EndpointRequest,
    FailedPreconditionError,
    GatewayClient,
    NotFoundError,
    StreamingEndpoint,
    SyncEndpoint,
)
from launch_gateway.testing.local_launch import Faults
from tests.conftest import Endless, Stack, StackFactory


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[GatewayClient]:
    client = GatewayClient(stack.gateway.address, timeout=30)
    yield client
    client.close()


def endpoint_of(client: GatewayClient, name: str) -> SyncEndpoint | AsyncEndpoint | StreamingEndpoint:
    endpoint = client.get_model_endpoint(name)
    assert endpoint is not None
    return endpoint


async def test_get_model_endpoint_gives_the_class_of_its_kind(client: GatewayClient) -> None:
    kinds = await asyncio.to_thread(
        lambda: [type(client.get_model_endpoint(n)) for n in ("echo", "echo-async", "count")]
    )
    assert kinds == [SyncEndpoint, AsyncEndpoint, StreamingEndpoint]
    assert await asyncio.to_thread(client.get_model_endpoint, "missing") is None


async def test_sync_predict_and_model_failure(client: GatewayClient) -> None:
    def calls() -> tuple[object, object]:
        echo = endpoint_of(client, "echo")
        fail = endpoint_of(client, "fail")
        assert isinstance(echo, SyncEndpoint)
        assert isinstance(fail, SyncEndpoint)
        return echo.predict(EndpointRequest(args={"n": 3})), fail.predict(EndpointRequest(args={}))

    ok, failed = await asyncio.to_thread(calls)
    assert ok.status == "SUCCESS"  # type: ignore[attr-defined]
    assert json.loads(ok.result) == {"n": 3}  # type: ignore[attr-defined]
    assert ok.status_code == 200  # type: ignore[attr-defined]
    assert failed.status == "FAILURE"  # type: ignore[attr-defined]
    assert "ValueError: model failed" in failed.traceback  # type: ignore[attr-defined]


async def test_future_get_success_timeout_and_bad_timeout(client: GatewayClient) -> None:
    def calls() -> None:
        endpoint = endpoint_of(client, "echo-async")
        assert isinstance(endpoint, AsyncEndpoint)
        response = endpoint.predict(EndpointRequest(args={"delay": 0.2, "q": 1})).get(timeout=10)
        assert (response.status, json.loads(response.result or "")) == ("SUCCESS", {"delay": 0.2, "q": 1})
        slow = endpoint.predict(EndpointRequest(args={"delay": 30}))
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            slow.get(timeout=0.3)
        assert time.monotonic() - started < 5
        for bad in (0, -1):
            with pytest.raises(ValueError, match="Timeout must be greater than 0"):
                slow.get(timeout=bad)

    await asyncio.to_thread(calls)


async def test_future_waits_with_long_polls_not_client_sleeps(stack: Stack, client: GatewayClient) -> None:
    endpoint = await asyncio.to_thread(endpoint_of, client, "echo-async")
    assert isinstance(endpoint, AsyncEndpoint)
    future = await asyncio.to_thread(endpoint.predict, EndpointRequest(args={"delay": 1.0}))
    response = await asyncio.to_thread(future.get, 10)
    assert response.status == "SUCCESS"
    # One WaitAsyncTask call drove the gateway's shared poll loop; its first polls are 50 ms apart.
    polls = [r for r in stack.launch.records if r.path.startswith("/v1/async-tasks/")]
    assert len(polls) >= 3


async def test_stream_iterates_and_early_close_stops_the_upstream(make_stack: StackFactory) -> None:
    endless = Endless()
    stack = await make_stack([endless.spec()])
    client = GatewayClient(stack.gateway.address, timeout=30)

    def calls() -> tuple[list[object], list[object]]:
        count = endpoint_of(client, "count")
        assert isinstance(count, StreamingEndpoint)
        full = [json.loads(r.result or "") for r in count.predict(EndpointRequest(args={"n": 3, "interval": 0}))]
        endpoint = endpoint_of(client, "endless")
        assert isinstance(endpoint, StreamingEndpoint)
        first: list[object] = []
        with endpoint.predict(EndpointRequest(args={})) as stream:
            for response in stream:
                first.append(json.loads(response.result or ""))
                if len(first) == 2:
                    break
        return full, first

    try:
        full, first = await asyncio.to_thread(calls)
        await asyncio.wait_for(endless.stopped.wait(), 5)
    finally:
        client.close()
    assert full == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert first == [{"i": 0}, {"i": 1}]


async def test_rpc_errors_keep_code_and_message(client: GatewayClient) -> None:
    def calls() -> None:
        echo = endpoint_of(client, "echo")
        wrong = AsyncEndpoint(echo.model_endpoint, client)  # an async view of a sync endpoint
        with pytest.raises(FailedPreconditionError) as caught:
            wrong.predict(EndpointRequest(args={}))
        assert "is a sync endpoint" in caught.value.message
        gone = SyncEndpoint(type(echo.model_endpoint)("gone", "x", "sync", "READY"), client)
        with pytest.raises(NotFoundError, match="NOT_FOUND: endpoint 'gone' not found"):
            gone.predict(EndpointRequest(args={}))

    await asyncio.to_thread(calls)


async def test_predict_batch_has_every_submission_in_flight_at_once(make_stack: StackFactory) -> None:
    stack = await make_stack(workers=64)
    launch = stack.launch
    client = GatewayClient(stack.gateway.address, timeout=30)
    endpoint = await asyncio.to_thread(endpoint_of, client, "echo-async")
    assert isinstance(endpoint, AsyncEndpoint)
    launch.faults = Faults(latency=0.5)  # each submission is held at the upstream for a while

    def open_submissions(_: object) -> bool:
        return sum(r.path == "/v1/async-tasks" and r.outcome == "open" for r in launch.records) >= 20

    try:
        batch = asyncio.ensure_future(
            asyncio.to_thread(endpoint.predict_batch, [EndpointRequest(args={"i": i}) for i in range(20)])
        )
        # One after another, no two submissions would ever be open together.
        await launch.wait_for_record(open_submissions, timeout=10)
        assert len(await batch) == 20
    finally:
        client.close()
