"""How the SDK dials the gateway: TLS or not, the API key as metadata, and the retry policy.

Retries live in the channel's service config, so grpc-core does them with jittered backoff: only
the calls that are safe to repeat (GetAsyncTask, WaitAsyncTask, GetEndpoint, ListEndpoints), only on
UNAVAILABLE.
Predict, SubmitAsync and StreamPredict are never retried by the client: a repeated SubmitAsync could
start the task twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from launch_gateway.client.results import ResultForm, check_result_form

SERVICE = "launch_gateway.v1.EndpointService"
RETRIED_METHODS = ("GetAsyncTask", "WaitAsyncTask", "GetEndpoint", "ListEndpoints")

SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": SERVICE, "method": method} for method in RETRIED_METHODS],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def _read(value: bytes | str | None) -> bytes | None:
    """PEM given as bytes, or as a path to a file."""
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as handle:
        return handle.read()


@dataclass(frozen=True)
class ChannelSettings:
    """Everything needed to open a channel to the gateway and decorate its calls."""

    target: str
    api_key: str | None = None
    tls: bool = False
    root_certificates: bytes | str | None = None  # PEM bytes or a file path; None: the system's roots
    client_certificate: bytes | str | None = None  # for mTLS: PEM bytes or a file path
    client_key: bytes | str | None = None
    timeout: float | None = None  # default deadline in seconds for each call
    metadata: Sequence[tuple[str, str]] = ()
    options: Sequence[tuple[str, Any]] = field(default_factory=tuple)

    def __repr__(self) -> str:  # the key and the client key never appear in reprs
        return f"ChannelSettings(target={self.target!r}, tls={self.tls})"

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        metadata = tuple(self.metadata)
        if self.api_key:
            metadata += (("authorization", f"Bearer {self.api_key}"),)
        return metadata

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.enable_retries", 1), ("grpc.service_config", SERVICE_CONFIG), *self.options]

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials, or None for plaintext."""
        uses_tls = self.tls or self.root_certificates is not None or self.client_certificate is not None
        if not uses_tls:
            return None
        if (self.client_certificate is None) != (self.client_key is None):
            raise ValueError("client_certificate and client_key go together (mTLS)")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_certificates),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_certificate),
        )


class ClientBase:
    """What the blocking and asyncio clients share: their parameters, settings and call metadata.

    Parameters:
        target: the gateway's "host:port".
        api_key: sent as metadata ``authorization: Bearer <api_key>``.
        tls, root_certificates: use TLS; trust these PEM roots (bytes or a file path), else the system's.
        client_certificate, client_key: mTLS client identity (PEM bytes or file paths).
        timeout: default deadline in seconds for each call (None: no deadline).
        metadata: extra metadata for every call; options: extra gRPC channel options.
        results: "json" (the default): every `result` is JSON text of the value; "launch": each
            call's `result` and `result_url` as the Launch client gives them (`client.results`).
    """

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | str | None = None,
        client_certificate: bytes | str | None = None,
        client_key: bytes | str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, Any]] = (),
        results: ResultForm = "json",
    ) -> None:
        self.results: ResultForm = check_result_form(results)
        self.settings = ChannelSettings(
            target, api_key, tls, root_certificates, client_certificate, client_key, timeout, metadata, options
        )
        self.call_metadata = self.settings.call_metadata()
        self._connect(self.settings.credentials(), self.settings.channel_options())

    def _connect(self, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> None:
        """Open the channel and the stub (each flavour its own kind)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__module__.rsplit('.', 1)[-1]}.GatewayClient({self.settings.target!r})"
