"""Logging: one structured line per RPC (the access log), JSON or human, and the process-wide setup.

The access line carries method, endpoint, tenant, gRPC code, duration, upstream HTTP status and the
request id; never a key, a task handle or a URL with credentials. JSON lines suit log pipelines;
`human` suits a terminal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO, cast

ACCESS = logging.getLogger("launch_gateway.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and any `fields` passed as extra."""

    _second = -1
    _stamp = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once a second, not once a line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def line(self, created: float, level: str, logger: str, message: str, fields: Mapping[str, Any]) -> str:
        """The line for these parts: what `format` writes for a record, and the access log directly."""
        entry: dict[str, Any] = {"time": self._time(created), "level": level, "logger": logger, "message": message}
        entry.update(fields)
        return json.dumps(entry, separators=(",", ":"), default=str)

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        extra = dict(fields) if isinstance(fields, dict) else {}
        if record.exc_info:
            extra["exception"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname.lower(), record.name, record.getMessage(), extra)


_PLAIN = re.compile(r"[A-Za-z0-9._:/@+-]+")


def human_value(value: object) -> str:
    """A field's value for a human line: as is when plain, else a JSON string (quoted and escaped).

    Values can come from callers; written raw, a space or an `=` in one would read as more fields.
    """
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


class HumanFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for terminals (values escaped: `human_value`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    @staticmethod
    def _fields(fields: Mapping[str, Any]) -> str:
        shown = " ".join(f"{k}={human_value(v)}" for k, v in fields.items() if v not in (None, ""))
        return f" {shown}" if shown else ""

    def line(self, created: float, level: str, logger: str, message: str, fields: Mapping[str, Any]) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        return f"{stamp},{int((created % 1) * 1000):03d} {level.upper()} {logger}: {message}{self._fields(fields)}"

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text += self._fields(fields)
        return text


Formatter = JsonFormatter | HumanFormatter
CAPACITY = 512  # lines held before they are written


class BufferedHandler(logging.Handler):
    """Each record is formatted as it comes; the lines are written in batches: when `CAPACITY` are
    waiting, at a warning or worse, and on `flush()`.

    One write per line would be a system call per RPC; the server also flushes every
    `FLUSH_INTERVAL` seconds, so a quiet gateway's lines are not held back for long. Lines, not
    records, are held: a record kept for a batch outlives the young generation and makes the
    garbage collector's older generations work.
    """

    def __init__(self, stream: TextIO, formatter: Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._stream = stream
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if len(self._lines) >= CAPACITY or record.levelno >= logging.WARNING:
            self.flush()

    @property
    def lines(self) -> Formatter:
        """The formatter, as the one that makes lines from parts too (`access`)."""
        return cast(Formatter, self.formatter)

    def write(self, line: str) -> None:
        """One line formatted by the caller (the access log's)."""
        with self.lock:  # type: ignore[union-attr]  # logging.Handler always makes its lock
            self._lines.append(line)
            if len(self._lines) >= CAPACITY:
                self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._lines:
                return
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self._stream.write(text)
                self._stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: nothing better to do with a log line
                pass

    def close(self) -> None:
        self.flush()
        super().close()


FLUSH_INTERVAL = 0.5
_handler: BufferedHandler | None = None  # the one configure_logging installed


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record to stderr in the chosen format, in batches (replaces earlier handlers)."""
    global _handler
    _handler = BufferedHandler(sys.stderr, JsonFormatter() if fmt == "json" else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [_handler]
    root.setLevel(level.upper())


def access(fields: Mapping[str, Any]) -> None:
    """One access-log line (INFO on `launch_gateway.access`), the cheap way when `configure_logging` set the
    handler: formatted and buffered at once, with no LogRecord. Otherwise (an embedding program's own
    logging, tests' capture) an ordinary record, so its handlers see it."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    handler = _handler
    if handler is not None and logging.getLogger().handlers == [handler] and not ACCESS.handlers:
        handler.write(handler.lines.line(time.time(), "info", ACCESS.name, "rpc", fields))
    else:
        ACCESS.info("rpc", extra={"fields": fields})


def flush_logs() -> None:
    """Write out what the buffered handlers hold."""
    for handler in logging.getLogger().handlers:
        handler.flush()
