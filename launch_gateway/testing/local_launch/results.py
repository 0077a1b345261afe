"""What a finished prediction leaves behind, in Launch's result shapes (launch-http-api.md §3-§4).

A value becomes `{"result": "<JSON text>"}`, or with `return_pickled` a `{"result_url": ...}`
pointing at this server's `/v1/results/<uuid>.pkl` (Launch writes the pickle to S3 and hands out
a URL; here the server keeps it in memory and serves it without auth, like a signed URL).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import pickle
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

from launch_gateway.testing.local_launch.container import ContainerError, sync_traceback

# Frames of the machinery that calls a model, left out of the tracebacks clients see.
_PLUMBING = (
    os.path.dirname(asyncio.__file__),
    os.path.dirname(concurrent.futures.__file__),
    os.path.join(os.path.dirname(__file__), "invocation.py"),
    os.path.join(os.path.dirname(__file__), "event_stream.py"),
)


def format_failure(exc: BaseException) -> str:
    """The traceback of a model's exception, starting at the first frame that is not ours.

    Launch's traceback shows the model's frames; ours would start with the thread pool and the
    invocation code. If every frame is ours (the failure is not the model's), all are kept.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(_PLUMBING):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


@dataclass(frozen=True)
class Outcome:
    """A prediction's end: the encoded result, or the exception and its formatted traceback.

    A `ContainerError` (the container answered non-2xx) is an error with a result too: its body,
    encoded, and its status, which an async task reports as SUCCESS (see `container.py`).
    """

    result: dict[str, str] | None = None
    error: BaseException | None = None
    traceback: str | None = None
    status_code: int = 200

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def container_error(self) -> ContainerError | None:
        return self.error if isinstance(self.error, ContainerError) else None

    def sync_body(self) -> dict[str, Any]:
        """The body of `POST /v1/sync-tasks`: HTTP 200 whether the model succeeded or not.

        A container's 400 is not answered here: Launch refuses the request with HTTP 400 instead.
        """
        if self.succeeded:
            return {"status": "SUCCESS", "result": self.result, "traceback": None, "status_code": 200}
        container = self.container_error
        if container is not None:
            return {
                "status": "FAILURE",
                "result": None,
                "traceback": sync_traceback(container),
                "status_code": container.status_code,
            }
        return {"status": "FAILURE", "result": None, "traceback": self.traceback, "status_code": 500}


class ResultStore:
    """Pickled results kept in memory and served at `<base_url>/v1/results/<name>`."""

    def __init__(self) -> None:
        self.base_url = ""  # set by the server once it knows its port
        self._pickles: dict[str, bytes] = {}

    def encode(self, value: Any, *, pickled: bool) -> dict[str, str]:
        """Launch's result dict for `value`; raises if it is not JSON (or pickle) serializable."""
        if not pickled:
            return {"result": json.dumps(value)}
        name = f"{uuid.uuid4()}.pkl"
        self._pickles[name] = pickle.dumps(value)
        return {"result_url": f"{self.base_url}/v1/results/{name}"}

    def get(self, name: str) -> bytes | None:
        return self._pickles.get(name)
