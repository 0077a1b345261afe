"""`results="launch"` gives what the Launch client gives, call for call, from the same Launch bodies.

Each row sends one request twice: straight to the local Launch server, whose body goes through the
Launch client's rule for that call (scale-launch 0.4.2, `launch/model_endpoint.py`, as issue 12
states it), and through a real gateway with our SDK in the "launch" form. Both must agree on
`status`, `result` and `result_url`. The default "json" form is checked against the same rows.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from launch_gateway import EndpointRequest, GatewayClient
from launch_gateway.client import aio
from launch_gateway.client.results import shape_result
from launch_gateway.testing.local_launch import EndpointSpec
from tests.conftest import Stack, StackFactory

Seen = tuple[str, Any, Any]  # (status, result, result_url) of one EndpointResponse


# The Launch client's rules: what each call makes of Launch's body.
def sync_rule(body: dict[str, Any]) -> Seen:  # SyncEndpoint.predict passes the body's fields through
    return body["status"], body.get("result"), body.get("result_url")


def async_rule(body: dict[str, Any]) -> Seen:  # EndpointResponseFuture.get
    if body["status"] == "SUCCESS":
        return "SUCCESS", body["result"].get("result"), body["result"].get("result_url")
    return body["status"], body.get("result"), None  # FAILURE: the raw result


def stream_rule(body: dict[str, Any]) -> Seen:  # EndpointResponseStream: each event's result.result
    result = body.get("result")
    return body["status"], result.get("result") if isinstance(result, dict) else None, None


async def counted_then_fails(n: int = 1, **kwargs: Any) -> AsyncIterator[dict[str, int]]:
    """Stream {"i": 0} .. {"i": n-1}, then raise: the stream ends with a FAILURE event."""
    for i in range(n):
        yield {"i": i}
    raise ValueError("stream broke")


@dataclass(frozen=True)
class Case:
    call: str  # "sync", "async" or "stream"
    endpoint: str
    args: dict[str, Any]
    pickled: bool = False


CASES = {
    "sync-success": Case("sync", "echo", {"n": 3, "s": "x"}),
    "sync-pickled": Case("sync", "echo", {"n": 3}, pickled=True),
    "sync-failure": Case("sync", "fail", {"message": "boom"}),
    "async-success": Case("async", "echo-async", {"delay": 0, "q": [1, 2]}),
    "async-pickled": Case("async", "echo-async", {"delay": 0}, pickled=True),
    "async-failure": Case("async", "fail-async", {"delay": 0, "message": "boom"}),
    "stream-events": Case("stream", "count", {"n": 3, "interval": 0}),
    "stream-failure-event": Case("stream", "count-then-fails", {"n": 1}),
}
RULES: dict[str, Callable[[dict[str, Any]], Seen]] = {"sync": sync_rule, "async": async_rule, "stream": stream_rule}
ROUTES = {"sync": "/v1/sync-tasks", "async": "/v1/async-tasks", "stream": "/v1/streaming-tasks"}
PICKLE_URL = re.compile(r"/v1/results/[0-9a-f-]+\.pkl")


def same_pickles(seen: list[Seen]) -> list[Seen]:
    """`seen` with each pickle's URL made one: every call writes a new pickle."""
    text = PICKLE_URL.sub("/v1/results/<pickle>.pkl", json.dumps(seen))
    return [tuple(s) for s in json.loads(text)]  # type: ignore[misc]


async def launch_bodies(stack: Stack, case: Case) -> list[dict[str, Any]]:
    """Launch's own bodies for the case: the sync body, the finished task, or every stream event."""
    url = f"{stack.launch.url}{ROUTES[case.call]}"
    params = {"model_endpoint_id": stack.launch.endpoint_id(case.endpoint)}
    body = {"args": case.args, "return_pickled": case.pickled}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, params=params, json=body) as response:
            if case.call == "stream":
                text = await response.text()
                return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
            created = await response.json()
        if case.call == "sync":
            return [created]
        async with asyncio.timeout(10):
            while True:
                async with http.get(f"{stack.launch.url}/v1/async-tasks/{created['task_id']}") as response:
                    task = await response.json()
                if task["status"] in ("SUCCESS", "FAILURE"):
                    return [task]
                await asyncio.sleep(0.02)


