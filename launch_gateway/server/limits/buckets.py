"""Rate limiting: token-bucket arithmetic, the `RateLimiter` seam, and the in-memory backend.

The model is envoyproxy/ratelimit's: callers ask a `RateLimiter` whether `key` may spend `cost`
tokens under a `Rate`, and get a `Decision` carrying what the RateLimit-* headers and a
RESOURCE_EXHAUSTED RetryInfo need. Backends sit behind the seam: `MemoryRateLimiter` here (one
process), `launch_gateway.server.limits.redis_buckets.RedisRateLimiter` (shared by every replica).

A bucket holds up to `burst` tokens and refills at `per_second`; a request spends `cost` tokens
or is refused and spends none. State is `(tokens, updated)`; a fresh bucket is
`(rate.burst, now)`, i.e. full. Both backends run the same arithmetic, `take` here and a Lua
copy of it in the Redis script; keep the two in sync (a test checks that they agree).

This module is pure: no grpc, aiohttp or redis. Time comes in through an injected clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from launch_gateway.server.clock import Clock

# Slack for float error when comparing token counts (0.1 * 3 is 0.30000000000000004). The Lua
# script in launch_gateway/server/limits/redis_buckets.py uses the same value.
EPSILON = 1e-9


@dataclass(frozen=True)
class Rate:
    """`per_second` tokens added per second, up to `burst` tokens held."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)):
            raise ValueError(f"per_second: must be a finite number > 0, got {self.per_second!r}")
        if self.burst < 1:
            raise ValueError(f"burst: must be >= 1, got {self.burst!r}")


@dataclass(frozen=True)
class Decision:
    """One answer: allowed or not, and the numbers behind the RateLimit-* headers.

    `limit` is the burst; `remaining` the whole tokens left after this call; `reset_after` the
    seconds until the bucket is full again; `retry_after` the seconds until this request would
    be allowed (0 when it was).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    degraded: bool = False  # decided by an outage policy (the backend was down), not by the bucket


def check_cost(rate: Rate, cost: int) -> None:
    """Refuse a cost no bucket could ever pay (a configuration bug, not throttling)."""
    if not 1 <= cost <= rate.burst:
        raise ValueError(f"cost: must be between 1 and burst ({rate.burst}), got {cost!r}")


def decision_from(allowed: bool, tokens: float, rate: Rate, cost: int) -> Decision:
    """The decision for a bucket left holding `tokens` after a call that was `allowed` or not."""
    return Decision(
        allowed=allowed,
        limit=rate.burst,
        remaining=max(0, math.floor(tokens + EPSILON)),
        reset_after=max(0.0, (rate.burst - tokens) / rate.per_second),
        retry_after=0.0 if allowed else (cost - tokens) / rate.per_second,
    )


def take(tokens: float, updated: float, rate: Rate, now: float, cost: int = 1) -> tuple[float, float, Decision]:
    """Refill the bucket up to `now`, then try to spend `cost`: (tokens, updated, decision).

    Time going backwards (another replica's clock, a wall-clock step) refills nothing and keeps
    the later `updated`, so no tokens are minted twice when the clock catches up.
    """
    check_cost(rate, cost)
    elapsed = now - updated
    if elapsed > 0:
        tokens = tokens + elapsed * rate.per_second
        updated = now
    tokens = min(float(rate.burst), tokens)
    allowed = tokens + EPSILON >= cost
    if allowed:
        tokens = max(0.0, tokens - cost)
    return tokens, updated, decision_from(allowed, tokens, rate, cost)


class RateLimiter(Protocol):
    """The seam: may `key` spend `cost` tokens under `rate` now?"""

    async def check(self, key: str, rate: Rate, cost: int = 1) -> Decision: ...

    async def close(self) -> None: ...


@dataclass
class _Bucket:
    tokens: float
    updated: float
    rate: Rate

    def full_at(self, now: float) -> bool:
        refill = max(0.0, now - self.updated) * self.rate.per_second
        return self.tokens + refill + EPSILON >= self.rate.burst


class MemoryRateLimiter:
    """Per-process buckets in a dict, for one replica (Envoy's local rate limit).

    Memory is bounded two ways: every `sweep_interval` seconds (by the injected clock) a sweep
    drops the buckets that have refilled to full, since a missing bucket is a full one; and at
    most `max_keys` buckets are kept, evicting the least recently used, which can only hand that
    key a fresh (full) bucket early.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        max_keys: int = 100_000,
        sweep_interval: float = 60.0,
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys: must be >= 1, got {max_keys!r}")
        self._clock = clock
        self._max_keys = max_keys
        self._sweep_interval = sweep_interval
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._last_sweep = self._clock.now()

    def __len__(self) -> int:
        """How many buckets are held (for tests and metrics)."""
        return len(self._buckets)

    async def check(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """Spend `cost` tokens from `key`'s bucket, or refuse."""
        check_cost(rate, cost)
        now = self._clock.now()
        self._maybe_sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(rate.burst), now, rate)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket.tokens, bucket.updated, decision = take(bucket.tokens, bucket.updated, rate, now, cost)
        bucket.rate = rate
        return decision

    async def close(self) -> None:
        """Forget every bucket."""
        self._buckets.clear()

    def _maybe_sweep(self, now: float) -> None:
        if abs(now - self._last_sweep) < self._sweep_interval:
            return
        self._last_sweep = now
        for key in [k for k, b in self._buckets.items() if b.full_at(now)]:
            del self._buckets[key]
