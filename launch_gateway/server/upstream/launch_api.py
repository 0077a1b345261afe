"""The Launch HTTP API client: one keep-alive connection pool per upstream (`http1`), one method per route.

Methods take bodies already encoded (`translate`) and return parsed JSON; every failure leaves as
a `GatewayError`. The transport's failures are mapped to ours in exactly one place
(`_transport_errors`), and non-2xx answers through the one HTTP table in `http_errors`.

Every request's attempts go through the one retry loop (`launch_gateway.server.upstream.retries`:
what is retried where safe, and what the circuit breaker counts). The breaker sees every attempt's
outcome, but not a full share of the pool (`launch_gateway.server.upstream.shares`): streams, unary
calls, lookups and the readiness probe each have their own, so none of them can starve the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import (
    ConnectFailed,
    EventTooLarge,
    GatewayError,
    PoolFull,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from launch_gateway.server.settings import UpstreamSettings
from launch_gateway.server.upstream import http1
from launch_gateway.server.upstream.breaker import CircuitBreaker
from launch_gateway.server.upstream.http_errors import error_from_http, parse_retry_after
from launch_gateway.server.upstream.retries import Attempts, RetryPolicy
from launch_gateway.server.upstream.shares import ConnectionShare
from launch_gateway.server.upstream.sse import SSEParser

if TYPE_CHECKING:  # imported only when tracing is on (it needs the tracing extra)
    from launch_gateway.server.observability.tracing import ClientSpan, Tracing

PROBE_NAME = "launch-gateway-readiness-probe"  # the endpoint name readiness probes look up
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_SSE_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


@dataclass(frozen=True)
class UpstreamCall:
    """What one RPC's upstream requests carry: credential, tracing headers and time budget."""

    authorization: str | None  # the full Authorization header, or None to send none
    timeout: float  # seconds for the whole request (for streams: the idle time between events)
    headers: Mapping[str, str] = field(default_factory=dict)
    # False when the caller's deadline cut `timeout` short of the gateway's own: running out of it then
    # says the caller was in a hurry, not that the upstream is down, so the breaker does not count it.
    own_timeout: bool = True

    def request_headers(self, base: Mapping[str, str]) -> dict[str, str]:
        headers = {**base, **self.headers}
        if self.authorization:
            headers["Authorization"] = self.authorization
        return headers


@contextlib.contextmanager
def _transport_errors(method: str, route: str, timeout: float, max_body: int) -> Iterator[None]:
    """Map the transport's and asyncio's failures for one request to GatewayErrors."""
    where = f"upstream {method} {route}"
    try:
        yield
    except GatewayError:
        raise
    except http1.ConnectTimeout as exc:
        raise ConnectFailed(
            f"{where}: no connection within the connect timeout (the upstream does not accept connections)"
        ) from exc
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{where}: no answer within {timeout:.3g} s") from exc
    except http1.ConnectFailed as exc:
        raise ConnectFailed(f"{where}: cannot connect ({exc})") from exc
    except http1.Truncated as exc:
        raise UpstreamUnavailable(f"{where}: the response was cut off") from exc
    except http1.Disconnected as exc:
        raise UpstreamUnavailable(f"{where}: the server closed the connection") from exc
    except http1.BadResponse as exc:
        raise UpstreamUnavailable(f"{where}: {exc}") from exc
    except http1.BodyTooLarge as exc:
        raise UpstreamTooLarge(f"{where} answered more than upstream.max_body_bytes ({max_body} bytes)") from exc
    except OSError as exc:
        raise UpstreamUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc


@dataclass
class _Outcome:
    """One request's answer status, and its client span when tracing is on."""

    status: int | None = None
    span: ClientSpan | None = None

    def headers(self, call: UpstreamCall, base: Mapping[str, str]) -> dict[str, str]:
        """The request's headers: the call's, with the span's `traceparent` in place of the caller's."""
        headers = call.request_headers(base)
        if self.span is not None:
            self.span.inject(headers)
        return headers


