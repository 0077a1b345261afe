"""The SDK's objects match the Launch client's: signatures, defaults, validation, and no server imports."""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys

import pytest

from launch_gateway import EndpointRequest, EndpointResponse, EndpointResponseFuture, EndpointResponseStream
from launch_gateway.client import aio

# The seed's signatures (the Launch client's documentation), as (name, default) in order.
EMPTY = inspect.Parameter.empty
SEED = {
    EndpointRequest.__init__: [
        ("self", EMPTY), ("url", None), ("args", None), ("callback_url", None), ("callback_auth_kind", None),
        ("callback_auth_username", None), ("callback_auth_password", None), ("callback_auth_cert", None),
        ("callback_auth_key", None), ("return_pickled", False), ("request_id", None),
    ],
    EndpointResponse.__init__: [
        ("self", EMPTY), ("client", EMPTY), ("status", EMPTY), ("result_url", None), ("result", None),
        ("traceback", None),
    ],
    EndpointResponseFuture.__init__: [("self", EMPTY), ("client", EMPTY), ("endpoint_name", EMPTY),
                                      ("async_task_id", EMPTY)],
    EndpointResponseFuture.get: [("self", EMPTY), ("timeout", None)],
    aio.EndpointResponseFuture.get: [("self", EMPTY), ("timeout", None)],
    EndpointResponseStream.__init__: [("self", EMPTY), ("response", EMPTY)],
}  # fmt: skip


@pytest.mark.parametrize("function", list(SEED), ids=lambda f: f.__qualname__)
def test_signatures_match_the_seed(function: object) -> None:
    params = list(inspect.signature(function).parameters.values())  # type: ignore[arg-type]
    expected = SEED[function]  # type: ignore[index]
    # The seed's parameters come first, in order, with the seed's defaults; ours may only add optional ones.
    assert [(p.name, p.default) for p in params[: len(expected)]] == expected
    assert all(p.default is not EMPTY for p in params[len(expected) :])


def test_extra_response_field_is_status_code() -> None:
    names = list(inspect.signature(EndpointResponse.__init__).parameters)
    assert names[len(SEED[EndpointResponse.__init__]) :] == ["status_code"]


def test_a_request_needs_url_or_args() -> None:
    with pytest.raises(ValueError, match="at least one of url or args"):
        EndpointRequest()


def test_url_and_args_warns_and_url_wins(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="launch_gateway.client"):
        request = EndpointRequest(url="https://example.com/x", args={"a": 1})
    assert "args will be ignored" in caplog.text
    message = request.to_proto()
    assert message.WhichOneof("input") == "url"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"callback_auth_kind": "basic", "callback_auth_cert": "c"}, "callback_auth_cert does not apply"),
        (
            {"callback_auth_kind": "mtls", "callback_auth_username": "u"},
            "callback_auth_username does not apply",
        ),
        ({"callback_auth_username": "u"}, "does not apply when callback_auth_kind is None"),
        ({"callback_auth_kind": "oauth"}, "must be 'basic' or 'mtls'"),
        ({"callback_auth_kind": "basic"}, "callback_auth_username is required"),
        ({"callback_auth_kind": "mtls", "callback_auth_cert": "c"}, "are required"),
    ],
)
def test_callback_auth_fields_must_fit_the_kind(kwargs: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        EndpointRequest(args={}, **kwargs)  # type: ignore[arg-type]


def test_request_id_is_accepted_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="request_id is deprecated"):
        request = EndpointRequest(args={}, request_id="r1")
    assert request.request_id == "r1"


def test_args_travel_as_exact_json() -> None:
    message = EndpointRequest(args={"n": 2**60, "x": 0.1}).to_proto()
    assert json.loads(message.args_json) == {"n": 2**60, "x": 0.1}


def test_unserialisable_args_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="JSON-serialisable"):
        EndpointRequest(args={"s": {1, 2}}).to_proto()


def test_reprs_hide_callback_secrets() -> None:
    request = EndpointRequest(args={"a": 1}, callback_auth_kind="basic", callback_auth_username="u",
                              callback_auth_password="hunter2")  # fmt: skip
    assert "hunter2" not in repr(request)


def test_importing_the_sdk_does_not_load_the_server_side() -> None:
    code = (
        "import sys, launch_gateway, launch_gateway.client.aio; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'aiohttp' or m in "
        "('launch_gateway.server', 'launch_gateway.testing')]; "
        "print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
