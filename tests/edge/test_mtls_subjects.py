"""Client certificates name a tenant by DNS SAN only, unless the tenant says which other names count.

A CA that issues DNS names to services often issues email or URI names to people, and the common name
is free text: before, any of them equal to a tenant's subject made the holder that tenant. Now
`mtls_subject_types` (default `["dns"]`) says which of the certificate's names are compared: `dns`,
`uri`, `email`, `ip` SANs and the `cn`. Every case runs over a real TLS gateway with certificates
the test issues.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from launch_gateway.server.errors import ConfigError
from launch_gateway.server.settings import build_settings
from launch_gateway.v1 import endpoint_service_pb2 as pb
from launch_gateway.v1 import endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import StackFactory

LAUNCH_KEY = "launch-key-of-the-tenant"
SECRETS = {"TENANT_LAUNCH_KEY": LAUNCH_KEY, "LAUNCH_GATEWAY_HANDLE_SECRETS": "handle-secret-0123456789abcdef"}
REQUEST = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json='{"a": 1}'))


class Issuer:
    """A test CA (trustme) that also issues client certificates with any SAN type (cryptography)."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1")
        self.ca_file, self.cert_file, self.key_file = directory / "ca.pem", directory / "srv.pem", directory / "srv.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(self.key_file))
        self._key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        self._cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())

    def client(self, common_name: str, names: list[x509.GeneralName]) -> grpc.ChannelCredentials:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())  # type: ignore[arg-type]
        return grpc.ssl_channel_credentials(
            self.ca.cert_pem.bytes(),
            private_key=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            certificate_chain=cert.public_bytes(serialization.Encoding.PEM),
        )


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path)


async def predict(
    make_stack: StackFactory, issuer: Issuer, tenant: dict[str, Any], cert: grpc.ChannelCredentials
) -> str:
    """The status of one Predict by the certificate's holder against a gateway with this one tenant."""
    table = {"endpoints": ["echo"], "upstream": "service", "upstream_key_env": "TENANT_LAUNCH_KEY", **tenant}
    tls = {"tls_cert_file": str(issuer.cert_file), "tls_key_file": str(issuer.key_file)}
    stack = await make_stack(
        api_keys=[LAUNCH_KEY],
        settings={"server": {**tls, "tls_client_ca_file": str(issuer.ca_file)}, "tenants": {"svc": table}},
        gateway_env=SECRETS,
    )
    code, details = grpc.StatusCode.OK, ""
    async with grpc.aio.secure_channel(stack.gateway.address, cert) as channel:
        try:
            await pb_grpc.EndpointServiceStub(channel).Predict(REQUEST, timeout=10)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
    if code != grpc.StatusCode.OK:
        assert code == grpc.StatusCode.UNAUTHENTICATED, details
        assert details.startswith("authorization:"), details
        assert not [r for r in stack.launch.records if r.path == "/v1/sync-tasks"]
        return "refused"
    assert [r.api_key for r in stack.launch.records if r.path == "/v1/sync-tasks"] == [LAUNCH_KEY]
    return "svc"


DNS = x509.DNSName
URI = x509.UniformResourceIdentifier
EMAIL = x509.RFC822Name
SUBJECT = "svc.example.com"


@pytest.mark.parametrize(
    ("common_name", "names", "types", "becomes"),
    [
        pytest.param("x", [DNS(SUBJECT)], None, "svc", id="dns-san-by-default"),
        pytest.param("x", [DNS("SVC.Example.COM")], None, "svc", id="dns-san-any-case"),
        pytest.param("x", [URI(SUBJECT)], None, "refused", id="uri-san-not-by-default"),
        pytest.param("x", [EMAIL(SUBJECT)], None, "refused", id="email-san-not-by-default"),
        pytest.param(SUBJECT, [DNS("other.example.com")], None, "refused", id="cn-not-by-default"),
        pytest.param(SUBJECT, [], None, "refused", id="cn-without-sans-not-by-default"),
        pytest.param("x", [x509.IPAddress(ipaddress.ip_address("10.0.0.7"))], None, "refused", id="ip-not-by-default"),
        pytest.param("x", [URI(SUBJECT)], ["uri"], "svc", id="uri-when-listed"),
        pytest.param("x", [EMAIL(SUBJECT)], ["email"], "svc", id="email-when-listed"),
        pytest.param(SUBJECT, [DNS("other.example.com")], ["dns", "cn"], "svc", id="cn-when-listed"),
        pytest.param("x", [DNS(SUBJECT)], ["uri"], "refused", id="dns-san-not-when-only-uri-listed"),
        pytest.param("x", [EMAIL(SUBJECT)], ["uri", "cn"], "refused", id="email-not-when-unlisted"),
    ],
)
async def test_only_the_certificate_names_the_tenant_lists_pick_the_tenant(
    make_stack: StackFactory,
    issuer: Issuer,
    common_name: str,
    names: list[x509.GeneralName],
    types: list[str] | None,
    becomes: str,
) -> None:
    tenant: dict[str, Any] = {"mtls_subjects": [SUBJECT]}
    if types is not None:
        tenant["mtls_subject_types"] = types
    assert await predict(make_stack, issuer, tenant, issuer.client(common_name, names)) == becomes


@pytest.mark.parametrize(
    ("subject", "types", "name"),
    [
        ("spiffe://example.com/ns/prod/sa/svc", ["uri"], URI("spiffe://example.com/ns/prod/sa/svc")),
        ("ops@example.com", ["email"], EMAIL("ops@example.com")),
        ("10.0.0.7", ["ip"], x509.IPAddress(ipaddress.ip_address("10.0.0.7"))),
    ],
    ids=["spiffe-uri", "email", "ip"],
)
async def test_a_tenant_known_by_another_san_type_says_so(
    make_stack: StackFactory, issuer: Issuer, subject: str, types: list[str], name: x509.GeneralName
) -> None:
    cert = issuer.client("x", [name])
    assert await predict(make_stack, issuer, {"mtls_subjects": [subject]}, cert) == "refused"
    tenant = {"mtls_subjects": [subject], "mtls_subject_types": types}
    assert await predict(make_stack, issuer, tenant, issuer.client("x", [name])) == "svc"


@pytest.mark.parametrize(("types", "shown"), [(["dns", "san"], "'san'"), ([], "none")], ids=["unknown", "empty"])
def test_mtls_subject_types_must_be_known_types(types: list[str], shown: str) -> None:
    table = {"mtls_subjects": [SUBJECT], "mtls_subject_types": types, "endpoints": ["echo"], "upstream": "forward"}
    with pytest.raises(ConfigError) as caught:
        build_settings({"tenants": {"svc": table}})
    why = f"tenants.svc.mtls_subject_types: must list some of dns, uri, email, ip, cn, not {shown}"
    assert why in caught.value.problems
