"""Callback URLs: the tenant's hosts only, https unless allowed, no internal addresses unless allowed.

Launch POSTs results to the callback URL from inside its own network, so the fence decides the host the
way Launch's sender (`requests`, a WHATWG-like parser) will, refuses every URL on which parsers could
disagree, and refuses addresses in an explicit table of internal networks, embedded IPv4 included.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from launch_gateway.server.access.callbacks import parse_callback_url
from launch_gateway.server.errors import InvalidArgument
from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import RawUpstream, StackFactory
from tests.edge.conftest import ENV, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants
from tests.edge.fake_dns import FakeDNS, fake_dns_fixture  # noqa: F401 (the fake_dns fixture)

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
    assert body["status_code"] == 200
    assert reply.task_id.startswith("t1.")


# team-b may name any host, but nothing internal: only the parser and the address table stand between
# a caller and Launch's network.
ANY_HOST = tenants(**{"team-b": {"endpoints": ["echo*"], "callbacks": {"hosts": ["*"]}}})
PUBLIC = "93.184.215.14"  # what hooks.public.test resolves to in these tests


async def submit_code(make_stack: StackFactory, fake_dns: FakeDNS, url: str) -> tuple[grpc.StatusCode, str]:
    fake_dns.answers["hooks.public.test"] = [PUBLIC]
    stack = await make_stack(api_keys=[KEY_B], settings={"tenants": ANY_HOST}, gateway_env=ENV)
    try:
        await stack.stub.SubmitAsync(submit(url), timeout=10, metadata=bearer(KEY_B))
    except grpc.aio.AioRpcError as exc:
        assert not [r for r in stack.launch.records if r.path == "/v1/async-tasks"]
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param("https://127.0.0.1\\@hooks.public.test/cb", "backslash", id="backslash-before-userinfo"),
        pytest.param("https://hooks.public.test\\cb", "backslash", id="backslash-as-path"),
        pytest.param("https://user@hooks.public.test/cb", "'@'", id="userinfo"),
        pytest.param("https://hooks.public.test@127.0.0.1/cb", "'@'", id="userinfo-naming-an-allowed-host"),
        pytest.param("https://a@b@hooks.public.test/cb", "'@'", id="two-at-signs"),
        pytest.param("https://hooks.public.test/cb?@127.0.0.1", "'@'", id="at-in-query"),
        pytest.param("https://127.0.0.1#@hooks.public.test/cb", "'@'", id="fragment-before-at"),
        pytest.param("https://hooks.public.test/cb#x", "fragment", id="fragment"),
        pytest.param("https://127.0.0.1?@hooks.public.test/cb", "'@'", id="query-before-at"),
        pytest.param("https://hooks.public.test/c b", "space", id="space"),
        pytest.param("https://hooks.pub\tlic.test/cb", "control", id="tab-in-host"),
        pytest.param("https://hooks.public.test/cb\n", "control", id="newline"),
        pytest.param(" https://hooks.public.test/cb", "space", id="leading-space"),
        pytest.param("https://hooks.public.test\x00.evil/cb", "control", id="nul"),
        pytest.param("https://hooks%2epublic.test/cb", "percent", id="percent-encoded-host"),
        pytest.param("https://127.0.0.1%2f.hooks.public.test/cb", "percent", id="percent-encoded-slash"),
        pytest.param("https://hooks.public.t\u0435st/cb", "ASCII", id="cyrillic-letter"),
        pytest.param("https://hooks\u3002public.test/cb", "ASCII", id="ideographic-full-stop"),
        pytest.param("https://\uff11\uff12\uff17.0.0.1/cb", "ASCII", id="fullwidth-digits"),
        pytest.param("https://hooks.public.test./cb", "trailing dot", id="trailing-dot"),
        pytest.param("https://hooks..public.test/cb", "empty label", id="empty-label"),
        pytest.param("https:///cb", "host", id="empty-host"),
        pytest.param("https://:443/cb", "host", id="empty-host-with-port"),
        pytest.param("https:/hooks.public.test/cb", "absolute", id="one-slash"),
        pytest.param("https:hooks.public.test/cb", "absolute", id="no-slashes"),
        pytest.param("https:///hooks.public.test/cb", "host", id="three-slashes"),
        pytest.param("https://hooks.public.test:99999/cb", "port", id="port-too-large"),
        pytest.param("https://hooks.public.test:abc/cb", "port", id="port-not-a-number"),
        pytest.param("https://hooks.public.test:0/cb", "port", id="port-zero"),
        pytest.param("https://hooks.public.test:/cb", "port", id="port-empty"),
        pytest.param("https://hooks.public.test:+443/cb", "port", id="port-signed"),
        pytest.param("http://2130706433/cb", "IPv4", id="ipv4-decimal"),
        pytest.param("https://0x7f.1/cb", "IPv4", id="ipv4-hex-short"),
        pytest.param("https://017700000001/cb", "IPv4", id="ipv4-octal"),
        pytest.param("https://0177.0.0.1/cb", "IPv4", id="ipv4-octal-part"),
        pytest.param("https://127.1/cb", "IPv4", id="ipv4-two-parts"),
        pytest.param("https://0x7f000001/cb", "IPv4", id="ipv4-hex"),
        pytest.param("https://1.2.3.4.5/cb", "IPv4", id="ipv4-five-parts"),
        pytest.param("https://256.0.0.1/cb", "IPv4", id="ipv4-octet-too-large"),
        pytest.param("https://hooks.public.0x10/cb", "IPv4", id="hex-last-label"),
        pytest.param("https://[::1%25eth0]/cb", "IPv6", id="ipv6-zone"),
        pytest.param("https://[v1.fe]/cb", "IPv6", id="ipvfuture"),
        pytest.param("https://[127.0.0.1]/cb", "brackets", id="bracketed-ipv4"),
        pytest.param("https://under_score.public.test/cb", "letters, digits", id="underscore"),
        pytest.param("https://hooks.public.test/%zz", "percent", id="bad-percent-escape"),
        pytest.param("https://" + "a" * 64 + ".public.test/cb", "63", id="label-too-long"),
        pytest.param("https://hooks.public.test/" + "a" * 5000, "long", id="url-too-long"),
        pytest.param("ftp://hooks.public.test/cb", "https", id="other-scheme"),
    ],
)
async def test_callback_urls_that_parsers_could_read_differently_are_invalid(
    make_stack: StackFactory, fake_dns: FakeDNS, url: str, reason: str
) -> None:
    code, details = await submit_code(make_stack, fake_dns, url)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith("request.callback_url: "), details
    assert reason in details, details
    assert len(details) < 400  # the caller's URL is not echoed back whole


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://100.100.100.200/latest/meta-data", id="cgnat-cloud-metadata"),
        pytest.param("https://100.64.0.1/cb", id="cgnat"),
        pytest.param("https://192.88.99.1/cb", id="6to4-relay-anycast"),
        pytest.param("https://192.0.0.170/cb", id="ietf-protocol-assignments"),
        pytest.param("https://198.18.0.1/cb", id="benchmarking"),
        pytest.param("https://192.0.2.1/cb", id="documentation-v4"),
        pytest.param("https://0.0.0.0/cb", id="this-network"),
        pytest.param("https://255.255.255.255/cb", id="broadcast"),
        pytest.param("https://240.0.0.1/cb", id="reserved-v4"),
        pytest.param("https://224.0.0.1/cb", id="multicast-v4"),
        pytest.param("https://169.254.169.254/cb", id="link-local-metadata"),
        pytest.param("https://10.1.2.3/cb", id="rfc1918"),
        pytest.param("https://[::1]/cb", id="ipv6-loopback"),
        pytest.param("https://[::]/cb", id="ipv6-unspecified"),
        pytest.param("https://[fd00::1]/cb", id="ula"),
        pytest.param("https://[fe80::1]/cb", id="ipv6-link-local"),
        pytest.param("https://[fec0::1]/cb", id="site-local"),
        pytest.param("https://[ff02::1]/cb", id="ipv6-multicast"),
        pytest.param("https://[2001:db8::1]/cb", id="documentation-v6"),
        pytest.param("https://[::ffff:127.0.0.1]/cb", id="ipv4-mapped-loopback"),
        pytest.param("https://[::ffff:a9fe:a9fe]/cb", id="ipv4-mapped-metadata-hex"),
        pytest.param("https://[::127.0.0.1]/cb", id="ipv4-compatible-loopback"),
        pytest.param("https://[::ffff:0:127.0.0.1]/cb", id="ipv4-translated-loopback"),
        pytest.param("https://[2002:7f00:1::]/cb", id="6to4-loopback"),
        pytest.param("https://[2002:a9fe:a9fe::1]/cb", id="6to4-metadata"),
        pytest.param("https://[64:ff9b::7f00:1]/cb", id="nat64-loopback"),
        pytest.param("https://[64:ff9b::6464:64c8]/cb", id="nat64-cgnat-metadata"),
        pytest.param("https://[64:ff9b:1::a00:1]/cb", id="local-nat64"),
        pytest.param("https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/cb", id="teredo-client-loopback"),
        pytest.param("https://[2001:0:4136:e378:8000:63bf:5601:5645]/cb", id="teredo-client-metadata"),
    ],
)
async def test_callback_addresses_in_internal_networks_are_refused(
    make_stack: StackFactory, fake_dns: FakeDNS, url: str
) -> None:
    code, details = await submit_code(make_stack, fake_dns, url)
    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    assert "internal address" in details, details


@pytest.mark.parametrize(
    "address",
    ["100.100.100.200", "2002:7f00:1::", "64:ff9b::a9fe:a9fe", "::ffff:10.0.0.1", "192.88.99.7"],
)
async def test_a_name_that_resolves_into_an_internal_network_is_refused(
    make_stack: StackFactory, fake_dns: FakeDNS, address: str
) -> None:
    fake_dns.answers["rebound.public.test"] = [PUBLIC, address]  # one internal answer is enough
    code, details = await submit_code(make_stack, fake_dns, "https://rebound.public.test/cb")
    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    assert f"resolves to an internal address ({address})" in details


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.public.test/cb?task=1&x=%20y",
        "HTTPS://Hooks.Public.TEST:8443/a/b;c=d",
        f"https://{PUBLIC}/cb",
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/cb",
        "https://[2002:5db8:d70e::1]/cb",  # 6to4 around a public IPv4
    ],
    ids=["query", "case-and-port", "public-ipv4", "public-ipv6", "6to4-public"],
)
async def test_plain_callback_urls_to_public_hosts_are_accepted(
    make_stack: StackFactory, fake_dns: FakeDNS, url: str
) -> None:
    code, details = await submit_code(make_stack, fake_dns, url)
    assert code == grpc.StatusCode.OK, details


# URLs built from the pieces parsers disagree on; whatever the fence accepts, other parsers read alike.
_PIECES = st.sampled_from(
    [
        *("hooks", "Ex", ".test", "a1", "/cb", "?q=1", ":8443", "0", "9", "-", ".", ":", "/", "?", "#", "@"),
        *("\\", "%", "%2e", "[", "]", "[::1]", "0x7f", "1.2.3.4", " "),
    ]
)
_SCHEMES = st.sampled_from(["https://", "http://", "HTTPS://", "https:/", "https:///"])


@settings(max_examples=300, deadline=None)
@given(scheme=_SCHEMES, rest=st.lists(_PIECES, max_size=8))
def test_a_url_the_fence_accepts_has_the_same_host_and_port_for_other_parsers(scheme: str, rest: list[str]) -> None:
    url = scheme + "".join(rest)
    try:
        target = parse_callback_url(url)
    except InvalidArgument:  # refused: nothing to agree on
        return
    split, parsed = urlsplit(url), URL(url)
    assert (split.hostname, split.port or {"https": 443, "http": 80}[target.scheme]) == (target.host, target.port)
    assert (parsed.host, parsed.port) == (target.host, target.port)
