"""A circuit breaker for the upstream: stop calling a Launch API that keeps failing, then probe it.

Closed: calls go through; `failures` consecutive upstream failures (`retries.is_upstream_failure`:
connection errors, HTTP 502/503/504 and no answer in time) open it. Open: calls fail fast with
UNAVAILABLE for `cooldown` seconds, so a dead upstream costs callers nothing and gets a rest.
Half-open: one probe call goes through; its success closes the circuit, its failure opens it for
another cooldown. Readiness reports the open state.
Pure: the clock is injected.
"""

from __future__ import annotations

import enum
import logging

from launch_gateway.server.clock import Clock
from launch_gateway.server.errors import UpstreamUnavailable

log = logging.getLogger("launch_gateway")


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure breaker with one probe call after each cooldown."""

    def __init__(self, clock: Clock, failures: int, cooldown: float) -> None:
        self._clock = clock
        self._threshold = failures
        self._cooldown = cooldown
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = State.CLOSED

    @property
    def enabled(self) -> bool:
        return self._threshold > 0

    def before_call(self) -> None:
        """Raise UNAVAILABLE if the circuit is open; let one probe through once the cooldown is over."""
        if self.state is State.CLOSED or not self.enabled:
            return
        left = self._opened_at + self._cooldown - self._clock.now()
        if self.state is State.OPEN and left <= 0:
            self.state = State.HALF_OPEN
            self._probing = False
        if self.state is State.HALF_OPEN and not self._probing:
            self._probing = True
            return
        raise UpstreamUnavailable(
            f"upstream circuit open after {self._threshold} consecutive failures; retry in {max(left, 0):.1f} s",
            retry_after=max(left, 0.0),
            reason="CIRCUIT_OPEN",
        )

    def succeeded(self) -> None:
        if self.state is not State.CLOSED:
            log.info("upstream circuit closed: the probe call succeeded")
        self.state = State.CLOSED
        self._failures = 0
        self._probing = False

    def failed(self) -> None:
        self._failures += 1
        if self.state is State.HALF_OPEN or (self.enabled and self._failures >= self._threshold):
            if self.state is State.CLOSED:
                log.warning("upstream circuit open after %d consecutive failures", self._failures)
            self.state = State.OPEN
            self._opened_at = self._clock.now()
            self._probing = False

    def abandoned(self) -> None:
        """A call ended without a verdict (cancelled): a waiting probe may go again."""
        self._probing = False

    def not_ready_reason(self) -> str | None:
        """For readiness: why the upstream should not get traffic through this replica."""
        return "upstream: circuit open" if self.state is State.OPEN else None
