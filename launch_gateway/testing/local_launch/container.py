"""A user container's non-2xx answer, and what Launch makes of it on each task route.

An endpoint function raises `ContainerError(status_code, body)` to stand for its container
answering that HTTP status, as a runnable image can. model-engine's inference gateways and
forwarders (ME `infra/gateways/live_*_inference_gateway.py`, `inference/forwarding/forwarding.py`)
then answer:

- sync: 429 and 503 are retried for about 10 s, then `FAILURE` with that `status_code` and the
  traceback "Too many concurrent requests" or "No healthy upstream" (the imitation answers at once);
  400 is Launch's own HTTP 400 "Invalid request: ..."; any other status is `FAILURE` with it and a
  traceback read from the body;
- async: `SUCCESS` with the container's status as `status_code` and its body as the result;
- streaming: the 200 event stream has begun, so the stream just ends, without an event.
"""

from __future__ import annotations

import json
from typing import Any

THROTTLED = {429: "Too many concurrent requests", 503: "No healthy upstream"}
_compact = json.JSONEncoder(separators=(",", ":")).encode


class ContainerError(Exception):
    """The user container answered `status_code` with the JSON `body` (raise it from an endpoint)."""

    def __init__(self, status_code: int, body: Any = None) -> None:
        if not 300 <= status_code <= 599:
            raise ValueError(f"a container error is an HTTP status 300-599, got {status_code}")
        super().__init__(f"the container answered HTTP {status_code}")
        self.status_code = status_code
        self.body = body


def invalid_request_detail(body: Any) -> str:
    """The `detail` of Launch's 400 for a container's 400 (ME formats the parsed body with str())."""
    return f"Invalid request: {body}"


def sync_traceback(error: ContainerError) -> str:
    """The `traceback` of a sync FAILURE for a container's status other than 400 (ME sync gateway).

    A throttled endpoint has its fixed text; otherwise a body whose `detail` is an object gives its
    `traceback` (or "Failed to parse traceback"), any other object the body as compact JSON, and
    anything else the forwarder's whole answer, `{"result": "<JSON text>"}`.
    """
    if error.status_code in THROTTLED:
        return THROTTLED[error.status_code]
    body = error.body
    if not isinstance(body, dict):
        return _compact({"result": json.dumps(body)})
    detail = body.get("detail", {})
    if not isinstance(detail, dict):
        return _compact(body)
    return str(detail.get("traceback", "Failed to parse traceback"))
