"""The SSE parser: framing, comments, line endings, split chunks, truncation and size limits."""

from __future__ import annotations

import pytest

from launch_gateway.server.errors import EventTooLarge
from launch_gateway.server.upstream.sse import SSEParser


def test_launch_framing_gives_one_event_per_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a":1}\r\n\r\ndata: {"a":2}\r\n\r\n') == [b'{"a":1}', b'{"a":2}']
    assert not parser.pending


def test_ping_comments_are_skipped() -> None:
    parser = SSEParser()
    assert parser.feed(b": ping - 2026-11-27 01:00:00\r\n\r\ndata: x\r\n\r\n") == [b"x"]


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"], ids=["lf", "cr", "crlf"])
def test_every_line_ending_is_accepted(newline: bytes) -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a" + newline + b"data: b" + newline + newline) == [b"a\nb"]


def test_event_split_across_chunks_is_held_until_complete() -> None:
    parser = SSEParser()
    assert parser.feed(b"da") == []
    assert parser.pending
    assert parser.feed(b"ta: hel") == []
    assert parser.feed(b"lo\r") == []
    assert parser.feed(b"\n\r") == [b"hello"]
    assert parser.feed(b"\n") == []
    assert not parser.pending


def test_crlf_split_between_chunks_does_not_end_the_event_early() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r\n\r\n") == [b"a\nb"]


def test_event_fields_other_than_data_are_ignored() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: x\nid: 7\nretry: 10\ndata:no-space\n\n") == [b"no-space"]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert SSEParser().feed(b"\n\n\r\n") == []


def test_stream_cut_mid_event_leaves_pending() -> None:
    parser = SSEParser()
    parser.feed(b'data: {"a":1}\n\ndata: {"a"')
    assert parser.pending


def test_oversized_event_is_refused() -> None:
    parser = SSEParser(max_event_bytes=10)
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: " + b"x" * 20 + b"\n")
    with pytest.raises(EventTooLarge):
        SSEParser(max_event_bytes=10).feed(b"x" * 20)
