"""Launch's callbacks into the gateway: a task that ends wakes its waiters at once, on every replica.

WaitAsyncTask polls (`upstream.waits`), so without help a result waits up to a poll interval after
its task ends. Where `callbacks.public_url` is set and the endpoint has Launch's `callback` hook,
SubmitAsync gives Launch a callback URL of the gateway's own in place of the caller's:

    {public_url}/v1/task-callbacks/c1.<payload>.<mac>

sealed with the task-handle secrets (`access.handles`, its own version prefix): it names the tenant,
the endpoint, the caller's own `callback_url` when it gave one, and when it expires
(`callbacks.url_ttl`). Launch POSTs a task's result there when the task ends, after it has stored
the result (its hook runs in Celery's `after_return`), so a poll taken then sees SUCCESS. The receiver:

1. answers 404 to a URL the gateway did not seal or that has expired, and 400 to a body without a
   plausible `task_id`, and does nothing else for them;
2. wakes the tenant's waiters on that task (`TaskWaits.wake`) on this replica and, when the rate
   limits use Redis, on every replica (`Wakeups`, one pub/sub channel). The waiters' answer is still
   Launch's own, from the poll taken at once: a callback never supplies a result, so whoever learns
   a callback URL cannot complete a task, only make the gateway look sooner;
3. passes the callback on to the caller's own `callback_url`, when it gave one, with the body Launch
   sent (its `task_id` the one SubmitAsync gave the caller, the task handle) and the `Authorization`
   header Launch sent (the caller's `callback_auth`, or Launch's default), after the
   tenant's callback fence has passed the URL again (`Gate.check_callback`). Launch gets the caller's
   answer, 2xx as 200 and anything else as 502, so Launch's own tries (three) still reach the
   caller's server, and the caller loses nothing by the gateway standing in between.

Launch sends no callback for a failed task, and a callback can be lost; polling stays the fallback
for both, so a missing callback costs time, never a result. An endpoint with a `default_callback_url`
keeps its own callbacks when the caller names none: the gateway does not stand in for those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from launch_gateway.server.access.callbacks import parse_callback_url
from launch_gateway.server.access.handles import TaskHandles, TaskRef
from launch_gateway.server.access.tenants import Tenant
from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import GatewayError
from launch_gateway.server.http_sites import listen
from launch_gateway.server.settings import CallbackSettings
from launch_gateway.server.upstream.translate import is_upstream_task_id
from launch_gateway.server.upstream.waits import TaskWaits

log = logging.getLogger("launch_gateway")

VERSION = "c1"  # the seal's version prefix: a callback URL never opens as a task handle, nor one as the other
ROUTE = "/v1/task-callbacks/"
MAX_TOKEN_LENGTH = 4096  # a sealed caller URL is at most ~2,700 characters (access.callbacks.MAX_URL_LENGTH)


@dataclass(frozen=True)
class CallbackGrant:
    """What a callback URL the gateway gave Launch says: whose task, and where to pass the callback on."""

    tenant: str
    endpoint: str
    forward_to: str  # the caller's own callback_url, or "" when it gave none
    expires: float  # wall seconds


def seal_grant(handles: TaskHandles, grant: CallbackGrant) -> str:
    return handles.seal(VERSION, (grant.tenant, grant.endpoint, grant.forward_to, int(grant.expires)))


def open_grant(handles: TaskHandles, token: str, now: float) -> CallbackGrant | None:
    """The grant a callback URL's last segment seals, or None when it is not one or has expired."""
    values = handles.unseal(VERSION, token, MAX_TOKEN_LENGTH)
    if values is None or len(values) != 4 or not all(isinstance(v, str) for v in values[:3]):
        return None
    if not isinstance(values[3], int) or values[3] < now:
        return None
    return CallbackGrant(values[0], values[1], values[2], float(values[3]))


class Wakeups:
    """Wakes the waiters of a task that ended: here at once, and on the other replicas through Redis.

    With a Redis client every replica subscribes to one channel; a replica that receives a callback
    publishes (replica id, tenant, task id) and the others wake their own loops. Redis down only
    means the others find the end by polling; the outage is logged once.
    """

    def __init__(self, waits: TaskWaits, client: aioredis.Redis | None = None, channel: str = "") -> None:
        self._waits = waits
        self._client = client
        self._channel = channel
        self._replica = secrets.token_hex(8)  # its own messages come back to it: they are skipped
        self._listener: asyncio.Task[None] | None = None
        self._broken = False
        self.subscribed = asyncio.Event()  # set while the subscription is in place (tests wait for it)

    @classmethod
    def from_url(cls, waits: TaskWaits, url: str, channel: str) -> Wakeups:
        # No socket timeout: the subscription reads for as long as the gateway runs.
        return cls(waits, aioredis.Redis.from_url(url, socket_connect_timeout=1.0), channel)

    async def start(self) -> None:
        if self._client is not None:
            self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._client is not None:
            await self._client.aclose()

    async def wake(self, tenant: str, upstream_id: str) -> int:
        """Wake the task's loops everywhere; the number woken on this replica."""
        woken = self._waits.wake(tenant, upstream_id)
        if self._client is not None:
            message = json.dumps([self._replica, tenant, upstream_id])
            try:
                async with asyncio.timeout(1.0):
                    await self._client.publish(self._channel, message)
            except (RedisError, OSError, TimeoutError) as exc:
                self._outage(exc)
        return woken

    def _outage(self, exc: BaseException) -> None:
        if not self._broken:
            self._broken = True
            why = type(exc).__name__
            log.warning("task wake-ups: Redis unavailable (%s); other replicas find ended tasks by polling", why)

    def _received(self, data: bytes) -> None:
        try:
            replica, tenant, upstream_id = json.loads(data)
        except (ValueError, TypeError):
            return  # not ours: the channel is shared with nothing else, but a stray publish must not stop us
        if replica != self._replica and isinstance(tenant, str) and isinstance(upstream_id, str):
            self._waits.wake(tenant, upstream_id)

    async def _listen(self) -> None:
        assert self._client is not None
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self.subscribed.set()
                if self._broken:
                    self._broken = False
                    log.info("task wake-ups: Redis answers again")
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._received(message["data"])
            except (RedisError, OSError) as exc:
                self._outage(exc)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(1.0)  # then subscribe again


