"""An incremental parser for server-sent events (the WHATWG event-stream format).

Only `data:` matters to the gateway: Launch sends each event as a lone `data: <json>` followed by
a blank line, `: ping` comments every 15 s, and no end marker. The parser takes bytes as they come
off the socket and gives back each event's data as soon as its blank line arrives, so nothing is
held back waiting for the next chunk. Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import re

from launch_gateway.server.errors import EventTooLarge

_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSEParser:
    """Feed it chunks; it returns the `data` of every event the chunk completed.

    `pending` is true while part of an event has been read: a stream that ends then was cut
    mid-event (an event is only complete at its blank line).
    """

    __slots__ = ("_data", "_data_size", "_max_event_bytes", "_partial", "_skip_lf")

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._max_event_bytes = max_event_bytes
        self._partial = b""  # the unfinished last line
        self._data: list[bytes] = []  # data lines of the current event
        self._data_size = 0
        self._skip_lf = False  # the previous chunk ended in "\r": a leading "\n" belongs to it

    @property
    def pending(self) -> bool:
        return bool(self._partial or self._data)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Parse `chunk`; return the data of each event it completed, in order."""
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = chunk.endswith(b"\r")
        lines = _LINE_END.split(self._partial + chunk if self._partial else chunk)
        self._partial = lines.pop()
        if len(self._partial) > self._max_event_bytes:
            raise EventTooLarge(f"an event line is longer than {self._max_event_bytes} bytes")
        events: list[bytes] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                    self._data = []
                    self._data_size = 0
                continue
            if line[0] == 0x3A:  # ":" starts a comment (Launch's pings)
                continue
            name, sep, value = line.partition(b":")
            if name != b"data":
                continue  # event, id, retry and unknown fields carry nothing the gateway relays
            if sep and value[:1] == b" ":
                value = value[1:]
            self._data_size += len(value) + 1
            if self._data_size > self._max_event_bytes:
                raise EventTooLarge(f"an event is larger than {self._max_event_bytes} bytes")
            self._data.append(value)
        return events
