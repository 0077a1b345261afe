"""Endpoint name -> record resolution, cached with a TTL.

The Launch client looks an endpoint up before every call; the gateway keeps each answer for
`ttl` seconds, so a call costs one upstream request, not two. Concurrent misses for one name share
one lookup. Entries are per credential scope, because Launch scopes names to the caller's team, and
an entry is dropped when a task route answers 404 (the endpoint was deleted or re-created). At most
`MAX_ENTRIES` are kept (names are at most `translate.MAX_ENDPOINT_NAME_LENGTH` characters): a full
cache drops what has expired, then the oldest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import NotFound
from launch_gateway.server.upstream.launch_api import LaunchAPI, UpstreamCall
from launch_gateway.server.upstream.translate import endpoint_from_record
from launch_gateway.v1 import endpoint_service_pb2 as pb

CacheKey = tuple[str, str]  # (credential scope, endpoint name)
MAX_ENTRIES = 4096


@dataclass
class _Lookup:
    future: asyncio.Future[pb.Endpoint]
    waiters: int = 0


@dataclass(frozen=True)
class Hooks:
    """What an endpoint's record says of Launch's callbacks (`post_inference_hooks`, `default_callback_url`)."""

    callback: bool = False  # Launch POSTs each finished task's result to a callback URL
    default_callback: bool = False  # the endpoint has a callback URL of its own for requests that name none


@dataclass(frozen=True)
class _Entry:
    endpoint: pb.Endpoint
    expires: float
    hooks: Hooks


class EndpointDirectory:
    """Resolves endpoint names, with a TTL cache and one lookup in flight per name."""

    def __init__(
        self,
        api: LaunchAPI,
        clock: Clock,
        ttl: float,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        self._api = api
        self._clock = clock
        self._ttl = ttl
        self._entries: dict[CacheKey, _Entry] = {}
        self._inflight: dict[CacheKey, _Lookup] = {}
        self._on_lookup = on_lookup  # called with True on a cache hit, False on a miss

    async def resolve(self, name: str, call: UpstreamCall, scope: str = "") -> pb.Endpoint:
        """The endpoint called `name`; NotFound when the upstream knows none."""
        key = (scope, name)
        entry = self._entries.get(key)
        if entry is not None and entry.expires > self._clock.now():
            if self._on_lookup:
                self._on_lookup(True)
            return entry.endpoint
        if self._on_lookup:
            self._on_lookup(False)
        lookup = self._inflight.get(key)
        if lookup is None:
            lookup = _Lookup(asyncio.ensure_future(self._lookup(key, call)))
            self._inflight[key] = lookup
            lookup.future.add_done_callback(lambda _: self._inflight.pop(key, None))
        lookup.waiters += 1
        try:
            # Shielded: one caller giving up must not cancel the lookup the others wait on...
            return await asyncio.shield(lookup.future)
        finally:
            lookup.waiters -= 1
            if lookup.waiters == 0 and not lookup.future.done():
                lookup.future.cancel()  # ...but when every caller has gone, the upstream request goes too

    async def _lookup(self, key: CacheKey, call: UpstreamCall) -> pb.Endpoint:
        record = await self._api.find_endpoint(key[1], call)
        if record is None:
            self._entries.pop(key, None)
            raise NotFound(f"endpoint {key[1]!r} not found", reason="ENDPOINT_NOT_FOUND")
        endpoint = endpoint_from_record(record)
        hooks = record.get("post_inference_hooks")
        callback = isinstance(hooks, list) and any(isinstance(h, str) and h.lower() == "callback" for h in hooks)
        found = Hooks(callback, bool(record.get("default_callback_url")))
        now = self._clock.now()
        if len(self._entries) >= MAX_ENTRIES and key not in self._entries:
            self._entries = {k: e for k, e in self._entries.items() if e.expires > now}
            if len(self._entries) >= MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = _Entry(endpoint, now + self._ttl, found)
        return endpoint

    def hooks(self, name: str, scope: str = "") -> Hooks:
        """The callback hooks of an endpoint `resolve` has just given (none for one not in the cache)."""
        entry = self._entries.get((scope, name))
        return entry.hooks if entry is not None else Hooks()

    def forget(self, name: str, scope: str = "") -> None:
        """Drop a cached entry, so the next call looks the name up again."""
        self._entries.pop((scope, name), None)
