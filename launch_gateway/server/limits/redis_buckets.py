"""The Redis backend of `RateLimiter`: one token bucket per key, shared by every gateway replica.

Each check is one atomic Lua script (EVALSHA) that refills and spends the bucket stored in the
hash `{prefix}{key}` (fields `tokens`, `updated`), with a TTL so idle keys expire (a missing
bucket is a full one). The script is `launch_gateway.server.limits.buckets.take` written in Lua: same order of
float operations, same EPSILON; keep the two in sync (tests/test_redis_ratelimit.py checks
that they agree). The time is the caller's, passed as ARGV from the injected clock's wall time
(replicas share the bucket, so it must be a time they share), so tests drive it without sleeping.

When Redis fails (refused, timed out, any RedisError) the policy answers instead: allowed when
`fail_open` (Envoy's default, `failure_mode_deny=false`), else refused with `closed_retry_after`.
Each such decision is counted in `outage_decisions` by result; the outage is logged once at
WARNING when it starts and once at INFO when Redis answers again. While down, Redis is tried
again at most every `probe_interval` seconds, so an outage does not add a timeout to every call.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from launch_gateway.server.clock import Clock
from launch_gateway.server.limits.buckets import EPSILON, Decision, Rate, check_cost, decision_from
from launch_gateway.server.settings import LimitsSettings

log = logging.getLogger(__name__)

# ARGV: now, per_second, burst, cost, ttl_ms. Returns {allowed 0|1, tokens, updated}, floats as
# %.17g strings because Lua numbers returned to Redis are truncated to integers.
TAKE_SCRIPT = f"""
local now = tonumber(ARGV[1])
local per_second = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
local elapsed = now - updated
if elapsed > 0 then
  tokens = tokens + elapsed * per_second
  updated = now
end
tokens = math.min(burst, tokens)
local allowed = 0
if tokens + {EPSILON!r} >= cost then
  allowed = 1
  tokens = math.max(0, tokens - cost)
end
local t = string.format('%.17g', tokens)
local u = string.format('%.17g', updated)
redis.call('HSET', KEYS[1], 'tokens', t, 'updated', u)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {{allowed, t, u}}
"""


class RedisRateLimiter:
    """`RateLimiter` on Redis, atomic per key, with a fail-open or fail-closed outage policy.

    The key prefix and the policy are `limits.redis_prefix` and `limits.fail_open`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        settings: LimitsSettings,
        clock: Clock,
        *,
        closed_retry_after: float = 1.0,
        probe_interval: float = 1.0,
    ) -> None:
        self._client = client
        self._script = client.register_script(TAKE_SCRIPT)
        self._owns_client = False
        self.prefix = settings.redis_prefix
        self.fail_open = settings.fail_open
        self.closed_retry_after = closed_retry_after
        self.probe_interval = probe_interval
        self._clock = clock
        self.outage_decisions: Counter[str] = Counter()  # "allowed" / "refused" while Redis was down
        self._down_since: float | None = None
        self._last_try = 0.0
        self._outage_count = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        settings: LimitsSettings,
        clock: Clock,
        *,
        timeout: float = 0.25,
        closed_retry_after: float = 1.0,
        probe_interval: float = 1.0,
    ) -> RedisRateLimiter:
        """A limiter on its own client for `url` (redis://, rediss://, unix:///path), closed by `close`.

        `timeout` bounds both connecting and each reply; one immediate retry replaces a pooled
        connection that died with a restarted server.
        """
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), retries=1),
        )
        limiter = cls(client, settings, clock, closed_retry_after=closed_retry_after, probe_interval=probe_interval)
        limiter._owns_client = True
        return limiter

    @property
    def target(self) -> str:
        """Where Redis is, for logs: never the password."""
        kwargs: dict[str, Any] = self._client.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix://{kwargs['path']}"
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    @property
    def healthy(self) -> bool:
        """False while an outage is going on (the last call to Redis failed)."""
        return self._down_since is None

    def __repr__(self) -> str:
        return f"RedisRateLimiter({self.target!r}, prefix={self.prefix!r}, fail_open={self.fail_open})"

    async def check(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """Spend `cost` tokens from the shared bucket for `key`, or refuse; the policy if Redis fails."""
        check_cost(rate, cost)
        now = self._clock.wall()
        if self._down_since is not None and 0 <= now - self._last_try < self.probe_interval:
            return self._policy_decision(rate)
        self._last_try = now
        ttl_ms = math.ceil(rate.burst / rate.per_second * 1000) + 1000  # empty to full, plus slack
        try:
            reply = await self._script(
                keys=[self.prefix + key], args=[repr(float(now)), repr(rate.per_second), rate.burst, cost, ttl_ms]
            )
        except (RedisError, OSError) as exc:
            self._outage_started(now, exc)
            return self._policy_decision(rate)
        self._outage_ended(now)
        allowed, tokens = int(reply[0]) == 1, float(reply[1])
        return decision_from(allowed, tokens, rate, cost)

    async def close(self) -> None:
        """Close the client if this limiter made it (`from_url`); a passed-in client is the caller's."""
        if self._owns_client:
            await self._client.aclose()

    def _policy_decision(self, rate: Rate) -> Decision:
        """What the outage policy answers: a full bucket (open), or a refusal for a while (closed)."""
        result = "allowed" if self.fail_open else "refused"
        self.outage_decisions[result] += 1
        self._outage_count += 1
        if self.fail_open:
            return Decision(True, rate.burst, rate.burst, 0.0, 0.0, degraded=True)
        return Decision(False, rate.burst, 0, self.closed_retry_after, self.closed_retry_after, degraded=True)

    def _outage_started(self, now: float, exc: BaseException) -> None:
        if self._down_since is not None:
            return
        self._down_since = now
        self._outage_count = 0
        log.warning(
            "rate-limit Redis at %s failed (%s: %s); failing %s until it answers",
            self.target,
            type(exc).__name__,
            exc,
            "open (requests allowed)" if self.fail_open else "closed (requests refused)",
        )

    def _outage_ended(self, now: float) -> None:
        if self._down_since is None:
            return
        log.info(
            "rate-limit Redis at %s answers again after %.1f s; %d decisions were made by policy",
            self.target,
            max(0.0, now - self._down_since),
            self._outage_count,
        )
        self._down_since = None