Fence = Callable[[Tenant | None, str], Awaitable[None]]  # Gate.check_callback: a GatewayError for a refused URL


class CallbackReceiver:
    """The HTTP listener Launch's callbacks reach (`callbacks.receiver_host`/`receiver_port`)."""

    def __init__(
        self,
        settings: CallbackSettings,
        handles: Callable[[], TaskHandles | None],
        tenants: Callable[[str], Tenant | None],
        fence: Fence,
        wakeups: Wakeups,
        clock: Clock,
        max_body_bytes: int,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._handles = handles  # the current edge's: a reload's secrets take effect at once
        self._tenants = tenants
        self._fence = fence
        self._wakeups = wakeups
        self._clock = clock
        self._max_body = max_body_bytes
        self._on_result = on_result or (lambda _: None)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    def url_for(self, grant: CallbackGrant) -> str:
        """The callback URL to give Launch for one submission."""
        handles = self._handles()
        assert handles is not None, "load_edge refuses a public_url without task-handle secrets"
        return self._settings.public_url.rstrip("/") + ROUTE + seal_grant(handles, grant)

    def grant(self, tenant: str, endpoint: str, forward_to: str) -> CallbackGrant:
        return CallbackGrant(tenant, endpoint, forward_to, self._clock.wall() + self._settings.url_ttl)

    async def start(self, reuse_port: bool = False) -> None:
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post(ROUTE + "{token}", self._callback)
        host, port = self._settings.receiver_host, self._settings.receiver_port
        self._runner = await listen(app, host, port, "callbacks.receiver_port", reuse_port)
        self.port = self._runner.addresses[0][1]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._settings.forward_timeout))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _answer(self, result: str, status: int, text: str) -> web.Response:
        self._on_result(result)
        return web.Response(status=status, text=text + "\n")

    async def _callback(self, request: web.Request) -> web.Response:
        handles = self._handles()
        grant = open_grant(handles, request.match_info["token"], self._clock.wall()) if handles else None
        if grant is None:
            return self._answer("refused", 404, "not a callback URL of this gateway, or it has expired")
        try:
            body = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return self._answer("refused", 413, "callback body too large")
        except (ValueError, RecursionError):
            return self._answer("refused", 400, "the body is not JSON")
        task_id = body.get("task_id") if isinstance(body, dict) else None
        if not isinstance(task_id, str) or not is_upstream_task_id(task_id):
            return self._answer("refused", 400, "the body has no task_id")
        await self._wakeups.wake(grant.tenant, task_id)
        if not grant.forward_to:
            return self._answer("woke", 200, "ok")
        # The caller knows its task by the task_id SubmitAsync gave it: the handle, not Launch's id.
        assert handles is not None
        body["task_id"] = handles.issue(TaskRef(grant.tenant, grant.endpoint, task_id))
        return await self._forward(grant, json.dumps(body).encode(), request.headers.get("Authorization"))

    async def _forward(self, grant: CallbackGrant, body: bytes, authorization: str | None) -> web.Response:
        """Pass the callback on to the caller's own URL, as Launch would have sent it (with the caller's task_id)."""
        assert self._session is not None
        where = _shown(grant.forward_to)
        tenant = self._tenants(grant.tenant)
        if grant.tenant and tenant is None:
            log.warning("callback for a task of tenant %r not forwarded to %s: the tenant is gone", grant.tenant, where)
            return self._answer("forward_refused", 502, "the task's tenant is no longer configured")
        try:
            await self._fence(tenant, grant.forward_to)
        except GatewayError as exc:
            log.warning("callback not forwarded to %s: its tenant's callback policy refuses it (%s)", where, exc.reason)
            return self._answer("forward_refused", 502, "the caller's callback URL is refused by its tenant's policy")
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        try:
            # Not redirected: a redirect could point past the fence. Only the status is read, not the body.
            async with self._session.post(
                grant.forward_to, data=body, headers=headers, allow_redirects=False
            ) as answer:
                status = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("callback not forwarded to %s: %s", where, type(exc).__name__)
            return self._answer("forward_failed", 502, "the caller's callback URL did not answer")
        if 200 <= status < 300:
            return self._answer("forwarded", 200, "ok")
        log.warning("callback forwarded to %s answered HTTP %d", where, status)
        return self._answer("forward_failed", 502, f"the caller's callback URL answered HTTP {status}")


def _shown(url: str) -> str:
    """A callback URL as logs may show it: scheme, host and port only (its path or query may hold a secret),
    by the one reading of callback URLs (it was read so at SubmitAsync)."""
    try:
        target = parse_callback_url(url)
    except GatewayError:
        return "the caller's callback URL"
    return f"{target.scheme}://{target.host}:{target.port}"