def blocking_responses(address: str, case: Case, results: str) -> list[Seen]:
    with GatewayClient(address, timeout=30, results=results) as client:  # type: ignore[arg-type]
        endpoint: Any = client.get_model_endpoint(case.endpoint)
        outcome = endpoint.predict(EndpointRequest(args=case.args, return_pickled=case.pickled))
        responses = {"sync": lambda: [outcome], "async": lambda: [outcome.get(timeout=10)], "stream": lambda: outcome}
        return [(r.status, r.result, r.result_url) for r in responses[case.call]()]


async def aio_responses(address: str, case: Case, results: str) -> list[Seen]:
    async with aio.GatewayClient(address, timeout=30, results=results) as client:  # type: ignore[arg-type]
        endpoint: Any = await client.get_model_endpoint(case.endpoint)
        request = EndpointRequest(args=case.args, return_pickled=case.pickled)
        if case.call == "stream":
            async with endpoint.predict(request) as stream:
                return [(r.status, r.result, r.result_url) async for r in stream]
        outcome = await endpoint.predict(request)
        response = outcome if case.call == "sync" else await outcome.get(timeout=10)
        return [(response.status, response.result, response.result_url)]


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack([EndpointSpec("count-then-fails", "streaming", counted_then_fails)])


@pytest.mark.parametrize("flavour", ["blocking", "aio"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_launch_results_match_the_launch_clients_rules(stack: Stack, case: Case, flavour: str) -> None:
    expected = [RULES[case.call](body) for body in await launch_bodies(stack, case)]
    if flavour == "blocking":
        seen = await asyncio.to_thread(blocking_responses, stack.gateway.address, case, "launch")
    else:
        seen = await aio_responses(stack.gateway.address, case, "launch")
    assert same_pickles(seen) == same_pickles(expected)


def launch_value(call: str, status: str, result: Any) -> Any:
    """The predict function's value (a failure's raw result) inside what the Launch client gives."""
    if result is None or status == "FAILURE" or call == "stream":
        return result
    return json.loads(result["result"] if call == "sync" else result)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_json_results_are_json_text_of_the_value(stack: Stack, case: Case) -> None:
    launch = same_pickles([RULES[case.call](body) for body in await launch_bodies(stack, case)])
    seen = same_pickles(await aio_responses(stack.gateway.address, case, "json"))
    assert len(seen) == len(launch)
    for (status, result, url), (launch_status, launch_result, launch_url) in zip(seen, launch, strict=True):
        assert status == launch_status
        if case.pickled:  # "json" puts the URL in result_url; the Launch client's sync puts it in the result dict
            assert (result, url) == (None, launch_url or launch_result["result_url"])
        else:
            value = launch_value(case.call, status, launch_result)
            assert (None if result is None else json.loads(result), url) == (value, None)


# The pure rules, row by row: the gateway's (status, result, result_url) and what "launch" makes of it.
PKL = "https://results.example/x.pkl"
SHAPES = [
    pytest.param("sync", "SUCCESS", '{"n": 3}', None, {"result": '{"n": 3}'}, None, id="sync-value"),
    pytest.param("sync", "SUCCESS", None, PKL, {"result_url": PKL}, None, id="sync-pickled"),
    pytest.param("sync", "FAILURE", None, None, None, None, id="sync-failure-no-result"),
    pytest.param("sync", "FAILURE", '"boom"', None, "boom", None, id="sync-failure-raw"),
    pytest.param("async", "SUCCESS", '{"q": 1}', None, '{"q": 1}', None, id="async-value"),
    pytest.param("async", "SUCCESS", None, PKL, None, PKL, id="async-pickled"),
    pytest.param("async", "FAILURE", '"boom"', None, "boom", None, id="async-failure-raw"),
    pytest.param("stream", "SUCCESS", '{"i":0}', None, {"i": 0}, None, id="stream-value"),
    pytest.param("stream", "FAILURE", None, None, None, None, id="stream-failure"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "status", "result", "url", "launch_result", "launch_url"), SHAPES)
def test_shape_result_rules(call: Any, status: str, result: str | None, url: str | None, launch_result: Any,
                            launch_url: str | None) -> None:  # fmt: skip
    assert shape_result("launch", call, status, result, url) == (launch_result, launch_url)
    assert shape_result("json", call, status, result, url) == (result, url)


def test_an_unknown_results_form_is_refused() -> None:
    with pytest.raises(ValueError, match="results must be 'json' or 'launch'"):
        GatewayClient("localhost:1", results="Launch")  # type: ignore[arg-type]