Observer = Callable[[str, str, float], None]  # (route template, HTTP status or "error", seconds)

_URL_ENTRIES = 1024  # the URL cache: at most this many entries...
_URL_KEY_CHARS = 512  # ...of at most this many characters of route and query each


def raise_for_status(method: str, route: str, response: http1.Response, body: bytes) -> None:
    """Raise the error for a non-2xx answer, through the one HTTP table; nothing for a 2xx."""
    if response.status >= 300:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise error_from_http(method, route, response.status, body, retry_after)


class LaunchAPI:
    """The routes of the Launch API the gateway uses (launch-http-api.md §1), as `upstream.*` sets them."""

    def __init__(
        self,
        settings: UpstreamSettings,
        clock: Clock,
        *,
        observe: Observer | None = None,
        rng: random.Random | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._observe = observe
        self._tracing = tracing
        self._clock = clock
        self.breaker = CircuitBreaker(clock, settings.breaker_failures, settings.breaker_cooldown)
        self._attempts = Attempts(RetryPolicy.from_settings(settings), self.breaker, clock, rng or random.Random())
        self._max_body = settings.max_body_bytes
        self._base = settings.url.rstrip("/")
        self._calls = ConnectionShare("upstream.max_connections", settings.max_connections, "other calls")
        streams = settings.max_stream_connections
        self._streams = ConnectionShare("upstream.max_stream_connections", streams, "open streams")
        lookups = settings.max_lookup_connections
        self._lookups = ConnectionShare("upstream.max_lookup_connections", lookups, "other lookups")
        self._probes = ConnectionShare("readiness probe connections", 1, "another probe")
        self._connect_timeout = settings.connect_timeout
        self._ca_file = settings.ca_file
        self._http: http1.Upstream | None = None
        self._targets: dict[tuple[str, ...], str] = {}

    async def start(self) -> None:
        # Concurrency is bounded by the shares; the pool keeps the idle connections for reuse.
        context = ssl.create_default_context(cafile=self._ca_file or None) if self._base.startswith("https") else None
        self._http = http1.Upstream(self._base, ssl_context=context, connect_timeout=self._connect_timeout)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def http(self) -> http1.Upstream:
        if self._http is None:
            raise RuntimeError("LaunchAPI.start() was not called")
        return self._http

    @property
    def shares(self) -> tuple[ConnectionShare, ...]:
        """The pool's shares: unary calls, streams, lookups, the readiness probe."""
        return (self._calls, self._streams, self._lookups, self._probes)

    def _target(self, route: str, params: Mapping[str, str], cached: bool = True) -> str:
        """The request target (path and query), built once per route and query: encoding it per call is waste.

        Bounded in bytes, not only in entries: a key longer than `_URL_KEY_CHARS` is built and not kept,
        and a target used once (a task's poll: `cached=False`) is never kept.
        """
        key = (route, *(f"{k}={v}" for k, v in params.items()))
        target = self._targets.get(key)
        if target is None:
            target = f"{route}?{urlencode(params, quote_via=quote)}" if params else route
            if cached and sum(map(len, key)) <= _URL_KEY_CHARS:
                if len(self._targets) >= _URL_ENTRIES:
                    self._targets.clear()
                self._targets[key] = target
        return target

    @contextlib.contextmanager
    def _exchange(self, method: str, route: str, template: str, timeout: float, attempt: int) -> Iterator[_Outcome]:
        """One request (`attempt` 0: the first): errors mapped, its status and latency reported to the
        observer, and with tracing on a client span of its own."""
        outcome = _Outcome()
        if self._tracing is not None:
            outcome.span = self._tracing.client_span(method, template, attempt)
        started = self._clock.now()
        failure: BaseException | None = None
        try:
            with _transport_errors(method, route, timeout, self._max_body):
                yield outcome
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if outcome.span is not None:
                outcome.span.end(outcome.status, failure)
            if self._observe is not None:
                status = str(outcome.status) if outcome.status is not None else "error"
                self._observe(template, status, self._clock.now() - started)

    async def _json(
        self,
        method: str,
        route: str,
        call: UpstreamCall,
        *,
        params: Mapping[str, str],
        body: bytes | None = None,
        template: str | None = None,
        idempotent: bool = False,
        share: ConnectionShare | None = None,
    ) -> Any:
        """One JSON request on a connection of `share` (unary calls' by default), retried as
        `retries.may_retry` allows within `call.timeout` in all."""
        where = f"upstream {method} {route}"

        async def send(budget: float, attempt: int) -> Any:
            if budget <= 0:
                raise UpstreamTimeout(f"{where}: no time left for another attempt")
            asked = self._clock.now()
            async with (share or self._calls).slot(min(self._connect_timeout, budget), where):
                budget -= self._clock.now() - asked
                with self._exchange(method, route, template or route, budget, attempt) as outcome:
                    target = self._target(route, params, cached=template is None)  # a templated route is one task's
                    headers = outcome.headers(call, _JSON_HEADERS)
                    async with asyncio.timeout(budget):
                        response, raw = await self.http.request(method, target, headers, body, self._max_body)
                    outcome.status = response.status
                    raise_for_status(method, route, response, raw)
                    content_type = response.content_type
            try:
                return json.loads(raw)
            except ValueError as exc:
                raise UpstreamProtocolError(f"{where} answered invalid JSON ({content_type}): {exc}") from exc

        return await self._attempts.run(call.timeout, idempotent, send, count_timeouts=call.own_timeout)

    async def probe(self, within: float, authorization: str | None = None) -> bool:
        """Whether the upstream answers HTTP at all (below 500): readiness, not correctness."""
        target = self._target("/v1/model-endpoints", {"name": PROBE_NAME})
        headers = {"Authorization": authorization} if authorization else {}
        try:
            async with self._probes.slot(within, "the readiness probe"), asyncio.timeout(within):
                response, _ = await self.http.request("GET", target, headers, None, self._max_body)
        except (http1.HTTPFailure, OSError, TimeoutError, PoolFull):
            return False
        return response.status < 500

    async def find_endpoint(self, name: str, call: UpstreamCall) -> Mapping[str, Any] | None:
        """The record of the endpoint called `name`, or None (Launch answers an empty list)."""
        payload = await self._json(
            "GET", "/v1/model-endpoints", call, params={"name": name}, idempotent=True, share=self._lookups
        )
        endpoints = payload.get("model_endpoints") if isinstance(payload, dict) else None
        if not isinstance(endpoints, list):
            raise UpstreamProtocolError("upstream GET /v1/model-endpoints answered without a model_endpoints list")
        for record in endpoints:
            # Launch matches the exact name; a proxy in between might not.
            if isinstance(record, dict) and record.get("name") == name:
                return record
        return None

    async def list_endpoints(self, call: UpstreamCall) -> list[Mapping[str, Any]]:
        """Every endpoint record the caller's key sees (`GET /v1/model-endpoints` without a name)."""
        payload = await self._json("GET", "/v1/model-endpoints", call, params={}, idempotent=True, share=self._lookups)
        endpoints = payload.get("model_endpoints") if isinstance(payload, dict) else None
        if not isinstance(endpoints, list) or not all(isinstance(record, dict) for record in endpoints):
            raise UpstreamProtocolError("upstream GET /v1/model-endpoints answered without a model_endpoints list")
        return endpoints

    async def sync_predict(self, endpoint_id: str, body: bytes, call: UpstreamCall) -> Any:
        """`POST /v1/sync-tasks`: the task's response body."""
        return await self._json("POST", "/v1/sync-tasks", call, params={"model_endpoint_id": endpoint_id}, body=body)

    async def submit_async(self, endpoint_id: str, body: bytes, call: UpstreamCall) -> str:
        """`POST /v1/async-tasks`: the new task's id."""
        payload = await self._json(
            "POST", "/v1/async-tasks", call, params={"model_endpoint_id": endpoint_id}, body=body
        )
        task_id = payload.get("task_id") if isinstance(payload, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise UpstreamProtocolError("upstream POST /v1/async-tasks answered without a task_id")
        return task_id

    async def get_task(self, task_id: str, call: UpstreamCall) -> Any:
        """`GET /v1/async-tasks/{task_id}`: the task's state."""
        # Quoted so that any id stays one path segment.
        route = f"/v1/async-tasks/{quote(task_id, safe='')}"
        template = "/v1/async-tasks/{task_id}"
        return await self._json("GET", route, call, params={}, template=template, idempotent=True)

    async def stream(self, endpoint_id: str, body: bytes, call: UpstreamCall) -> AsyncGenerator[list[bytes], None]:
        """`POST /v1/streaming-tasks`: the `data` of the events each read completed, the moment it arrives
        (one list per read that completed any: a fast model's events come many to a read, and handing them
        on one by one would cost a generator step and a queue hop each).

        `call.timeout` is the longest quiet time allowed between two reads, not a total (opening the
        stream, retries included, is one such wait). A stream that ends inside an event was cut off
        and raises UNAVAILABLE after the complete events. The stream holds a connection of its own
        share from start to end.
        """
        route = "/v1/streaming-tasks"

        async def send(_budget: float, attempt: int) -> http1.StreamedResponse:
            return await self._open_stream(route, endpoint_id, body, call, attempt)

        # The share is held for the stream's life: it is what bounds open streams, and a full one is no failure.
        async with self._streams.slot(self._connect_timeout, f"upstream POST {route}"):
            response = await self._attempts.run(call.timeout, False, send, count_timeouts=call.own_timeout)
            try:
                with _transport_errors("POST", route, call.timeout, self._max_body):
                    if response.content_type != "text/event-stream":
                        raise UpstreamProtocolError(
                            f"upstream POST {route} answered {response.content_type or 'no content type'}, "
                            "not text/event-stream"
                        )
                    parser = SSEParser()
                    try:
                        # The complete events that came before a cut are read first, then the cut is raised.
                        while chunk := await response.chunk(call.timeout):
                            if events := parser.feed(chunk):
                                yield events
                    except http1.Truncated as exc:
                        where = "mid-event" if parser.pending else "between events"
                        raise UpstreamUnavailable(
                            f"upstream POST {route}: upstream stream truncated {where}",
                            reason="UPSTREAM_STREAM_TRUNCATED",
                        ) from exc
                    except EventTooLarge as exc:
                        raise EventTooLarge(f"upstream POST {route}: {exc.message}") from exc
                    except TimeoutError as exc:
                        raise UpstreamTimeout(f"upstream POST {route}: no event for {call.timeout:.3g} s") from exc
                    if parser.pending:
                        raise UpstreamUnavailable(
                            f"upstream POST {route}: upstream stream truncated mid-event",
                            reason="UPSTREAM_STREAM_TRUNCATED",
                        )
            finally:
                response.release()  # a stream left before its end closes its connection: the model stops

    async def _open_stream(
        self, route: str, endpoint_id: str, body: bytes, call: UpstreamCall, attempt: int
    ) -> http1.StreamedResponse:
        """POST the stream request and wait for its headers; non-2xx answers become errors here."""
        with self._exchange("POST", route, route, call.timeout, attempt) as outcome:
            target = self._target(route, {"model_endpoint_id": endpoint_id})
            async with asyncio.timeout(call.timeout):
                response = await self.http.open("POST", target, outcome.headers(call, _SSE_HEADERS), body)
            outcome.status = response.status
            if response.status >= 300:
                try:
                    async with asyncio.timeout(call.timeout):
                        raw = await response.read(self._max_body)
                finally:
                    response.release()
                raise_for_status("POST", route, response, raw)
            return response
