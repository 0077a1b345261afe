"""The error model: the HTTP-to-gRPC table, one test per row, and error body descriptions."""

from __future__ import annotations

import grpc
import pytest

from launch_gateway.server.errors import (
    Aborted,
    Cancelled,
    Code,
    FailedPrecondition,
    GatewayError,
    Internal,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unimplemented,
    Unknown,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from launch_gateway.server.upstream.http_errors import (
    HTTP_TO_GRPC,
    UPSTREAM_ERRORS,
    code_for_http_status,
    describe_error_body,
    error_from_http,
)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, Code.INVALID_ARGUMENT),
        (401, Code.UNAUTHENTICATED),
        (403, Code.PERMISSION_DENIED),
        (404, Code.NOT_FOUND),
        (408, Code.DEADLINE_EXCEEDED),
        (409, Code.ABORTED),
        (413, Code.RESOURCE_EXHAUSTED),
        (422, Code.INVALID_ARGUMENT),
        (429, Code.RESOURCE_EXHAUSTED),
        (499, Code.CANCELLED),
        (500, Code.INTERNAL),
        (501, Code.UNIMPLEMENTED),
        (502, Code.UNAVAILABLE),
        (503, Code.UNAVAILABLE),
        (504, Code.DEADLINE_EXCEEDED),
        (418, Code.FAILED_PRECONDITION),
        (507, Code.INTERNAL),
        (302, Code.UNKNOWN),
    ],
    ids=lambda v: str(v.name if isinstance(v, Code) else v),
)
def test_http_status_maps_to_grpc_code(status: int, code: Code) -> None:
    assert code_for_http_status(status) is code


def test_table_rows_are_all_tested_above() -> None:
    assert set(HTTP_TO_GRPC) == {400, 401, 403, 404, 408, 409, 413, 422, 429, 499, 500, 501, 502, 503, 504}


def test_codes_mirror_grpc_status_codes() -> None:
    for code in Code:
        assert grpc.StatusCode[code.name].value[0] == code.value


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            b'{"detail":"The specified endpoint could not be found."}',
            "The specified endpoint could not be found.",
        ),
        (b'{"detail":[{"loc":["body","args"],"msg":"not a dict","type":"x"}]}', "body.args: not a dict"),
        (b'{"error":"Too many requests","timestamp":"t"}', "Too many requests"),
        (b"<html>bad gateway</html>", "<html>bad gateway</html>"),
        (b"", "(empty body)"),
    ],
    ids=["detail", "validation", "throttle", "html", "empty"],
)
def test_error_bodies_are_described_readably(body: bytes, text: str) -> None:
    assert describe_error_body(body) == text


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, UpstreamRejected),
        (401, Unauthenticated),
        (403, PermissionDenied),
        (404, NotFound),
        (408, UpstreamTimeout),
        (409, Aborted),
        (413, ResourceExhausted),
        (422, UpstreamRejected),
        (429, ResourceExhausted),
        (499, Cancelled),
        (500, Internal),
        (501, Unimplemented),
        (502, UpstreamUnavailable),
        (503, UpstreamUnavailable),
        (504, UpstreamTimeout),
        (418, FailedPrecondition),
        (507, Internal),
        (302, Unknown),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_error_from_http_is_the_class_for_its_code(status: int, kind: type[GatewayError]) -> None:
    error = error_from_http("GET", "/v1/model-endpoints", status, b'{"detail":"no"}', retry_after=1.5)
    assert type(error) is kind
    assert error.code is code_for_http_status(status)
    assert (error.http_status, error.retry_after) == (status, 1.5)
    assert error.message == f"upstream GET /v1/model-endpoints answered HTTP {status}: no"


def test_each_code_has_exactly_one_upstream_class_and_it_carries_that_code() -> None:
    for code, kind in UPSTREAM_ERRORS.items():
        assert kind.code is code, kind
    assert len(set(UPSTREAM_ERRORS.values())) == len(UPSTREAM_ERRORS)
    reachable = {code_for_http_status(status) for status in range(100, 600) if not 200 <= status < 300}
    assert reachable <= set(UPSTREAM_ERRORS)


def test_error_from_http_names_route_status_and_keeps_retry_after() -> None:
    error = error_from_http("POST", "/v1/sync-tasks", 429, b'{"error":"Too many requests"}', retry_after=2.0)
    assert isinstance(error, ResourceExhausted)
    assert error.retry_after == 2.0
    assert error.message == "upstream POST /v1/sync-tasks answered HTTP 429: Too many requests"
