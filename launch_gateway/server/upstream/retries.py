"""Which upstream failures pass, and the one retry loop every route's attempts go through (pure).

One classification, three readers: the loop retries a request (`may_retry`), the circuit breaker
counts a failure (`is_upstream_failure`), and a wait polls again (`is_transient`). All three start
from the same sets of statuses below, so "the upstream failed for a moment" means one thing.

Retries happen only where repeating is safe: lookups and task polls (GETs) are retried on
connection failures and 502/503/504; the task routes (POSTs) only when the connection could not be
made at all, so nothing was sent and no task can be submitted twice. Backoff is jittered
exponential (Envoy's 25 ms base, 250 ms cap) and every retry fits inside the call's time budget.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import (
    ConnectFailed,
    DeadlineExceeded,
    GatewayError,
    PoolFull,
    Unavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from launch_gateway.server.settings import UpstreamSettings
from launch_gateway.server.upstream.breaker import CircuitBreaker

T = TypeVar("T")

# The upstream (or a proxy in front of it) says it is down or too slow: retried, and counted by the breaker.
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
# What a wait polls again after, besides those: Launch throttling (429) or its own 500, which a later look
# may not see. Neither is retried at once, nor does the breaker count it: the upstream did answer.
TRANSIENT_STATUSES = UNAVAILABLE_STATUSES | {429, 500}


def is_upstream_failure(error: GatewayError) -> bool:
    """What the circuit breaker counts: the upstream unreachable, saying it is unavailable, or giving no
    answer within the request's budget (an upstream that accepts connections and never answers is down
    too, not healthy)."""
    if error.http_status is not None:
        return error.http_status in UNAVAILABLE_STATUSES
    return isinstance(error, UpstreamUnavailable | UpstreamTimeout)


def may_retry(error: GatewayError, idempotent: bool) -> bool:
    """Whether repeating the request is safe and may help. A local timeout is not retried: it spent the budget."""
    if isinstance(error, ConnectFailed):
        return True  # nothing was sent
    if not idempotent or (isinstance(error, UpstreamTimeout) and error.http_status is None):
        return False
    return is_upstream_failure(error)  # a 502/503/504, or the connection broke: a GET can be asked again


def is_transient(error: BaseException) -> bool:
    """Whether a wait polls again after this poll failure, rather than ending with it."""
    if not isinstance(error, GatewayError):
        return False
    if error.http_status is not None:
        return error.http_status in TRANSIENT_STATUSES
    # No answer at all: no connection, a broken one or the breaker open (UNAVAILABLE), or no answer
    # within the poll's timeout (DEADLINE_EXCEEDED). An answer we cannot read is not transient.
    return isinstance(error, Unavailable | DeadlineExceeded)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per request (1: no retries) and the jittered exponential backoff between them."""

    attempts: int
    base: float
    cap: float

    @classmethod
    def from_settings(cls, upstream: UpstreamSettings) -> RetryPolicy:
        return cls(upstream.retry_attempts, upstream.retry_base, upstream.retry_cap)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return rng.uniform(0, min(self.cap, self.base * 2**attempt))


class Attempts:
    """The one retry loop: every route's requests go through `run`, and the breaker sees each attempt."""

    def __init__(self, policy: RetryPolicy, breaker: CircuitBreaker, clock: Clock, rng: random.Random) -> None:
        self.policy = policy
        self.breaker = breaker
        self._clock = clock
        self._rng = rng

    async def run(
        self,
        budget: float,
        idempotent: bool,
        send: Callable[[float, int], Awaitable[T]],
        *,
        count_timeouts: bool = True,
    ) -> T:
        """`send(budget left, attempt)`, repeated as `may_retry` allows within `budget` seconds in all.

        `count_timeouts=False` (the caller's deadline set the budget): running out of time is no verdict
        on the upstream, so the breaker neither counts it as a failure nor as a success.
        """
        deadline = self._clock.now() + budget
        attempt = 0
        while True:
            self.breaker.before_call()
            try:
                result = await send(deadline - self._clock.now(), attempt)
            except PoolFull:
                self.breaker.abandoned()  # our own limit, no verdict on the upstream; waiting again would not help
                raise
            except GatewayError as exc:
                if isinstance(exc, UpstreamTimeout) and exc.http_status is None and not count_timeouts:
                    self.breaker.abandoned()
                elif is_upstream_failure(exc):
                    self.breaker.failed()
                else:
                    self.breaker.succeeded()
                attempt += 1
                pause = self.policy.delay(attempt, self._rng)
                if attempt >= self.policy.attempts or not may_retry(exc, idempotent):
                    raise
                if deadline - self._clock.now() <= pause:
                    raise
                await self._clock.sleep(pause)
                continue
            except BaseException:
                self.breaker.abandoned()
                raise
            self.breaker.succeeded()
            return result
