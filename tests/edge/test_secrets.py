"""Secrets (API keys, Launch keys, callback passwords and keys, handle secrets) never reach logs, metrics or errors."""

from __future__ import annotations

import logging

import grpc
import pytest

from launch_gateway.v1 import endpoint_service_pb2 as pb
from tests.conftest import StackFactory
from tests.edge.conftest import ENV, HANDLE_SECRET, KEY_A, KEY_B, LAUNCH_KEY_A, bearer, tenants
from tests.ops.conftest import http_get

CALLBACK_PASSWORD = "callback-password-secret-42"
MTLS_KEY = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LW10bHMta2V5\n-----END PRIVATE KEY-----"
WRONG_KEY = "gw-key-wrong-but-still-secret-77"
SECRETS = (KEY_A, KEY_B, LAUNCH_KEY_A, HANDLE_SECRET, CALLBACK_PASSWORD, MTLS_KEY, "c2VjcmV0LW10bHMta2V5", WRONG_KEY)


async def test_no_secret_reaches_logs_or_error_messages(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    team_b = {"endpoints": ["echo*"], "callbacks": {"hosts": ["hooks.example.com"]}}
    stack = await make_stack(
        api_keys=[LAUNCH_KEY_A, KEY_B], settings={"tenants": tenants(**{"team-b": team_b})}, gateway_env=ENV
    )
    errors: list[str] = []

    async def attempt(call: object) -> None:
        try:
            await call  # type: ignore[misc]
        except grpc.aio.AioRpcError as exc:
            errors.append(f"{exc.code()} {exc.details()} {exc.debug_error_string()} {exc.trailing_metadata()}")

    basic = pb.BasicCallbackAuth(username="user", password=CALLBACK_PASSWORD)
    mtls = pb.MtlsCallbackAuth(cert="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----", key=MTLS_KEY)
    requests = [
        pb.SubmitAsyncRequest(
            endpoint_name="echo-async",
            request=pb.EndpointRequest(args_json="{}", callback_url="http://127.0.0.1:9/cb", callback_auth_basic=basic),
        ),
        pb.SubmitAsyncRequest(
            endpoint_name="echo-async",
            request=pb.EndpointRequest(args_json="{}", callback_url="https://evil.example/cb", callback_auth_mtls=mtls),
        ),
        pb.SubmitAsyncRequest(
            endpoint_name="echo-async", request=pb.EndpointRequest(args_json="{", callback_auth_basic=basic)
        ),
    ]
    for key in (KEY_A, KEY_B, WRONG_KEY):
        for request in requests:
            await attempt(stack.stub.SubmitAsync(request, timeout=10, metadata=bearer(key)))
        await attempt(
            stack.stub.Predict(
                pb.PredictRequest(endpoint_name="fail", request=pb.EndpointRequest(args_json="{}")),
                timeout=10,
                metadata=bearer(key),
            )
        )
        await attempt(
            stack.stub.GetAsyncTask(pb.GetAsyncTaskRequest(task_id="t1.forged.mac"), timeout=10, metadata=bearer(key))
        )
    echo = pb.PredictRequest(endpoint_name="echo", request=pb.EndpointRequest(args_json="{}"))
    await stack.stub.Predict(echo, timeout=10, metadata=bearer(KEY_A))
    assert len(errors) >= 8
    _, scrape = await http_get(stack, "/metrics")
    assert "gateway_auth_failures_total" in scrape
    seen = "\n".join([caplog.text, scrape, *errors, repr(stack.gateway.edges()), repr(stack.gateway.settings)])
    for secret in SECRETS:
        assert secret not in seen
