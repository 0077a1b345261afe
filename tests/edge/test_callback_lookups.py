"""Callback host lookups against a DNS server that never answers: bounded, per tenant, apart from the upstream.

`fake_dns` makes `hang.public.test` block its lookup thread as a silent DNS server does; the gateway
must end such a call on its own bound, refuse a tenant's lookups past its share, and keep other
tenants' calls and the resolver the upstream connections use free while the lookups hang.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import Stack, StackFactory
from tests.edge.conftest import ENV, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants
from tests.edge.fake_dns import FakeDNS, fake_dns_fixture  # noqa: F401 (the fake_dns fixture)

ANY_HOST = {"hosts": ["*"]}  # any host, nothing internal: every callback is looked up
TENANTS = tenants(**{"team-a": {"callbacks": ANY_HOST}, "team-b": {"endpoints": ["echo*"], "callbacks": ANY_HOST}})
HUNG = "https://hang.public.test/cb"
FINE = "https://hooks.public.test/cb"


def submit(url: str | None = None) -> pb.SubmitAsyncRequest:
    request = pb.EndpointRequest(args_json='{"delay": 0}')
    if url is not None:
        request.callback_url = url
    return pb.SubmitAsyncRequest(endpoint_name="echo-async", request=request)


async def lookups_stack(make_stack: StackFactory, fake_dns: FakeDNS, **callbacks: Any) -> Stack:
    fake_dns.hanging.add("hang.public.test")
    fake_dns.answers["hooks.public.test"] = ["93.184.215.14"]
    return await make_stack(
        api_keys=[LAUNCH_KEY_A, KEY_B],
        settings={"tenants": TENANTS, "callbacks": callbacks},
        gateway_env=ENV,
    )


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def all_but(left: int, calls: list[asyncio.Future[Any]], within: float = 10) -> set[asyncio.Future[Any]]:
    """Wait until all but `left` of `calls` are done; the ones still pending. Fails loudly after `within` s."""
    pending = set(calls)
    while len(pending) > left:
        done, pending = await asyncio.wait(pending, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise AssertionError(f"{len(pending)} calls still pending after {within} s, expected {left}")
    return pending


async def test_a_lookup_that_never_answers_ends_unavailable_on_the_gateways_bound(
    make_stack: StackFactory, fake_dns: FakeDNS
) -> None:
    stack = await lookups_stack(make_stack, fake_dns, lookup_timeout=0.5)
    code, details = await status_of(stack.stub.SubmitAsync(submit(HUNG), timeout=20, metadata=bearer(KEY_B)))
    assert code == grpc.StatusCode.UNAVAILABLE, details  # not the caller's DEADLINE_EXCEEDED 20 s later
    assert details == (
        "request.callback_url: looking up host hang.public.test took longer than 0.5 s "
        "(callbacks.lookup_timeout); retry later"
    )
    assert fake_dns.hung == 1  # the lookup itself still hangs; the call did not wait for it
    assert not [r for r in stack.launch.records if r.path == "/v1/async-tasks"]


async def test_a_tenant_past_its_share_of_lookups_is_refused_at_once(
    make_stack: StackFactory, fake_dns: FakeDNS
) -> None:
    stack = await lookups_stack(make_stack, fake_dns, lookup_timeout=60, lookups_per_tenant=2)
    hung = [
        asyncio.ensure_future(status_of(stack.stub.SubmitAsync(submit(HUNG), timeout=30, metadata=bearer(KEY_B))))
        for _ in range(2)
    ]
    await fake_dns.wait_until_hung(2)
    for url in (HUNG, FINE):  # a timed-out lookup still holds its slot until its thread returns
        code, details = await status_of(stack.stub.SubmitAsync(submit(url), timeout=10, metadata=bearer(KEY_B)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        assert "callbacks.lookups_per_tenant" in details
        assert details.startswith("request.callback_url: tenant 'team-b' has 2 callback host lookups in progress")
    # team-b's calls without a callback need no lookup and go through.
    assert (await stack.stub.SubmitAsync(submit(), timeout=10, metadata=bearer(KEY_B))).task_id
    assert not any(call.done() for call in hung)
    fake_dns.release()  # the DNS server answers at last (with a failure): the hung calls end, slots return
    for code, details in await asyncio.gather(*hung):
        assert code == grpc.StatusCode.UNAVAILABLE, details
        assert details.startswith("request.callback_url: cannot resolve host hang.public.test now")
    fake_dns.hanging.clear()
    reply = await stack.stub.SubmitAsync(submit(FINE), timeout=10, metadata=bearer(KEY_B))
    assert reply.task_id


async def test_hung_lookups_of_one_tenant_leave_other_tenants_and_the_upstream_resolver_free(
    make_stack: StackFactory, fake_dns: FakeDNS
) -> None:
    first = await lookups_stack(make_stack, fake_dns)
    # This gateway reaches its upstream by name, so each new upstream connection resolves it on the event
    # loop's resolver (the default executor).
    fake_dns.answers["upstream.public.test"] = ["127.0.0.1"]
    upstream = first.launch.url.replace("127.0.0.1", "upstream.public.test")
    stack = await make_stack(
        api_keys=[LAUNCH_KEY_A, KEY_B],
        settings={
            "tenants": TENANTS,
            "upstream": {"url": upstream},
            "callbacks": {"lookup_timeout": 60, "lookups_per_tenant": 4},
        },
        gateway_env=ENV,
    )
    # More than any default executor has threads (at most 32): before, these filled the resolver pool
    # that the upstream connections share, and every other lookup in the process queued behind them.
    flood = [
        asyncio.ensure_future(status_of(stack.stub.SubmitAsync(submit(HUNG), timeout=30, metadata=bearer(KEY_B))))
        for _ in range(40)
    ]
    await fake_dns.wait_until_hung(4)

    # While they hang: another tenant's callback lookup, Predict and SubmitAsync, and the event loop's
    # resolver (what new upstream connections use to reach the upstream by name) all answer.
    reply = await stack.stub.SubmitAsync(submit(FINE), timeout=10, metadata=bearer(KEY_A))
    assert reply.task_id.startswith("t1.")
    predict = pb.PredictRequest(endpoint_name="sleep", request=pb.EndpointRequest(args_json='{"seconds": 0.2}'))
    replies = await asyncio.gather(  # more at once than there are idle connections: new ones are made
        *(stack.stub.Predict(predict, timeout=10, metadata=bearer(KEY_A)) for _ in range(8))
    )
    assert all(reply.response.status == pb.TASK_STATUS_SUCCESS for reply in replies)
    assert {r.api_key for r in first.launch.records if r.path == "/v1/sync-tasks"} == {LAUNCH_KEY_A}
    assert (await stack.stub.SubmitAsync(submit(), timeout=10, metadata=bearer(KEY_A))).task_id
    infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo("hooks.public.test", 443), 10)
    assert infos[0][4][0] == "93.184.215.14"
    assert fake_dns.hung == 4  # all of the above happened while team-b's lookups hung, 4 of them: its share
    still_hung = await all_but(4, flood)
    refused = [call.result() for call in flood if call not in still_hung]
    assert [code for code, _ in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 36
    for call in still_hung:
        call.cancel()
    await asyncio.gather(*still_hung, return_exceptions=True)


@pytest.mark.parametrize(
    ("url", "details"),
    [
        ("https://nowhere.public.test/cb", "request.callback_url: cannot resolve host nowhere.public.test"),
        ("https://hooks.public.test:99999/cb", "request.callback_url: the port must be a number from 1 to 65535"),
        ("https://hooks.public.test:abc/cb", "request.callback_url: the port must be a number from 1 to 65535"),
    ],
    ids=["unknown-name", "port-out-of-range", "port-not-a-number"],
)
async def test_a_host_without_addresses_or_a_bad_port_is_invalid_argument(
    make_stack: StackFactory, fake_dns: FakeDNS, url: str, details: str
) -> None:
    stack = await lookups_stack(make_stack, fake_dns)
    assert await status_of(stack.stub.SubmitAsync(submit(url), timeout=10, metadata=bearer(KEY_B))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        details,
    )
