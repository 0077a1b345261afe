"""Logging: one structured line per RPC (the access log), JSON or human, and the process-wide setup.

The access line carries method, endpoint, tenant, gRPC code, duration, upstream HTTP status and the
request id; never a key, a task handle or a URL with credentials. JSON lines suit log pipelines;
`human` suits a terminal.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import time
from typing import Any

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

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


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

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text += " " + " ".join(f"{k}={human_value(v)}" for k, v in fields.items() if v not in (None, ""))
        return text


class BufferedHandler(logging.handlers.MemoryHandler):
    """Lines are written in batches: when 512 are waiting, at a warning or worse, and on `flush()`.

    One write per line would be a system call per RPC; the server also flushes every
    `FLUSH_INTERVAL` seconds, so a quiet gateway's lines are not held back for long.
    """

    def __init__(self, target: logging.Handler) -> None:
        super().__init__(capacity=512, flushLevel=logging.WARNING, target=target, flushOnClose=True)


FLUSH_INTERVAL = 0.5


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record to stderr in the chosen format, in batches (replaces earlier handlers)."""
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [BufferedHandler(stream)]
    root.setLevel(level.upper())


def flush_logs() -> None:
    """Write out what the buffered handlers hold."""
    for handler in logging.getLogger().handlers:
        handler.flush()
