"""How Launch, and the proxies in front of it, answer when they fail (launch-http-api.md §3, §8).

Route errors are FastAPI's `{"detail": ...}`; the 429 of Launch's concurrency limiter and its
unhandled-error 500 come from its middleware as `{"error": ..., "timestamp": ...}` with a
US/Pacific timestamp; a 502 or 504 comes from the proxy as plain text. The fault injector
(`faults.py`) answers with these, and with the broken 200s a misrouted request can get.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, tzinfo
from functools import partial
from http import HTTPStatus
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

BROKER_DOWN = "Message broker temporarily unavailable. Please retry."
INTERNAL_ERROR = "Internal error occurred. Our team has been notified."
# A proxy's own answers, as text/plain (504 in Envoy's words: Launch runs behind Istio).
_PROXY_TEXT = {502: "Bad Gateway", 504: "upstream request timeout"}
_DETAILS = {408: "Request timed out."}
BAD_JSON_BODY = b"not json: {'status': 'SUCCESS'"
HTML_BODY = "<html><head><title>Welcome to nginx!</title></head><body><h1>Welcome to nginx!</h1></body></html>"
_dumps = partial(json.dumps, separators=(",", ":"))


def _pacific() -> tzinfo:
    try:
        return ZoneInfo("America/Los_Angeles")
    except ZoneInfoNotFoundError:  # pragma: no cover - no tz database on this host
        return UTC


def launch_timestamp(now: datetime) -> str:
    """The `timestamp` of Launch's middleware errors: US/Pacific, e.g. "2024-05-01 09:30:00 PDT"."""
    return now.astimezone(_pacific()).strftime("%Y-%m-%d %H:%M:%S %Z")


def error_response(
    status: int, now: datetime, *, async_create: bool = False, retry_after: str | None = None
) -> web.Response:
    """What Launch (or the proxy before it) answers with `status`; `retry_after` adds that header."""
    if status in _PROXY_TEXT:
        return web.Response(status=status, text=_PROXY_TEXT[status], content_type="text/plain")
    body: dict[str, Any]
    if status == 429:  # the concurrency limiter in Launch's middleware: no `detail`
        body = {"error": "Too many requests", "timestamp": launch_timestamp(now)}
    elif status == 500:  # an unhandled exception, as the middleware reports it
        body = {"error": INTERNAL_ERROR, "timestamp": launch_timestamp(now), "request_id": str(uuid.uuid4())}
    elif status == 503 and async_create:  # Celery's broker could not take the task
        body = {"detail": BROKER_DOWN}
    else:
        body = {"detail": _DETAILS.get(status) or HTTPStatus(status).phrase}
    headers = None if retry_after is None else {"Retry-After": retry_after}
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def bad_json_response() -> web.Response:
    """A 200 that says application/json but is not JSON."""
    return web.Response(body=BAD_JSON_BODY, content_type="application/json")


def html_response() -> web.Response:
    """A 200 text/html page, as a web server that is not Launch answers."""
    return web.Response(text=HTML_BODY, content_type="text/html")
