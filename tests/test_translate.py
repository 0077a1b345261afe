"""Pure translation: request bodies (types kept, fields named in errors) and response unwrapping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import duration_pb2

from launch_gateway.server.errors import InvalidArgument, UpstreamProtocolError
from launch_gateway.server.upstream.translate import (
    endpoint_from_record,
    to_endpoint_response,
    to_upstream_body,
    wait_timeout_from,
)
from launch_gateway.v1 import endpoint_service_pb2 as pb

SYNC, ASYNC, STREAMING = pb.ENDPOINT_KIND_SYNC, pb.ENDPOINT_KIND_ASYNC, pb.ENDPOINT_KIND_STREAMING


def request_with_args(args: dict[str, Any]) -> pb.EndpointRequest:
    request = pb.EndpointRequest()
    request.args.update(args)
    return request


def test_integral_struct_numbers_go_upstream_as_json_integers() -> None:
    body = json.loads(to_upstream_body(request_with_args({"n": 3, "x": 2.5, "big": 2**53}), SYNC))
    assert body == {"args": {"n": 3, "x": 2.5, "big": 2**53}, "return_pickled": False}
    assert type(body["args"]["n"]) is int
    assert type(body["args"]["x"]) is float


def test_numbers_past_two_to_the_53_stay_floats() -> None:
    body = json.loads(to_upstream_body(request_with_args({"n": float(2**60)}), SYNC))
    assert type(body["args"]["n"]) is float


def test_nested_values_keep_their_types() -> None:
    args = {"a": [1, "two", None, True, {"b": -4}], "c": {}}
    assert json.loads(to_upstream_body(request_with_args(args), SYNC))["args"] == args


def test_args_json_is_passed_through_exactly() -> None:
    raw = '{"n": 1152921504606846977, "f": 0.1000000000000000055511151231257827}'
    body = to_upstream_body(pb.EndpointRequest(args_json=raw), SYNC)
    assert body.startswith(b'{"args":' + raw.encode() + b",")
    assert json.loads(body)["args"]["n"] == 2**60 + 1


@pytest.mark.parametrize(
    ("request_fields", "field", "reason"),
    [
        ({}, "request.input", "exactly one of url, args or args_json"),
        ({"args_json": "{"}, "request.args_json", "not valid JSON"),
        ({"url": ""}, "request.url", "must not be empty"),
        ({"url": "not a url"}, "request.url", "spaces"),
        ({"url": "relative/path"}, "request.url", "absolute URL"),
        ({"args_json": "{}", "callback_url": "ftp://x/y"}, "request.callback_url", "must be an absolute https://"),
        # One reading in every mode (open mode too): what parsers could read differently is refused here.
        ({"args_json": "{}", "callback_url": "https://a\\b.example/"}, "request.callback_url", "backslash"),
        ({"args_json": "{}", "callback_url": "https://u@evil.example/"}, "request.callback_url", "'@'"),
        ({"args_json": "{}", "callback_url": "https://" + "a" * 2048}, "request.callback_url", "longer than 2048"),
        (
            {"args_json": "{}", "callback_url": "https://x/y", "callback_auth_basic": {"password": "p"}},
            "request.callback_auth_basic.username",
            "must not be empty",
        ),
        (
            {"args_json": "{}", "callback_auth_mtls": {"cert": "c"}},
            "request.callback_auth_mtls.key",
            "must not be empty",
        ),
    ],
    ids=[
        "no-input",
        "bad-json",
        "empty-url",
        "url-space",
        "relative-url",
        "callback-scheme",
        "callback-backslash",
        "callback-userinfo",
        "callback-too-long",
        "basic-no-user",
        "mtls-no-key",
    ],
)
def test_bad_requests_name_the_field(request_fields: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_upstream_body(pb.EndpointRequest(**request_fields), ASYNC)
    assert caught.value.field == field
    assert reason in caught.value.message


@pytest.mark.parametrize("raw", ["[1, 2]", '"a prompt"', "42", "2.5", "true", "null"])
def test_args_json_may_be_any_json_value(raw: str) -> None:
    body = to_upstream_body(pb.EndpointRequest(args_json=raw), SYNC)
    assert body.startswith(b'{"args":' + raw.encode() + b",")


def test_non_finite_numbers_are_refused_with_their_path() -> None:
    with pytest.raises(InvalidArgument, match=r"request\.args\.a\[1\]"):
        to_upstream_body(request_with_args({"a": [1, float("nan")]}), SYNC)


@pytest.mark.parametrize("kind", [SYNC, STREAMING], ids=["sync", "streaming"])
def test_callbacks_are_refused_on_non_async_endpoints(kind: int) -> None:
    request = pb.EndpointRequest(args_json="{}", callback_url="https://example.com/cb")
    with pytest.raises(InvalidArgument, match="only async endpoints send callbacks"):
        to_upstream_body(request, kind)  # type: ignore[arg-type]


def test_async_body_carries_callback_and_auth() -> None:
    request = pb.EndpointRequest(
        url="https://example.com/in.txt",
        callback_url="https://example.com/cb",
        callback_auth_basic=pb.BasicCallbackAuth(username="u", password="p"),
        return_pickled=True,
    )
    assert json.loads(to_upstream_body(request, ASYNC)) == {
        "url": "https://example.com/in.txt",
        "callback_url": "https://example.com/cb",
        "callback_auth": {"kind": "basic", "username": "u", "password": "p"},
        "return_pickled": True,
    }


def test_sync_body_leaves_out_request_id() -> None:
    request = pb.EndpointRequest(args_json="{}", request_id="r-1")
    assert json.loads(to_upstream_body(request, SYNC)) == {"args": {}, "return_pickled": False}


@pytest.mark.parametrize(
    ("payload", "streaming", "result", "result_url"),
    [
        ({"status": "SUCCESS", "result": {"result": '{"a": 1}'}}, False, '{"a": 1}', None),
        ({"status": "SUCCESS", "result": {"result": "plain words"}}, False, '"plain words"', None),
        ({"status": "SUCCESS", "result": {"result": {"a": 1}}}, False, '{"a":1}', None),
        ({"status": "SUCCESS", "result": {"result": "3"}}, True, '"3"', None),
        ({"status": "SUCCESS", "result": {"result_url": "s3://b/k.pkl"}}, False, None, "s3://b/k.pkl"),
        ({"status": "SUCCESS", "result": [1, 2]}, False, "[1,2]", None),
        ({"status": "SUCCESS", "result": None}, False, None, None),
        ({"status": "FAILURE", "result": "division by zero"}, False, '"division by zero"', None),
    ],
    ids=[
        "artifact-json-text",
        "non-json-string",
        "forwarder-object",
        "stream-string-chunk",
        "pickled",
        "bare",
        "none",
        "failure-message",
    ],
)
def test_results_are_unwrapped_to_json_text(
    payload: dict[str, Any], streaming: bool, result: str | None, result_url: str | None
) -> None:
    response = to_endpoint_response(payload, streaming=streaming)
    assert (response.result if response.HasField("result") else None) == result
    assert (response.result_url if response.HasField("result_url") else None) == result_url


def test_failure_keeps_traceback_and_status_code() -> None:
    response = to_endpoint_response(
        {"status": "FAILURE", "result": None, "traceback": "Traceback...", "status_code": 500}
    )
    assert response.status == pb.TASK_STATUS_FAILURE
    assert response.traceback == "Traceback..."
    assert response.status_code == 500
    assert not response.HasField("result")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("PENDING", pb.TASK_STATUS_PENDING),
        ("STARTED", pb.TASK_STATUS_STARTED),
        ("SUCCESS", pb.TASK_STATUS_SUCCESS),
        ("FAILURE", pb.TASK_STATUS_FAILURE),
        ("UNDEFINED", pb.TASK_STATUS_UNDEFINED),
        ("REVOKED", pb.TASK_STATUS_UNDEFINED),
    ],
)
def test_status_strings_map_and_unknown_ones_are_undefined(status: str, expected: int) -> None:
    assert to_endpoint_response({"status": status}, task_id="t").status == expected


@pytest.mark.parametrize("payload", [[], "x", {"result": 1}, {"status": 3}], ids=["list", "str", "no-status", "int"])
def test_unreadable_payloads_are_protocol_errors(payload: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        to_endpoint_response(payload)


def test_endpoint_records_give_kind_and_status() -> None:
    endpoint = endpoint_from_record({"id": "end_1", "name": "e", "endpoint_type": "streaming", "status": "READY"})
    assert (endpoint.id, endpoint.name, endpoint.kind, endpoint.status) == ("end_1", "e", STREAMING, "READY")
    with pytest.raises(UpstreamProtocolError):
        endpoint_from_record({"name": "e"})


def test_paths_quote_keys_that_are_not_plain_names() -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_upstream_body(request_with_args({"": {"a b": [float("inf")]}}), SYNC)
    assert caught.value.field == 'request.args[""]["a b"][0]'


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [
        pytest.param(0, 0, None, id="zero-is-unset"),
        pytest.param(0, 1, 1e-9, id="1ns"),
        pytest.param(0, 999_999, 0.000999999, id="just-under-1ms"),
        pytest.param(2, 500_000_000, 2.5, id="2.5s"),
        pytest.param(315_576_000_000, 999_999_999, 315_576_000_000.999999999, id="the-largest-duration"),
    ],
)
def test_wait_timeouts_are_read_exactly(seconds: int, nanos: int, expected: float | None) -> None:
    assert wait_timeout_from(duration_pb2.Duration(seconds=seconds, nanos=nanos)) == expected


@pytest.mark.parametrize(
    ("seconds", "nanos", "reason"),
    [
        pytest.param(0, -1, "must not be negative", id="minus-1ns"),
        pytest.param(-315_576_000_000, -999_999_999, "must not be negative", id="the-smallest-duration"),
        pytest.param(1, -1, "same sign", id="mixed-signs"),
        pytest.param(0, 1_000_000_000, "nanos must be within", id="nanos-past-a-second"),
        pytest.param(0, -1_000_000_000, "nanos must be within", id="nanos-below-minus-a-second"),
        pytest.param(315_576_000_001, 0, "seconds must be within", id="seconds-past-the-range"),
        pytest.param(-315_576_000_001, 0, "seconds must be within", id="seconds-below-the-range"),
        pytest.param(2**63 - 1, 0, "seconds must be within", id="int64-max"),
    ],
)
def test_wait_timeouts_that_are_negative_or_not_durations_name_the_field(seconds: int, nanos: int, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        wait_timeout_from(duration_pb2.Duration(seconds=seconds, nanos=nanos))
    assert caught.value.field == "timeout"
    assert caught.value.message.startswith("timeout: ")
    assert reason in caught.value.message


def test_an_unset_wait_timeout_is_none() -> None:
    assert wait_timeout_from(None) is None
