"""TLS on both sides of the gateway, with certificates made by the test (trustme): server TLS, client
certificates naming tenants (mTLS), and the upstream's certificate verified unless a CA file says otherwise."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from aiohttp import web

from launch_gateway.client import aio
from launch_gateway.client.objects import EndpointRequest
from launch_gateway.server.upstream.launch_api import PROBE_NAME
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import LAUNCH_GATEWAY, Stack, StackFactory
from tests.e2e.test_tools import run

LAUNCH_KEY_A = "launch-key-of-client-a"
SECRETS = {"CLIENT_A_LAUNCH_KEY": LAUNCH_KEY_A, "LAUNCH_GATEWAY_HANDLE_SECRETS": "handle-secret-0123456789abcdef"}
REQUEST = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json='{"a": 1}'))
TENANTS = {
    "client-a": {
        "mtls_subjects": ["client-a.example"],
        "mtls_subject_types": ["dns", "cn"],  # the common name counts too (by-common-name below)
        "endpoints": ["echo"],
        "upstream": "service",
        "upstream_key_env": "CLIENT_A_LAUNCH_KEY",
    }
}


@dataclass
class Certs:
    """A test CA, the server certificate it issued for 127.0.0.1, and their PEM files."""

    ca: trustme.CA
    server: trustme.LeafCert
    ca_file: Path
    cert_file: Path
    key_file: Path

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()


def client_pair(ca: trustme.CA, *names: str, common_name: str | None = None) -> tuple[bytes, bytes]:
    """A client certificate chain and key (PEM) for these SANs (and common name), signed by `ca`."""
    leaf = ca.issue_cert(*names, common_name=common_name)
    return b"".join(blob.bytes() for blob in leaf.cert_chain_pems), leaf.private_key_pem.bytes()


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    made = Certs(ca, server, tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    ca.cert_pem.write_to_path(str(made.ca_file))
    made.cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(made.key_file))
    return made


def server_tls(certs: Certs, *, client_ca: bool = False) -> dict[str, str]:
    tls = {"tls_cert_file": str(certs.cert_file), "tls_key_file": str(certs.key_file)}
    return {**tls, "tls_client_ca_file": str(certs.ca_file)} if client_ca else tls


async def predict_code(address: str, credentials: grpc.ChannelCredentials | None) -> tuple[grpc.StatusCode, str]:
    """Predict `echo` over a raw channel: the status code and details it ends with."""
    channel = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    async with channel:
        try:
            await pb_grpc.EndpointServiceStub(channel).Predict(REQUEST, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


# --- server TLS ----------------------------------------------------------------------------------


async def test_tls_gateway_answers_a_client_that_trusts_its_ca(make_stack: StackFactory, certs: Certs) -> None:
    stack = await make_stack(settings={"server": server_tls(certs)})
    async with aio.GatewayClient(stack.gateway.address, root_certificates=certs.ca_pem, timeout=10) as client:
        endpoint = await client.get_model_endpoint("echo")
        assert isinstance(endpoint, aio.SyncEndpoint)
        response = await endpoint.predict(EndpointRequest(args={"n": 3}))
    assert response.status == "SUCCESS"
    assert json.loads(response.result or "") == {"n": 3}


async def test_health_command_checks_a_tls_gateway(make_stack: StackFactory, certs: Certs) -> None:
    stack = await make_stack(settings={"server": server_tls(certs)})
    address = stack.gateway.address
    code, out, _ = await run(LAUNCH_GATEWAY, "health", "--address", address, "--ca-file", str(certs.ca_file))
    assert (code, out.strip()) == (0, f"{address}: SERVING")
    code, _, err = await run(LAUNCH_GATEWAY, "health", "--address", address, "--timeout", "2")
    assert code == 1
    assert "UNAVAILABLE" in err


@pytest.mark.parametrize("client", ["plaintext", "other-ca"])
async def test_tls_gateway_refuses_plaintext_and_untrusting_clients(
    make_stack: StackFactory, certs: Certs, client: str
) -> None:
    stack = await make_stack(settings={"server": server_tls(certs)})
    credentials = None if client == "plaintext" else grpc.ssl_channel_credentials(trustme.CA().cert_pem.bytes())
    code, _ = await predict_code(stack.gateway.address, credentials)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert not [r for r in stack.launch.records if r.path == "/v1/sync-tasks"]


# --- mTLS ----------------------------------------------------------------------------------------


async def mtls_stack(make_stack: StackFactory, certs: Certs) -> Stack:
    return await make_stack(
        api_keys=[LAUNCH_KEY_A],
        settings={"server": server_tls(certs, client_ca=True), "tenants": TENANTS},
        gateway_env=SECRETS,
    )


@pytest.mark.parametrize(
    "identity",
    [
        pytest.param({"names": ("client-a.example",)}, id="by-san"),
        pytest.param({"names": ("other.example",), "common_name": "client-a.example"}, id="by-common-name"),
    ],
)
async def test_mtls_client_certificate_names_the_tenant_and_its_launch_key(
    make_stack: StackFactory, certs: Certs, identity: dict[str, Any]
) -> None:
    stack = await mtls_stack(make_stack, certs)
    cert, key = client_pair(certs.ca, *identity["names"], common_name=identity.get("common_name"))
    async with aio.GatewayClient(
        stack.gateway.address, root_certificates=certs.ca_pem, client_certificate=cert, client_key=key, timeout=10
    ) as client:
        endpoint = await client.get_model_endpoint("echo")
        assert isinstance(endpoint, aio.SyncEndpoint)
        response = await endpoint.predict(EndpointRequest(args={"who": "a"}))
    assert response.status == "SUCCESS"
    assert json.loads(response.result or "") == {"who": "a"}
    sync = stack.launch.records[-1]
    assert sync.path == "/v1/sync-tasks"
    assert sync.api_key == LAUNCH_KEY_A  # the tenant's service key, found by its certificate alone


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        pytest.param("no-certificate", grpc.StatusCode.UNAVAILABLE, id="no-certificate-fails-the-handshake"),
        pytest.param("other-ca", grpc.StatusCode.UNAVAILABLE, id="untrusted-certificate-fails-the-handshake"),
        pytest.param("unknown-subject", grpc.StatusCode.UNAUTHENTICATED, id="unknown-subject-is-unauthenticated"),
    ],
)
async def test_mtls_gateway_refuses_clients_it_cannot_name(
    make_stack: StackFactory, certs: Certs, client: str, expected: grpc.StatusCode
) -> None:
    stack = await mtls_stack(make_stack, certs)
    if client == "no-certificate":
        credentials = grpc.ssl_channel_credentials(certs.ca_pem)
    else:
        issuer = certs.ca if client == "unknown-subject" else trustme.CA()
        cert, key = client_pair(issuer, "client-z.example")
        credentials = grpc.ssl_channel_credentials(certs.ca_pem, private_key=key, certificate_chain=cert)
    code, details = await predict_code(stack.gateway.address, credentials)
    assert code == expected, details
    if expected == grpc.StatusCode.UNAUTHENTICATED:
        assert details.startswith("authorization:")
    assert not [r for r in stack.launch.records if r.path == "/v1/sync-tasks"]


# --- upstream TLS --------------------------------------------------------------------------------


@dataclass
class HttpsUpstream:
    url: str
    hits: list[str]


@pytest.fixture
async def https_upstream(certs: Certs) -> AsyncIterator[HttpsUpstream]:
    """An https server with the test CA's certificate, answering Launch's endpoint lookup."""
    hits: list[str] = []

    async def model_endpoints(request: web.Request) -> web.Response:
        if request.query.get("name") != PROBE_NAME:  # the gateway's readiness probes are not calls
            hits.append(request.query.get("name", ""))
        record = {"id": "end_1", "name": "echo", "endpoint_type": "sync", "status": "READY"}
        return web.json_response({"model_endpoints": [record]})

    app = web.Application()
    app.router.add_get("/v1/model-endpoints", model_endpoints)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.server.configure_cert(context)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield HttpsUpstream(f"https://{host}:{port}", hits)
    finally:
        await runner.cleanup()


async def test_upstream_certificate_is_verified_by_default(
    make_stack: StackFactory, https_upstream: HttpsUpstream
) -> None:
    stack = await make_stack(settings={"upstream": {"url": https_upstream.url}})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "certificate verify failed" in (caught.value.details() or "")
    assert https_upstream.hits == []  # nothing was sent to an unverified server


async def test_upstream_ca_file_trusts_the_upstreams_certificate(
    make_stack: StackFactory, https_upstream: HttpsUpstream, certs: Certs
) -> None:
    stack = await make_stack(settings={"upstream": {"url": https_upstream.url, "ca_file": str(certs.ca_file)}})
    reply = await stack.stub.GetEndpoint(pb.GetEndpointRequest(endpoint_name="echo"), timeout=10)
    assert reply.endpoint == pb.Endpoint(id="end_1", name="echo", kind=pb.ENDPOINT_KIND_SYNC, status="READY")
    assert https_upstream.hits == ["echo"]
