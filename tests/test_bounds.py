"""The rules that bound caller input: JSON depth, task ids, W3C tracing headers, messages, retry delays."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import grpc
import pytest

from launch_gateway.server import statuses
from launch_gateway.server.errors import (
    MAX_MESSAGE_BYTES,
    MAX_RETRY_DELAY,
    InvalidArgument,
    ResourceExhausted,
    bounded_message,
    bounded_retry_delay,
    field_key,
    shown,
)
from launch_gateway.server.headers import check_traceparent, check_tracestate, passed_through_headers
from launch_gateway.server.upstream import endpoints
from launch_gateway.server.upstream.endpoints import EndpointDirectory
from launch_gateway.server.upstream.http_errors import parse_retry_after
from launch_gateway.server.upstream.launch_api import UpstreamCall
from launch_gateway.server.upstream.translate import MAX_JSON_DEPTH, is_upstream_task_id, nests_deeper
from tests.fake_clock import FakeClock

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("text", "deeper"),
    [
        ("{}", False),
        ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, False),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), True),
        ("[]" * 10_000, False),  # many brackets, never deep
        ('["' + "[" * 1000 + '"]', False),  # brackets inside a string do not nest
        ('["\\"' + "[" * 1000 + '"]', False),  # nor after an escaped quote
        ("[" * 100_000, True),  # never closed
        ('{"a":' * (MAX_JSON_DEPTH + 1), True),
    ],
    ids=["empty", "at-limit", "past-limit", "wide", "in-string", "escaped-quote", "unclosed", "objects"],
)
def test_nests_deeper_counts_brackets_outside_strings(text: str, deeper: bool) -> None:
    assert nests_deeper(text) is deeper


@pytest.mark.parametrize(
    ("task_id", "plausible"),
    [
        ("6a5f1c3e-94c1-4d61-9a07-0c2a1f1e8b1d", True),
        ("celery:task.1_2", True),
        ("a" * 256, True),
        ("a" * 257, False),
        ("..", False),
        (".", False),
        (".hidden", False),
        ("a/b", False),
        ("a%2Fb", False),
        ("", False),
        ("a\n", False),
    ],
)
def test_an_upstream_task_id_is_one_path_segment_and_never_a_dot_segment(task_id: str, plausible: bool) -> None:
    assert is_upstream_task_id(task_id) is plausible


@pytest.mark.parametrize(
    "value",
    [
        TRACEPARENT,
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-later",
        "00-" + "1" * 32 + "-" + "2" * 16 + "-ff",
    ],
)
def test_w3c_traceparents_are_accepted(value: str) -> None:
    check_traceparent(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        TRACEPARENT.upper(),
        TRACEPARENT + "-",
        "ff" + TRACEPARENT[2:],
        "00-" + "0" * 32 + TRACEPARENT[35:],
        TRACEPARENT[:36] + "0" * 16 + TRACEPARENT[52:],
        TRACEPARENT.replace("-", "_"),
        TRACEPARENT[:-1] + "\x00",
        "01" + TRACEPARENT[2:] + "-" + "x" * 600,
        "01" + TRACEPARENT[2:] + "-caf\xe9",
    ],
)
def test_anything_else_as_traceparent_is_invalid_argument(value: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_traceparent(value)
    assert caught.value.field == "traceparent"


@pytest.mark.parametrize(
    "value",
    ["", "a=b", " a=b ,\t,c=d ", "t@s=v", "a*/_-=!#~", ",".join(f"k{n}=v" for n in range(32)), "a=" + "x" * 256],
)
def test_w3c_tracestates_are_accepted(value: str) -> None:
    check_tracestate(value)


@pytest.mark.parametrize(
    "value",
    [
        "A=b", "a=b=c", "a=", "a", "=b", "a=b,a=c", "a=b\x7f", "a=caf\xe9", "a=b\r\nx: y",
        ",".join(f"k{n}=v" for n in range(33)), "a=" + "x" * 257, "1a=b", "t@1s=v",
    ],
)  # fmt: skip
def test_anything_else_as_tracestate_is_invalid_argument(value: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_tracestate(value)
    assert caught.value.field == "tracestate"


def test_several_tracestate_values_are_one_list_and_a_second_traceparent_is_refused() -> None:
    metadata = [("traceparent", TRACEPARENT), ("tracestate", "a=1"), ("tracestate", "b=2")]
    assert passed_through_headers(metadata) == {"traceparent": TRACEPARENT, "tracestate": "a=1,b=2"}
    with pytest.raises(InvalidArgument, match=r"^traceparent: given more than once"):
        passed_through_headers([("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)])
    with pytest.raises(InvalidArgument, match=r"^tracestate: a key is given more than once"):
        passed_through_headers([("tracestate", "a=1"), ("tracestate", "a=2")])


def test_shown_cuts_a_long_value_and_says_how_long_it_was() -> None:
    assert shown("abc") == "'abc'"
    assert shown("x" * 100, limit=4) == "'xxxx'... (100 characters)"
    assert shown("x" * 100, limit=4, quote=False) == "xxxx... (100 characters)"  # the upstream's own words
    assert shown("abc", quote=False) == "abc"


def test_field_key_quotes_a_short_key_as_json_and_a_long_one_as_shown() -> None:
    assert field_key('a "b"') == '"a \\"b\\""'
    assert field_key("k" * 100) == shown("k" * 100)


@pytest.mark.parametrize("message", ["x" * 100_000, "é" * 100_000, "\U0001f600" * 100_000])
def test_every_error_message_is_at_most_max_message_bytes(message: str) -> None:
    error = ResourceExhausted(message)
    assert len(error.message.encode()) <= MAX_MESSAGE_BYTES
    assert error.message.endswith(" ...")
    assert bounded_message("short") == "short"


@pytest.mark.parametrize(
    ("seconds", "bounded"),
    [(None, None), (2.5, 2.5), (0.0, 0.0), (1e30, MAX_RETRY_DELAY), (math.inf, None), (math.nan, None), (-1.0, None)],
)
def test_retry_delays_are_bounded_where_every_error_is_made(seconds: float | None, bounded: float | None) -> None:
    assert bounded_retry_delay(seconds) == bounded
    assert ResourceExhausted("slow down", retry_after=seconds).retry_after == bounded


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), ("1e30", MAX_RETRY_DELAY), ("inf", None), ("nan", None), ("-3", None), ("Wed, 21 Oct 2015", None)],
)
def test_retry_after_headers_are_read_bounded(header: str, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


class _Records:
    """A LaunchAPI stand-in whose lookups find every name."""

    async def find_endpoint(self, name: str, call: UpstreamCall) -> dict[str, Any]:
        return {"id": f"id-{name}", "name": name, "endpoint_type": "sync"}


async def test_the_endpoint_cache_keeps_at_most_max_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoints, "MAX_ENTRIES", 8)
    clock = FakeClock()
    directory = EndpointDirectory(_Records(), clock, ttl=15.0)  # type: ignore[arg-type]
    call = UpstreamCall(None, 1.0)
    for n in range(20):
        await directory.resolve(f"e{n}", call)
        assert len(directory._entries) <= 8
    clock.advance(16)  # everything has expired: a new name drops them all
    await directory.resolve("fresh", call)
    assert list(directory._entries) == [("", "fresh")]
    await asyncio.sleep(0)


def test_a_status_whose_details_cannot_be_built_keeps_its_code() -> None:
    # The code the caller gets is the code the boundary counts, even when a detail is out of range.
    error = ResourceExhausted("slow down", retry_after=1.0)
    error.retry_after = 1e30  # past Duration's range, as an unbounded Retry-After once was
    status = statuses.status_of(error)
    assert (status.code, status.details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")
