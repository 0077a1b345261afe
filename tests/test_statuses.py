"""Errors as statuses: the rich details each error gets, a status that keeps its code when its details
cannot be built, and one table in docs/errors.md that names every reason the gateway gives."""

from __future__ import annotations

import ast
import logging
import re

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from launch_gateway.server.errors import Code, GatewayError, InvalidArgument, LimitExceeded, NotFound, ShuttingDown
from launch_gateway.server.statuses import ERROR_DOMAIN, status_of
from launch_gateway.server.upstream.http_errors import error_from_http
from tests.docs import ROOT, read

REASON = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")


def decoded(status: grpc.Status) -> status_pb2.Status:
    (found,) = [value for key, value in status.trailing_metadata if key == "grpc-status-details-bin"]
    return status_pb2.Status.FromString(found)


def unpacked(status: grpc.Status) -> dict[str, object]:
    found: dict[str, object] = {}
    for detail in decoded(status).details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            message = kind()
            if detail.Unpack(message):
                found[kind.__name__] = message
    return found


def test_an_invalid_argument_names_its_field_as_a_bad_request_violation() -> None:
    status = status_of(InvalidArgument("request.args.n", "inf cannot be sent as JSON"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.details == "request.args.n: inf cannot be sent as JSON"
    details = unpacked(status)
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, dict(info.metadata)) == ("INVALID_FIELD", ERROR_DOMAIN, {})
    bad = details["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("request.args.n", "inf cannot be sent as JSON")
    ]
    assert "RetryInfo" not in details


def test_a_raise_names_its_own_reason_and_metadata_and_an_upstream_status_joins_them() -> None:
    limited = LimitExceeded("cap", retry_after=1.5, reason="CONCURRENCY_CAP", metadata={"cap": "2"})
    details = unpacked(status_of(limited))
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, dict(info.metadata)) == ("CONCURRENCY_CAP", {"cap": "2"})
    retry = details["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 500_000_000)
    assert ("retry-after", "2") in status_of(limited).trailing_metadata
    upstream = error_from_http("GET", "/v1/model-endpoints", 404, b"{}")
    info = unpacked(status_of(upstream))["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, dict(info.metadata)) == ("UPSTREAM_HTTP_ERROR", {"http_status": "404"})
    assert (upstream.reason, upstream.error_class) == ("UPSTREAM_HTTP_ERROR", "upstream")


@pytest.mark.parametrize(
    "error",
    [
        NotFound("no such endpoint", metadata={"bad": 1}),  # type: ignore[dict-item]  # a detail that cannot be built
        ShuttingDown("draining \ud800"),  # a message protobuf cannot encode
    ],
    ids=["bad-metadata", "unencodable-message"],
)
def test_a_status_whose_details_cannot_be_built_keeps_its_code(
    error: GatewayError, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "launch_gateway"):
        status = status_of(error)
    assert status.code == grpc.StatusCode[error.code.name]  # never UNKNOWN
    assert status.details.encode()  # sendable
    assert all(key != "grpc-status-details-bin" for key, _ in status.trailing_metadata)
    assert ("retry-after" in dict(status.trailing_metadata)) is (error.retry_after is not None)
    assert "cannot build the rich details" in caplog.text


def error_classes() -> list[type[GatewayError]]:
    found, todo = [], [GatewayError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo.extend(kind.__subclasses__())
    return [k for k in found if k.__module__.startswith("launch_gateway.")]


def reasons_raised() -> set[str]:
    """Every `reason="..."` a raise in the server names."""
    found = set()
    for path in (ROOT / "launch_gateway" / "server").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "reason" and isinstance(node.value, ast.Constant):
                found.add(str(node.value.value))
    return found


def reasons_in_the_docs() -> set[str]:
    table = read("docs/errors.md").split("## Every status the gateway decides", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Code")]
    return {cells[2].strip().strip("`") for cells in rows if cells[2].strip() != "none"}


def test_every_reason_is_upper_snake_case_and_in_the_one_table_of_docs_errors_md() -> None:
    classes = {kind.reason for kind in error_classes() if kind.reason != kind.code.name}  # bare classes say their code
    given = classes | reasons_raised() | {"UPSTREAM_HTTP_ERROR", "INTERNAL_ERROR"}
    assert all(REASON.fullmatch(reason) for reason in given), sorted(given)
    assert given == reasons_in_the_docs()


def test_every_error_class_has_a_reason_and_a_class_for_the_usage_metrics() -> None:
    for kind in error_classes():
        assert REASON.fullmatch(kind.reason), kind
        assert kind.error_class in {"client", "policy", "upstream", "gateway"}, kind
    assert Code.OK not in {kind.code for kind in error_classes()}


def test_the_error_domain_is_dns_shaped_and_the_one_the_docs_name() -> None:
    assert re.fullmatch(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+", ERROR_DOMAIN), ERROR_DOMAIN  # AIP-193
    assert f"`{ERROR_DOMAIN}`" in read("docs/errors.md")
