"""The blocking SDK against a real gateway. Blocking calls run in a thread: the servers share this loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web

from launch_gateway import (
    AsyncEndpoint,
    BatchSubmitError,
    DeadlineExceededError,
    EndpointRequest,
    FailedPreconditionError,
    GatewayClient,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StreamingEndpoint,
    SyncEndpoint,
)
from launch_gateway.testing.local_launch import Faults
from tests.conftest import Endless, RawUpstream, Stack, StackFactory, answer_lookup
from tests.edge.conftest import ENV, KEY_A, LAUNCH_KEY_A, tenants


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
        with pytest.raises(TimeoutError):  # a 30 s task: a get that waited for it would have returned SUCCESS
            slow.get(timeout=0.3)
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


REFUSED = {1, 3}  # the batch items whose callback host is outside team-a's policy


def partly_refused_batch() -> list[EndpointRequest]:
    return [
        EndpointRequest(args={"i": i}, callback_url="https://10.9.9.9/hook" if i in REFUSED else None) for i in range(5)
    ]


@pytest.fixture
async def team_a(make_stack: StackFactory) -> Stack:
    return await make_stack(api_keys=[LAUNCH_KEY_A], settings={"tenants": tenants()}, gateway_env=ENV)


async def test_a_partly_refused_batch_keeps_the_accepted_futures(team_a: Stack) -> None:
    client = GatewayClient(team_a.gateway.address, api_key=KEY_A, timeout=30)

    def calls() -> tuple[BatchSubmitError, list[str | None]]:
        endpoint = endpoint_of(client, "echo-async")
        assert isinstance(endpoint, AsyncEndpoint)
        with pytest.raises(BatchSubmitError) as caught:
            endpoint.predict_batch(partly_refused_batch())
        results = [f.get(timeout=10).result if f is not None else None for f in caught.value.futures]
        return caught.value, results

    try:
        error, results = await asyncio.to_thread(calls)
    finally:
        client.close()
    assert [type(e) for e in error.errors] == [PermissionDeniedError if i in REFUSED else type(None) for i in range(5)]
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.message.startswith("2 of 5 submissions failed; first: ")
    assert [json.loads(r) if r else None for r in results] == [{"i": 0}, None, {"i": 2}, None, {"i": 4}]
    assert len(team_a.launch.task_ids) == 3  # the refused ones never reached Launch


async def test_a_rate_limited_call_says_when_to_retry(make_stack: StackFactory) -> None:
    team = tenants(**{"team-a": {"rate": {"per_second": 0.25, "burst": 1}}})
    stack = await make_stack(api_keys=[LAUNCH_KEY_A], settings={"tenants": team}, gateway_env=ENV)
    client = GatewayClient(stack.gateway.address, api_key=KEY_A, timeout=30)

    def calls() -> ResourceExhaustedError:
        echo = endpoint_of(client, "echo")
        assert isinstance(echo, SyncEndpoint)  # the lookup spent the one token
        with pytest.raises(ResourceExhaustedError) as caught:
            echo.predict(EndpointRequest(args={}))
        return caught.value

    try:
        error = await asyncio.to_thread(calls)
    finally:
        client.close()
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.retry_after is not None
    assert 3.0 < error.retry_after <= 4.0  # a token every 4 s, from google.rpc.RetryInfo


async def test_an_undefined_task_makes_get_raise_value_error(
    make_stack: StackFactory, raw_upstream: RawUpstream
) -> None:
    async def odd_status(request: web.Request) -> web.Response:
        later = {"id": "end_1", "name": "later", "endpoint_type": "async", "status": "READY"}
        if (lookup := answer_lookup(request, later)) is not None:
            return lookup
        if request.path == "/v1/async-tasks":
            return web.json_response({"task_id": "task-1"})
        return web.json_response({"task_id": "task-1", "status": "LOST_IN_SPACE"})  # a status nobody knows

    stack = await make_stack(settings={"upstream": {"url": await raw_upstream(odd_status)}})
    client = GatewayClient(stack.gateway.address, timeout=30)

    def calls() -> None:
        endpoint = endpoint_of(client, "later")
        assert isinstance(endpoint, AsyncEndpoint)
        with pytest.raises(ValueError, match="Unrecognized status: UNDEFINED"):
            endpoint.predict(EndpointRequest(args={})).get(timeout=10)

    try:
        await asyncio.to_thread(calls)
    finally:
        client.close()


async def test_the_clients_timeout_and_metadata_apply_to_every_call(make_stack: StackFactory) -> None:
    stack = await make_stack()
    client = GatewayClient(stack.gateway.address, timeout=0.5, metadata=(("x-request-id", "from-the-sdk"),))

    def calls() -> None:
        sleep = endpoint_of(client, "sleep")
        assert isinstance(sleep, SyncEndpoint)
        with pytest.raises(DeadlineExceededError):
            sleep.predict(EndpointRequest(args={"seconds": 30}))

    try:
        await asyncio.to_thread(calls)
    finally:
        client.close()
    sync = await stack.launch.wait_for_record(lambda r: r.path == "/v1/sync-tasks")
    assert sync.headers["x-request-id"] == "from-the-sdk"
    assert await sync.wait_done(5) == "disconnected"  # the deadline reached the upstream request
