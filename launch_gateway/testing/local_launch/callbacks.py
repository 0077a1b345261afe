"""Callback delivery for finished async tasks, as Launch's `CallbackHook` does it.

The POST body is the task's result dict with `status_code` and `task_id` (see `tasks.py`). It is
sent with HTTP Basic: the request's `callback_auth` when it is basic, else the endpoint owner's id
and an empty password. An mtls `callback_auth` is accepted and ignored, as Launch ignores it (ME
`inference/post_inference_hooks.py`). The callback server's certificate is checked against
`ca_file` when given, else the default trust store. Up to three tries with exponential backoff;
failures are logged with the task id and the URL's scheme, host and path only, never credentials.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from typing import Any

import aiohttp
from yarl import URL

from launch_gateway.testing.local_launch.predict_request import BasicCallbackAuth, CallbackAuth

logger = logging.getLogger(__name__)


def _safe_url(url: str) -> str:
    """The URL without user info, query or fragment: what may appear in a log line."""
    try:
        parsed = URL(url)
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except ValueError:
        return "<invalid url>"


def _failure_reason(exc: BaseException) -> str:
    """Why a try failed, without str(exc) in general: some aiohttp errors quote the full URL."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__}: {exc.os_error}"
    return type(exc).__name__


class CallbackSender:
    """POSTs task results to callback URLs in the background; `close()` cancels what is left."""

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        retry_delays: Sequence[float] = (0.1, 0.2),
        timeout: float = 10.0,
    ) -> None:
        self._ca_file = ca_file
        self._retry_delays = tuple(retry_delays)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._server_trust: ssl.SSLContext | None = None
        self._pending: set[asyncio.Task[bool]] = set()

    async def start(self) -> None:
        self._server_trust = await asyncio.to_thread(self._trust_context)
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.wait(self._pending)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _trust_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self._ca_file)

    def schedule(self, task_id: str, url: str, auth: CallbackAuth | None, owner: str, body: dict[str, Any]) -> None:
        """Deliver in the background, so a slow callback server never holds up a worker."""
        task = asyncio.create_task(self.deliver(task_id, url, auth, owner, body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def deliver(
        self, task_id: str, url: str, auth: CallbackAuth | None, owner: str, body: dict[str, Any]
    ) -> bool:
        """POST `body` to `url` as `auth` (basic) or `owner`, retrying; True once it answered 2xx."""
        if self._session is None:
            raise RuntimeError("CallbackSender.start() was not called")
        where = _safe_url(url)
        ssl_context = self._server_trust
        if isinstance(auth, BasicCallbackAuth):
            authorization = aiohttp.encode_basic_auth(auth.username, auth.password)
        else:
            authorization = aiohttp.encode_basic_auth(owner, "")
        headers = {"Authorization": authorization}
        tries = len(self._retry_delays) + 1
        for attempt in range(1, tries + 1):
            try:
                async with self._session.post(
                    url, json=body, headers=headers, ssl=ssl_context if ssl_context is not None else True
                ) as response:
                    if 200 <= response.status < 300:
                        return True
                    reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                reason = _failure_reason(exc)
            logger.warning(
                "callback for task %s to %s failed (try %d of %d): %s", task_id, where, attempt, tries, reason
            )
            if attempt < tries:
                await asyncio.sleep(self._retry_delays[attempt - 1])
        return False
